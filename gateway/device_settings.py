"""Writable points that are sensor settings: which guide command a written value becomes.

Shared by the BACnet and Modbus write paths, so both send the same downlink for a write. The
command's own field checks (e.g. 5..65535 s for the reporting interval) apply on top of the
catalog's range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from gateway.codec.vs121_downlink import command_from_json
from gateway.errors import EncodeError


def _interval(value: float) -> dict[str, Any]:
    if value != int(value):
        raise ValueError(f"a reporting interval is whole seconds, not {value}")
    return {"command": "reporting_interval", "seconds": int(value)}


def _trigger(value: float) -> dict[str, Any]:
    if value not in (0, 1):
        raise ValueError(f"trigger report is 0 or 1, not {value}")
    return {"command": "trigger_report", "enable": bool(value)}


_BUILDERS: Final[dict[str, Callable[[float], dict[str, Any]]]] = {
    "reporting_interval": _interval,
    "trigger_report": _trigger,
}
SETTING_POINTS: Final = tuple(_BUILDERS)
"""Catalog keys of the points whose writes are sent to the sensor."""


def setting_command(key: str, value: float) -> dict[str, Any]:
    """The command (JSON shape) a write of `value` to point `key` sends. ValueError when the
    value is not one the command accepts."""
    command = _BUILDERS[key](value)
    try:
        command_from_json(command)
    except EncodeError as exc:
        raise ValueError(str(exc)) from None
    return command
