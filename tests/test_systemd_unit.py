"""The files in systemd/: the unit's settings, systemd's own checks, the user, the env file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.settings import ENV_PREFIX, Settings

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
UNIT = SYSTEMD / "vs121-gateway.service"
UNIT_NAME = UNIT.name
# At most "OK" exposure in `systemd-analyze security` (0-100 scale; the unit scores 34).
MAX_EXPOSURE = 40

Section = list[tuple[str, str]]


def parse_unit(text: str) -> dict[str, Section]:
    """Sections of a unit file as ordered (key, value) pairs; keys may repeat, as in systemd."""
    sections: dict[str, Section] = {}
    current: Section | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        assert "=" in line, f"not a setting: {line!r}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(section: Section, key: str) -> list[str]:
    return [v for k, v in section if k == key]


def single(section: Section, key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}= is set {len(found)} times"
    return found[0]


@pytest.fixture(scope="module")
def service() -> Section:
    return parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", "/usr/bin/vs121-gateway run --config /etc/vs121-gateway/gateway.toml"),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("RestartSec", "5"),
        ("SuccessExitStatus", "75"),
        ("RestartForceExitStatus", "75"),
        ("KillSignal", "SIGTERM"),
        ("TimeoutStopSec", "20"),
        ("LimitNOFILE", "65536"),
        ("User", "vs121gw"),
        ("Group", "vs121gw"),
        ("DynamicUser", "no"),
        ("SupplementaryGroups", "dialout"),
        ("StateDirectory", "vs121-gateway"),
        ("ConfigurationDirectory", "vs121-gateway"),
        ("EnvironmentFile", "-/etc/vs121-gateway/env"),
        ("Environment", "VS121GW_GATEWAY__STATE_DIR=/var/lib/vs121-gateway"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("DevicePolicy", "closed"),
    ],
)
def test_unit_setting(service: Section, key: str, expected: str) -> None:
    assert single(service, key) == expected


def test_unit_allows_serial_ports_and_gpio_chips_only(service: Section) -> None:
    assert sorted(values(service, "DeviceAllow")) == [
        "char-gpiochip rw",
        "char-ttyACM rw",
        "char-ttyAMA rw",
        "char-ttyS rw",
        "char-ttyUSB rw",
    ]


def test_unit_does_not_require_the_gpio_group(service: Section) -> None:
    # A missing group makes the unit fail to start, and gpio exists on some distributions only.
    groups = " ".join(values(service, "SupplementaryGroups")).split()
    assert "gpio" not in groups


def test_unit_is_enabled_into_multi_user_after_the_network() -> None:
    sections = parse_unit(UNIT.read_text(encoding="utf-8"))
    assert single(sections["Install"], "WantedBy") == "multi-user.target"
    assert "network-online.target" in values(sections["Unit"], "After")
    assert "network-online.target" in values(sections["Unit"], "Wants")


def _runnable_copy(directory: Path) -> Path:
    """The unit with ExecStart pointed at /bin/true: verify rejects commands that do not exist."""
    text = UNIT.read_text(encoding="utf-8")
    runnable, count = re.subn(
        r"^ExecStart=/usr/bin/vs121-gateway ", "ExecStart=/bin/true ", text, flags=re.M
    )
    assert count == 1
    path = directory / UNIT_NAME
    path.write_text(runnable, encoding="utf-8")
    return path


def _systemd_analyze() -> str:
    program = shutil.which("systemd-analyze")
    if program is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    return program


def _verify(unit: Path) -> None:
    done = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown or malformed settings are only warnings: fail on any line about our unit.
    ours = [line for line in done.stderr.splitlines() if UNIT_NAME in line]
    assert done.returncode == 0, done.stderr
    assert ours == []


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    _verify(_runnable_copy(tmp_path))


def _readme_drop_ins() -> list[str]:
    text = (SYSTEMD / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```ini\n(.*?)```", text, flags=re.S)


def test_readme_has_drop_ins() -> None:
    assert len(_readme_drop_ins()) >= 3


def _first_key(drop_in: str) -> str:
    return next(line.split("=", 1)[0] for line in drop_in.splitlines() if "=" in line)


@pytest.mark.parametrize("drop_in", _readme_drop_ins(), ids=_first_key)
def test_readme_drop_ins_verify(tmp_path: Path, drop_in: str) -> None:
    # A replacement command is checked for existence too; the rest of the drop-in is what counts.
    drop_in = re.sub(r"^ExecStart=\S.*$", "ExecStart=/bin/true", drop_in, flags=re.M)
    unit = _runnable_copy(tmp_path)
    d = tmp_path / f"{UNIT_NAME}.d"
    d.mkdir()
    (d / "override.conf").write_text(drop_in, encoding="utf-8")
    _verify(unit)


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            _systemd_analyze(),
            "security",
            "--offline=true",
            f"--threshold={MAX_EXPOSURE}",
            "--no-pager",
            str(_runnable_copy(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_sysusers_creates_the_user_in_dialout(tmp_path: Path) -> None:
    program = shutil.which("systemd-sysusers")
    if program is None:
        pytest.skip("systemd-sysusers is not installed (Debian package: systemd)")
    if os.geteuid() != 0:
        pytest.skip("systemd-sysusers --root needs root to set file ownership")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n", encoding="utf-8")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\n", encoding="utf-8")
    done = subprocess.run(
        [program, f"--root={tmp_path}", str(SYSTEMD / "sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    passwd = {
        fields[0]: fields
        for fields in (line.split(":") for line in (etc / "passwd").read_text().splitlines())
    }
    groups = {
        fields[0]: fields
        for fields in (line.split(":") for line in (etc / "group").read_text().splitlines())
    }
    user = passwd["vs121gw"]
    assert user[4] == "VS121 gateway"
    assert user[5] == "/var/lib/vs121-gateway"
    assert user[6].endswith("nologin")
    assert user[3] == groups["vs121gw"][2]  # primary group is its own
    assert groups["dialout"][2] == "20"
    assert groups["dialout"][3].split(",") == ["vs121gw"]


def _env_names() -> list[str]:
    text = (SYSTEMD / "env.example").read_text(encoding="utf-8")
    # Examples are commented out; the names in them must still be real settings.
    return re.findall(rf"^#?({ENV_PREFIX}[A-Z0-9_]+)=", text, flags=re.M)


def _resolves(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    inner = field.annotation
    # Optional sub-sections (``BbmdSection | None``) hold the model among their arguments.
    candidates = [inner, *getattr(inner, "__args__", ())]
    return any(
        isinstance(c, type) and issubclass(c, BaseModel) and _resolves(c, path[1:])
        for c in candidates
    )


def test_unit_environment_names_are_settings(service: Section) -> None:
    names = [v.split("=", 1)[0] for v in values(service, "Environment")]
    assert names == ["VS121GW_GATEWAY__STATE_DIR"]
    assert _resolves(Settings, ["gateway", "state_dir"])


def test_env_example_has_the_documented_examples() -> None:
    names = _env_names()
    assert "VS121GW_MQTT__PASSWORD_FILE" in names
    assert len(names) >= 5


@pytest.mark.parametrize("name", _env_names())
def test_env_example_names_are_settings(name: str) -> None:
    path = name.removeprefix(ENV_PREFIX).lower().split("__")
    assert _resolves(Settings, path), name
