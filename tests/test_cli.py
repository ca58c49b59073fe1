"""The command-line contract: options, output formats and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXE = [sys.executable, "-m", "gateway.cli"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_help_lists_every_command() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("run", "decode", "encode", "points", "check-config", "simulate"):
        assert command in out.stdout


def test_decode_arguments_one_json_line_each() -> None:
    out = run("decode", "04c9030800a106cd05", "10f701000300")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {"data", "warnings", "errors"}
    assert first["data"]["people_count_all"] == 3
    assert first["data"]["region_6"] == 1
    assert json.loads(lines[1])["data"] == {"line_in": 1, "line_out": 3}


def test_decode_stdin_and_base64() -> None:
    out = run("decode", "--base64", stdin="EPcBAAMA\n\nBMkDCAChBs0F\n")
    assert out.returncode == 0
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["data"]["line_out"] == 3
    assert lines[1]["data"]["people_count_max"] == 5


def test_decode_errors_exit_1_and_still_print() -> None:
    out = run("decode", "04cc0102", "zz")
    assert out.returncode == 1
    a, b = (json.loads(line) for line in out.stdout.splitlines())
    assert "0x04 0xcc" in a["errors"][0]
    assert "not valid hex" in b["errors"][0]


def test_decode_vs121p_file(tmp_path: Path) -> None:
    report = ROOT / "tests" / "data" / "vs121p" / "line_interval.json"
    out = run("decode", "--vs121p", str(report))
    assert out.returncode == 0, out.stdout
    data = json.loads(out.stdout)["data"]
    assert data["people_in"] == 10
    assert data["people_total_in"] == 10


def test_encode_prints_hex_and_rejects_bad_commands() -> None:
    assert run("encode", '{"command": "reset_cumulative_count"}').stdout.strip() == "ff51ff"
    assert run("encode", '{"command": "reporting_interval", "seconds": 1200}').stdout.strip() == (
        "ff03b004"
    )
    many = run("encode", '[{"command": "reboot"}, {"command": "reset_cumulative_count"}]')
    assert many.stdout.strip() == "ff10ffff51ff"
    bad = run("encode", '{"command": "reporting_interval", "seconds": 1}')
    assert bad.returncode == 2
    assert "seconds" in bad.stderr


@pytest.mark.parametrize("fmt", ["table", "csv", "ede", "modbus", "modbus-csv"])
def test_points_formats(fmt: str) -> None:
    out = run("points", "--format", fmt)
    assert out.returncode == 0, out.stderr
    assert "Demo Lobby People Count" in out.stdout


def test_ede_has_header_and_every_object() -> None:
    out = run("points", "--format", "ede").stdout.splitlines()
    assert out[0].startswith("#Engineering-Data-Exchange")
    assert "VERSION_OF_LAYOUT;2.3" in out
    rows = [r.split(";") for r in out if not r.startswith("#") and r.count(";") >= 15]
    assert rows[0][0] == "device"
    assert len({(r[3], r[4]) for r in rows}) == len(rows)  # unique object identifiers


def test_check_config_names_key_value_and_allowed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[bacnet]\nport = 70000\nadress = "x"\n'
        '[[sensors]]\nid = "a"\nname = "A"\nnumber = 1\nmodel = "vs999"\n'
    )
    out = run("check-config", str(bad))
    assert out.returncode == 2
    assert "bacnet.port = 70000: Input should be less than or equal to 65535" in out.stderr
    assert "bacnet.adress: unknown key" in out.stderr
    assert "sensors[0].model = 'vs999'" in out.stderr


def test_check_config_ok_for_the_demo_example() -> None:
    # The site examples need the secrets their comments name: see test_config_safety.
    out = run("check-config", str(ROOT / "config" / "loopback-demo.toml"))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
