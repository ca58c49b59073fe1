"""A 1,000-sensor configuration loads and its components build, with Modbus on and off (no
network: the servers are built, not started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.bacnet.objects import build_objects
from gateway.errors import ConfigError
from gateway.modbus import ModbusServer
from gateway.settings import Settings, load_settings

COUNT = 1000


def sensors(count: int) -> str:
    return "".join(
        f'[[sensors]]\nid = "s{n}"\nname = "Sensor {n}"\nnumber = {n}\nmodel = "vs121-p"\n'
        f'serial = "{n:012d}"\nregion_count = 4\n'
        for n in range(1, count + 1)
    )


def load(tmp_path: Path, head: str) -> Settings:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n' + head + sensors(COUNT))
    return load_settings(path)


def build(settings: Settings) -> tuple[Gateway, int, ModbusServer | None]:
    gateway = Gateway(settings)
    points = settings.points()
    objects = build_objects(points)
    modbus = None
    if settings.modbus.served:
        modbus = ModbusServer(settings.modbus, points, gateway.state, gateway)
    return gateway, len(objects), modbus


def test_modbus_off(tmp_path: Path) -> None:
    settings = load(tmp_path, "[modbus.tcp]\nenabled = false\n")
    gateway, objects, modbus = build(settings)
    assert modbus is None
    assert len(gateway.state.sensors) == COUNT
    assert objects == len(settings.points()) > 58 * COUNT


def test_modbus_on_with_unit_blocks(tmp_path: Path) -> None:
    settings = load(tmp_path, '[modbus]\naddressing = "unit_blocks"\n')
    gateway, objects, modbus = build(settings)
    assert modbus is not None
    assert modbus.left_out == []  # every sensor has a unit id and an address
    assert objects == len(settings.points())
    assert len(gateway.state.sensors) == COUNT


def test_modbus_on_in_the_default_mode_names_the_sensors_or_serves_them_on_bacnet_only(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "")
    assert "sensors[327].number: 328 has no Modbus address" in str(err.value)
    settings = load(tmp_path, '[modbus]\nunaddressable_sensors = "bacnet_only"\n')
    _, _, modbus = build(settings)
    assert modbus is not None
    assert len(modbus.left_out) == COUNT - 327
    assert modbus.left_out[0] == ("s328", 328)
