"""Site-scale configurations: Modbus address checks only apply with Modbus on; bounded errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings

MODBUS_OFF = "[modbus.tcp]\nenabled = false\n[modbus.rtu]\nenabled = false\n"


def sensors(count: int, *, same_serial: bool = False) -> str:
    out = []
    for n in range(1, count + 1):
        serial = 1 if same_serial else n
        out.append(
            f'[[sensors]]\nid = "s{n}"\nname = "Sensor {n}"\nnumber = {n}\n'
            f'model = "vs121-p"\nserial = "{serial:012d}"\n'
        )
    return "\n".join(out)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_thousand_sensors_load_with_modbus_off(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MODBUS_OFF + sensors(1000)))
    assert len(settings.sensors) == 1000
    instances = {p.instance for p in settings.points() if p.sensor_id == "s1000"}
    assert 1000 * 1000 + 1 in instances


def test_modbus_addresses_are_still_checked_with_modbus_on(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, sensors(400)))
    assert "Modbus" in str(err.value)


def test_error_messages_stay_short_with_many_offenders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, MODBUS_OFF + sensors(1000, same_serial=True)))
    msg = str(err.value)
    assert "sensors[1].serial: '000000000001' is already used by sensors[0]" in msg
    assert "and 989 more" in msg  # 999 duplicates, the first 10 named
    assert len(msg) < 4000
