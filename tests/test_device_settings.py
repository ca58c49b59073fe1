"""Writable sensor settings: the catalog's limits are the command's own, and each write becomes
the guide's downlink."""

from __future__ import annotations

import pytest

from gateway.codec.vs121_downlink import command_from_json, encode_commands
from gateway.device_settings import SETTING_POINTS, setting_command
from objects.catalog import SENSOR_POINTS, Model, Point


def _point(key: str) -> Point:
    return next(p for p in SENSOR_POINTS if p.key == key)


def test_every_setting_point_is_a_writable_lorawan_point() -> None:
    for key in SETTING_POINTS:
        point = _point(key)
        assert point.writable
        assert point.models == frozenset({Model.VS121})


def test_the_interval_limits_are_the_commands_own() -> None:
    point = _point("reporting_interval")
    assert point.minimum is not None
    assert point.maximum is not None
    for inside in (point.minimum, point.maximum):
        setting_command("reporting_interval", inside)
    for outside in (point.minimum - 1, point.maximum + 1):
        with pytest.raises(ValueError, match=r"reporting_interval\.seconds"):
            setting_command("reporting_interval", outside)
    with pytest.raises(ValueError, match="whole seconds"):
        setting_command("reporting_interval", 600.5)


@pytest.mark.parametrize(
    ("key", "value", "downlink"),
    [
        ("reporting_interval", 1200, "ff03b004"),
        ("trigger_report", 1, "f93d01"),
        ("trigger_report", 0, "f93d00"),
    ],
)
def test_a_write_becomes_the_guides_downlink(key: str, value: float, downlink: str) -> None:
    command = command_from_json(setting_command(key, value))
    assert encode_commands([command]).hex() == downlink


def test_a_binary_setting_takes_only_0_or_1() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        setting_command("trigger_report", 2)
