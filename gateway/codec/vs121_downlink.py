"""VS121 LoRaWAN downlink commands: typed, validated, encoded to bytes and decoded back.

Every downlink in chapter 7 of the VS121 user guide ("Downlink Command") is one frozen dataclass
whose fields are checked on construction; `encode()` gives the channel, type and data bytes.
Several commands may share one downlink (`encode_commands`), sent on `DOWNLINK_FPORT` unless the
device's application port was changed. Mind the region's maximum payload (11 bytes at US915 DR0).

JSON shape (read by `command_from_json`, written by `Command.to_json` and `decode_downlink`): an
object with "command" and that command's fields, e.g. {"command": "reset_cumulative_count"},
{"command": "reporting_interval", "seconds": 1200}, {"command": "reset_schedule", "action": "add",
"index": 0, "days": "everyday", "time": "20:00"}. Flags are JSON booleans; clock times are "HH:MM";
weekdays are "sun".."sat"; `index` counts from 0 (the guide's "00: the first reset schedule"), while
`region`, `period` and `block` are the guide's labels and count from 1 (region 1 is byte 00).
Fields marked = have a default and may be left out.

    reboot, reset_cumulative_count  (no fields)
    wifi, reset_schedule_enable, region_people_counting, line_crossing_counting, filter_u_turns,
    trigger_report, report_with_timestamp, region_report_regularly, region_report_by_result,
    adr, confirmed_mode, d2d        enable
    system_time                     timestamp (unix s)
    time_sync                       mode gateway|manual, timestamp=0
    debug_log                       level error|debug
    reset_schedule                  action modify|add|delete, index 0..4, days=[], time=00:00
    detection_region                enable, area mapped|non_mapped,
                                    reporting_type occupancy|region_people_counting
    min_dwell_time                  enable, seconds=5
    schedule_enable                 feature, enable
    reporting_interval              seconds 5..65535
    periodic_report_scheme          scheme on_the_dot|from_now_on
    on_the_dot_interval             minutes 5|10|15|30|60|240|360|480|720
    report_by_result_mode           mode zero_non_zero|on_change
    debounce                        enable, seconds=2 (1..60)
    schedule                        feature, weekday, period 1..3, start, end
    channel_mask                    block 1..6, channels (channel numbers in the block)
    application_port                port 1..223
    rejoin                          enable, retries 4..32
    spreading_factor                sf 7..12
    tx_power                        level 0..14
    lorawan_version                 version 1.0.2|1.0.3
    rx2_data_rate                   data_rate 0..5
    rx2_frequency                   frequency_hz 100000000..1000000000
    d2d_key                         key (16 hex digits)
    d2d_occupied                    region 1..16, enable, control_command (4 hex digits)
    d2d_vacant                      region, enable, control_command, delay_seconds 0..600

`feature` is region_people_counting, line_crossing_counting or people_flow_analysis.

Byte layouts follow the guide's tables and examples. The vendor's public encoder (and the device
replies decoded in `vs121_responses`) differ in places; the guide's examples are what this encodes:
f9 95 has a 2-byte time (vendor: 3 bytes), ff 46 a 1-byte debounce time (vendor: 2 bytes), f9 97
is feature then enable (vendor: enable then feature), and the debug log is f9 89 00 <level>
(vendor: f9 88). `decode_downlink` also reads the vendor's wider f9 95 and ff 46 (one more time
byte) when the payload's length says which form it is. Two-byte bitmaps are written as the
guide's example reads them: channel mask ff 00 in block 1 enables channels 8-15, i.e. the first
byte holds the high bits.

The code is split by concern: `vs121_downlink_fields` holds the field kinds (checks, byte layouts
and JSON forms of single fields), `vs121_downlink_registry` the `Command` base class and the
registry of command classes, and `vs121_downlink_commands` the command classes. This module
re-exports their public names and works on whole payloads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.codec.result import DecodeResult, new_result
from gateway.codec.vs121_downlink_commands import (
    Adr,
    ApplicationPort,
    ChannelMask,
    ConfirmedMode,
    D2d,
    D2dKey,
    D2dOccupied,
    D2dVacant,
    Debounce,
    DebugLog,
    DetectionRegion,
    FilterUTurns,
    LineCrossingCounting,
    LorawanVersion,
    MinDwellTime,
    OnTheDotInterval,
    PeriodicReportScheme,
    Reboot,
    RegionPeopleCounting,
    RegionReportByResult,
    RegionReportRegularly,
    Rejoin,
    ReportByResultMode,
    ReportingInterval,
    ReportWithTimestamp,
    ResetCumulativeCount,
    ResetSchedule,
    ResetScheduleEnable,
    Rx2DataRate,
    Rx2Frequency,
    Schedule,
    ScheduleEnable,
    SpreadingFactor,
    SystemTime,
    TimeSync,
    TriggerReport,
    TxPower,
    Wifi,
)
from gateway.codec.vs121_downlink_fields import WEEKDAYS, Feature, Weekday
from gateway.codec.vs121_downlink_registry import COMMANDS, COMMANDS_BY_HEADER, Command
from gateway.errors import EncodeError

__all__ = [
    "COMMANDS",
    "DOWNLINK_FPORT",
    "WEEKDAYS",
    "Adr",
    "ApplicationPort",
    "ChannelMask",
    "Command",
    "ConfirmedMode",
    "D2d",
    "D2dKey",
    "D2dOccupied",
    "D2dVacant",
    "Debounce",
    "DebugLog",
    "DetectionRegion",
    "Feature",
    "FilterUTurns",
    "LineCrossingCounting",
    "LorawanVersion",
    "MinDwellTime",
    "OnTheDotInterval",
    "PeriodicReportScheme",
    "Reboot",
    "RegionPeopleCounting",
    "RegionReportByResult",
    "RegionReportRegularly",
    "Rejoin",
    "ReportByResultMode",
    "ReportWithTimestamp",
    "ReportingInterval",
    "ResetCumulativeCount",
    "ResetSchedule",
    "ResetScheduleEnable",
    "Rx2DataRate",
    "Rx2Frequency",
    "Schedule",
    "ScheduleEnable",
    "SpreadingFactor",
    "SystemTime",
    "TimeSync",
    "TriggerReport",
    "TxPower",
    "Weekday",
    "Wifi",
    "command_from_json",
    "decode_downlink",
    "encode_commands",
]

DOWNLINK_FPORT: Final = 85
"""The application port VS121 listens on for downlinks unless reconfigured (guide, chapter 7)."""


# --- public functions -----------------------------------------------------------------------------


def command_from_json(obj: Mapping[str, object]) -> Command:
    """The command an object of the documented JSON shape describes; EncodeError if it is wrong."""
    if not isinstance(obj, Mapping):
        raise EncodeError(f"a command must be a JSON object, not {type(obj).__name__}")
    name = obj.get("command")
    cls = COMMANDS.get(name) if isinstance(name, str) else None
    if cls is None:
        what = "missing 'command'" if name is None else f"unknown command {name!r}"
        raise EncodeError(f"{what}; allowed: {', '.join(sorted(COMMANDS))}")
    return cls.from_json(obj)


def encode_commands(commands: Iterable[Command]) -> bytes:
    """One downlink payload carrying all `commands` in order."""
    parts = [command.encode() for command in commands]
    if not parts:
        raise EncodeError("a downlink needs at least one command")
    return b"".join(parts)


def decode_downlink(payload: bytes) -> DecodeResult:
    """The commands in a downlink payload, as JSON objects in `data["commands"]`. Never raises.

    An unknown channel or a cut command stops decoding with an error; a command whose bytes are
    out of range is reported and skipped, and decoding goes on, since its length is known.
    """
    result = new_result()
    commands: list[dict[str, Any]] = []
    result["data"]["commands"] = commands
    if not isinstance(payload, bytes | bytearray | memoryview):
        result["errors"].append(f"payload must be bytes, not {type(payload).__name__}")
        return result
    payload = bytes(payload)
    if not payload:
        result["warnings"].append("empty payload: no commands")
    pos = 0
    while pos < len(payload):
        header = payload[pos : pos + 2]
        where = f"channel {' '.join(f'0x{b:02x}' for b in header)} at byte {pos}"
        if len(header) < 2:
            result["errors"].append(f"{where}: cut short, no type byte")
            break
        cls = COMMANDS_BY_HEADER.get(header)
        if cls is None:
            result["errors"].append(f"{where}: not a VS121 downlink command")
            break
        size = cls.data_size()
        vendor = _vendor_width(payload, pos, size)
        if vendor is not None:
            size, data = vendor
            if data is None:
                result["errors"].append(f"{where} ({cls.NAME}): the value is out of range")
                pos += 2 + size
                continue
            try:
                commands.append(cls.from_data(data).to_json())
            except (ValueError, EncodeError) as exc:
                result["errors"].append(f"{where}: {exc}")
            pos += 2 + size
            continue
        data = payload[pos + 2 : pos + 2 + size]
        if len(data) < size:
            result["errors"].append(
                f"{where} ({cls.NAME}): cut short, {len(data)} of {size} data bytes"
            )
            break
        try:
            commands.append(cls.from_data(data).to_json())
        except (ValueError, EncodeError) as exc:
            result["errors"].append(f"{where}: {exc}")
        pos += 2 + size
    return result


# The vendor encoder's wider forms: ff 46 with a 2-byte time, f9 95 with a 3-byte time, each one
# byte longer than the guide's. Read (as the guide's command) when the length says so.
_WIDER: Final = {b"\xff\x46", b"\xf9\x95"}


def _vendor_width(payload: bytes, pos: int, guide: int) -> tuple[int, bytes | None] | None:
    """(size, the data in the guide's layout) when the command at `pos` is the wider form:
    it ends the payload exactly, or only it is followed by another command. None otherwise."""
    if payload[pos : pos + 2] not in _WIDER:
        return None
    wide = guide + 1
    end = pos + 2 + wide
    if end > len(payload):
        return None
    if end != len(payload) and (
        payload[end : end + 2] not in COMMANDS_BY_HEADER
        or payload[end - 1 : end + 1] in COMMANDS_BY_HEADER
    ):
        return None
    data = payload[pos + 2 : end]
    if data[-1] != 0:
        return wide, None  # the value does not fit the guide's narrower field
    return wide, data[:-1]
