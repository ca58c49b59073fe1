"""Configuration: strict validation, cross-field checks, environment overrides, secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_default, load_settings

SENSOR = """
[[sensors]]
id = "a"
name = "A"
number = 1
model = "vs121"
dev_eui = "24e124538c000001"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    return str(err.value)


def test_embedded_default_is_a_loopback_demo() -> None:
    s = load_default()
    assert s.bacnet.address.startswith("127.")
    assert s.bacnet.broadcast == "127.255.255.255"
    assert s.modbus.tcp.host == "127.0.0.1"
    assert s.http.host == "127.0.0.1"
    assert s.simulate.enabled
    assert {x.model for x in s.sensors} == {"vs121", "vs121-p"}


def test_duplicate_numbers_ids_and_euis_are_named(tmp_path: Path) -> None:
    text = SENSOR + SENSOR.replace('name = "A"', 'name = "B"')
    msg = problems(tmp_path, text)
    assert "sensors[1].id: 'a' is already used by sensors[0]" in msg
    assert "sensors[1].number: 1 is already used by sensors[0]" in msg
    assert "sensors[1].dev_eui: '24e124538c000001' is already used by sensors[0]" in msg


def test_overlapping_instances_are_named(tmp_path: Path) -> None:
    text = SENSOR + (
        SENSOR.replace('id = "a"', 'id = "b"')
        .replace("number = 1", "number = 2")
        .replace("000001", "000002")
        .replace('name = "A"', 'name = "B"')
        + "[sensors.points.people_count_all]\ninstance = 1001\n"
    )
    msg = problems(tmp_path, text)
    assert "b.people_count_all: BACnet analog-input 1001 already used by a.people_count_all" in msg


def test_modbus_range_is_a_config_error(tmp_path: Path) -> None:
    msg = problems(tmp_path, SENSOR.replace("number = 1", "number = 400"))
    assert "Modbus" in msg
    assert "beyond 65535" in msg


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    text = (
        '[mqtt]\nenabled = true\n[mqtt.tls]\nca_file = "/nonexistent/ca.pem"\n'
        '[http]\ntls_cert_file = "/nonexistent/c.pem"\ntls_key_file = "/nonexistent/k.pem"\n'
    )
    msg = problems(tmp_path, text)
    assert "/nonexistent/ca.pem" in msg
    assert "/nonexistent/c.pem" in msg


def test_bacnet_address_needs_its_mask(tmp_path: Path) -> None:
    msg = problems(tmp_path, '[bacnet]\naddress = "10.0.0.5"\n')
    assert "bacnet.address = '10.0.0.5'" in msg
    assert "prefix length" in msg


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS121GW_BACNET__PORT", "47809")
    monkeypatch.setenv("VS121GW_HTTP__PORT", "9000")
    s = load_settings(write(tmp_path, "[bacnet]\nport = 47900\n" + SENSOR))
    assert s.bacnet.port == 47809
    assert s.http.port == 9000


def test_bad_environment_value_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VS121GW_BACNET__PORT", "not-a-port")
    msg = problems(tmp_path, SENSOR)
    assert "bacnet.port" in msg
    assert "not-a-port" in msg


def test_secrets_never_appear_in_repr_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        '[mqtt]\nusername = "u"\npassword = "hunter2-mqtt"\n'
        '[http]\nusername = "v"\npassword = "hunter2-http"\n'
    )
    s = load_settings(write(tmp_path, text))
    logging.getLogger("test").info("settings: %r %s", s, s)
    assert "hunter2" not in repr(s)
    assert "hunter2" not in caplog.text
    assert s.http.basic_auth_password() == "hunter2-http"


def test_unknown_keys_and_bad_values_all_reported_at_once(tmp_path: Path) -> None:
    msg = problems(
        tmp_path, '[gateway]\nlog_level = "loud"\ncolour = 1\n[modbus.rtu]\nparity = "X"\n'
    )
    lines = msg.splitlines()
    assert len(lines) == 3
    assert any("gateway.log_level = 'loud'" in line for line in lines)
    assert any("gateway.colour: unknown key" in line for line in lines)
    assert any("modbus.rtu.parity = 'X'" in line for line in lines)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[bacnet\n"))


def test_errors_never_quote_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VS121GW_BACNET__PASSWORD", "Env-secret-password-far-too-long-for-bacnet")
    text = (
        '[mqtt]\npassword = "Hunter2-mqtt"\n'  # a password without a username: invalid
        '[http]\nusername = "u"\npassword = "Hunter2-http"\npassword_file = "/x"\n'
    )
    msg = problems(tmp_path, text)
    assert "Hunter2" not in msg
    assert "Env-secret" not in msg
    assert "bacnet.password" in msg


def test_vs121p_needs_its_serial_and_stale_after_must_exceed_the_interval(tmp_path: Path) -> None:
    text = (
        '[[sensors]]\nid = "p"\nname = "P"\nnumber = 1\nmodel = "vs121-p"\n'
        'dev_eui = "24e124538c000009"\nreport_interval = 300\nstale_after = 200\n'
    )
    msg = problems(tmp_path, text)
    assert "needs serial" in msg
    ok = text.replace('dev_eui = "24e124538c000009"', 'serial = "369362028335"')
    assert "stale_after 200 must be longer than report_interval 300" in problems(tmp_path, ok)
