"""Points derived from what a LoRaWAN uplink says besides the counts: the settings the sensor
echoes, the radio link, and the device's own facts.

The VS121 answers a configuration downlink by echoing the setting in its next uplink (decoded by
`gateway.codec.vs121_responses` under the vendor codec's names); the writable points show those
echoes, so a BMS sees what the sensor really runs with, not what was last written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.envelopes import Uplink

# Echoed setting (decoded name) -> (point key, how its value reads as a number).
_ENABLED: Final = {"enable": 1, "disable": 0}
_ECHOES: Final[dict[str, tuple[str, Mapping[Any, int] | None]]] = {
    "from_now_on_report_interval": ("reporting_interval", None),
    "line_detect_report_enable": ("trigger_report", _ENABLED),
}
_RADIO: Final = ("rssi", "snr", "spreading_factor", "gateway_count")
FACTS: Final = ("sn", "hardware_version", "firmware_version", "protocol_version")
"""Decoded fields (strings) that describe the device; kept and shown in the API."""


def derived_values(up: Uplink, data: Mapping[str, Any]) -> dict[str, float]:
    """Point values this uplink carries outside the decoder's own fields."""
    out: dict[str, float] = {}
    for name, (key, table) in _ECHOES.items():
        value = data.get(name)
        if table is not None:
            number = table.get(value) if isinstance(value, str) else None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            number = None
        if number is not None:
            out[key] = float(number)
    meta = up.meta or {}
    for key in _RADIO:
        value = meta.get(key)
        if isinstance(value, float):
            out[key] = value
    if up.fcnt is not None:
        out["frame_counter"] = float(up.fcnt)
    out.update(_fact_codes(up, data))
    return out


_CLASSES: Final = {"A": 0, "B": 1, "C": 2}


def _version_code(text: object, parts: int) -> float | None:
    """ "1.0.3.2" -> 10003 (parts=3), "1.0" -> 100 (parts=2); None unless every part is 0..99."""
    if not isinstance(text, str):
        return None
    numbers = text.split(".")[:parts]
    if len(numbers) < parts or not all(n.isdigit() and int(n) < 100 for n in numbers):
        return None
    code = 0
    for n in numbers:
        code = code * 100 + int(n)
    return float(code)


def _fact_codes(up: Uplink, data: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    firmware = _version_code(data.get("firmware_version"), 3)
    if firmware is not None:
        out["firmware_version_code"] = firmware
    hardware = _version_code(data.get("hardware_version"), 2)
    if hardware is not None:
        out["hardware_version_code"] = hardware
    lorawan_class = _CLASSES.get(str((up.meta or {}).get("lorawan_class")))
    if lorawan_class is not None:
        out["lorawan_class_code"] = float(lorawan_class)
    return out


def device_facts(up: Uplink, data: Mapping[str, Any]) -> dict[str, str]:
    """What the device says about itself (serial, versions) and its LoRaWAN class where the
    network server gives it."""
    facts = {key: str(data[key]) for key in FACTS if isinstance(data.get(key), str | int)}
    lorawan_class = (up.meta or {}).get("lorawan_class")
    if isinstance(lorawan_class, str):
        facts["lorawan_class"] = lorawan_class
    return facts


# Device facts (keys of `device_facts`) shown as text objects: fact -> point key.
TEXT_POINTS: Final = {
    "sn": "serial_number",
    "firmware_version": "firmware_version_text",
    "hardware_version": "hardware_version_text",
}


def text_values(facts: Mapping[str, str]) -> dict[str, str]:
    """The text objects' values (point key -> text) from a sensor's kept facts."""
    return {key: facts[fact] for fact, key in TEXT_POINTS.items() if fact in facts}
