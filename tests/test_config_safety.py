"""Configuration safety: every problem reported at once, plaintext secrets and open endpoints
warned about, example configurations safe as written, and no reset of totals without
credentials (tested against the real daemon)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers.daemon import Daemon, gateway_config, new_http_port

from gateway.cli import main

ROOT = Path(__file__).resolve().parent.parent
SENSOR = (
    '[[sensors]]\nid = "a"\nname = "A"\nnumber = 1\nmodel = "vs121"\ndev_eui = "24e124538c000001"\n'
)


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if not k.startswith("VS121GW_")}
    child.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=child,
    )


def test_every_alarm_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        SENSOR + '[[alarms]]\nid = "r"\nname = "R"\nnumber = 1\nsensors = ["nope", "a", "a"]\n'
        "threshold = 5\nhysteresis = 9\n"
    )
    out = check_config(config)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert f"{config}: alarms[0].sensors: 'nope' is not a configured sensor" in lines
    assert any("alarms[0].hysteresis = 9: larger than the threshold 5" in line for line in lines)
    assert f"{config}: alarms[0].sensors: a sensor is listed twice" in lines


def test_section_errors_and_alarm_problems_are_reported_together(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        "[bacnet]\nport = 70000\n" + SENSOR + '[[alarms]]\nid = "r"\nname = "R"\nnumber = 1\n'
        'sensors = ["nope"]\nthreshold = 5\nhysteresis = 9\n'
    )
    out = check_config(config)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert any("bacnet.port = 70000: Input should be less than or equal to" in x for x in lines)
    assert f"{config}: alarms[0].sensors: 'nope' is not a configured sensor" in lines
    assert any("alarms[0].hysteresis = 9: larger than the threshold 5" in x for x in lines)


def test_plaintext_passwords_are_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        '[http]\nusername = "u"\npassword = "hunter2"\n'
        '[bacnet]\npassword = "dcc-secret"\n'
        '[mqtt]\nusername = "m"\npassword = "mqtt-secret"\n' + SENSOR
    )
    out = check_config(config)
    assert out.returncode == 0, out.stderr
    assert "http.password: the secret is written in gw.toml in plain text" in out.stdout
    assert "http.password_file = <path of a file holding it>" in out.stdout
    assert "VS121GW_HTTP__PASSWORD_FILE" in out.stdout
    assert "mqtt.password: the secret is written in gw.toml" in out.stdout
    assert "bacnet.password: the secret is written in gw.toml" in out.stdout
    assert "VS121GW_BACNET__PASSWORD" in out.stdout
    for secret in ("hunter2", "dcc-secret", "mqtt-secret"):
        assert secret not in out.stdout + out.stderr


def test_open_endpoints_are_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        '[http]\nhost = "0.0.0.0"\n[modbus.tcp]\nhost = "10.1.2.3"\n'
        '[bacnet]\naddress = "10.1.2.3/24"\nbroadcast = "10.1.2.255"\n' + SENSOR
    )
    out = check_config(config)
    assert out.returncode == 0, out.stderr
    assert "warning: http.host = '0.0.0.0' without http.username" in out.stdout
    assert "warning: modbus.tcp.host = '10.1.2.3': Modbus has no authentication" in out.stdout
    assert "warning: bacnet.address = '10.1.2.3/24' without bacnet.password" in out.stdout


def test_loopback_demo_has_no_warnings(tmp_path: Path) -> None:
    out = check_config(ROOT / "config" / "loopback-demo.toml")
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stdout


def documented_variables(example: Path, tmp_path: Path) -> dict[str, str]:
    """The environment variables an example's comments tell the user to set, with test values."""
    env = {}
    for name in re.findall(r"\b(VS121GW_[A-Z0-9_]+)=", example.read_text()):
        if name.endswith("_FILE"):
            secret = tmp_path / name.lower()
            secret.write_text("test-secret\n")
            env[name] = str(secret)
        else:
            env[name] = "test-secret"
    return env


@pytest.mark.parametrize("example", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_examples_are_safe_as_written(example: Path, tmp_path: Path) -> None:
    # Each variable the comments document works alone (a _FILE form and its plain form are
    # alternatives, so each is tried on its own).
    documented = documented_variables(example, tmp_path)
    groups: dict[str, dict[str, str]] = {}
    for name, value in documented.items():
        groups.setdefault(name.removesuffix("_FILE"), {})[name] = value
    choices = [dict(zip(g, g.values(), strict=True)) for g in groups.values()]
    for variant in range(max((len(c) for c in choices), default=1)):
        env: dict[str, str] = {}
        for choice in choices:
            name = list(choice)[min(variant, len(choice) - 1)]
            env[name] = choice[name]
        out = check_config(example, env)
        assert out.returncode == 0, (env, out.stderr)
        assert "plain text" not in out.stdout
        # Reports and actions are never open to a network without a password.
        assert "without http.username" not in out.stdout


def test_vs121p_site_fails_closed_without_its_password(tmp_path: Path) -> None:
    out = check_config(ROOT / "config" / "vs121p-site.toml")
    assert out.returncode == 2
    assert "basic auth needs both username and password" in out.stderr


def test_reset_needs_credentials_even_from_this_machine(tmp_path: Path) -> None:
    port = new_http_port()
    daemon = Daemon(
        tmp_path,
        gateway_config(tmp_path / "state", mqtt_port=None, http_port=port),
        http_port=port,
    )
    daemon.start()
    try:
        url = f"http://127.0.0.1:{port}/api/sensors/foyer/reset"
        for headers in ({}, {"X-VS121GW-Control-Token": "guess"}):
            request = urllib.request.Request(url, method="POST", data=b"", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 403
        assert "reset refused: no valid credentials" in daemon.log_text()
        assert "totals reset" not in daemon.log_text()
        token = tmp_path / "state" / "control-token"
        assert token.stat().st_mode & 0o777 == 0o600
        # The command line reads the token from the state directory: the gateway's own user.
        assert main(["reset-counts", "foyer", "--config", str(daemon.config)]) == 0
        daemon.wait_until(
            lambda: "reset counts of sensor foyer" in daemon.log_text(), what="the reset"
        )
    finally:
        assert daemon.stop() == 0
