"""VS121 replies to configuration downlinks (channels 0xff, 0xfe, 0xf9, 0xf8).

After a configuration downlink the device echoes the setting in its next uplink, in the
downlink's own layout: `ff`/`fe` carry the general settings, `f9` the extended ones, and `f8` an
extended one followed by a result byte (0 = applied; otherwise the device refused it). Field names,
enum spellings and layouts are those of the vendor's public VS121 codec
(Milesight-IoT/SensorDecoders, vs-series/vs121/vs121-decoder.js), so a reply the network server
already decoded reads the same. An enum byte the codec does not know decodes to "unknown", as in
that codec, and adds a warning.

Where the vendor codec and the user guide disagree, the codec wins, because it is what the
reference vectors were produced from: f9 95 is 6 bytes with a 3-byte time (guide: 5 bytes); f9 97
is enable then type (guide: type then enable); f9 99 is type, period, weekday (guide and vendor
encoder: type, weekday, period); ff 46 has a 2-byte time (guide: 1 byte); the log level is f9 88
with 1 byte (guide: f9 89 with 2 bytes; the vendor encoder sends f9 88 00 <level>). The guide's
widths of f9 95 and ff 46 (which the gateway's own encoder sends) decode too, as
`ALTERNATE_WIDTHS`: the uplink decoder takes whichever width the message's length allows.

Settings the guide documents as downlinks but the vendor VS121 codec lacks (ff 05, ff 11, ff 41,
ff 42, f9 89) decode with the guide's layout and the names the vendor's sibling VS-series codecs use
for the same channel (`lora_channel_mask_config`, `lora_port`, `wifi_enable`); ff 11 becomes
`system_time` rather than their `timestamp`, which would overwrite the report's own timestamp. The
channel mask reads big-endian, bit i = channel i of the block, as the guide's example does
("ff 00" enables channels 8-15), like the occupancy bitmap.

Everything here is table-driven: `RESPONSE_TABLE` maps the 2-byte channel/type key to
(data size, parser) exactly like the telemetry table it is merged into.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

from gateway.codec.result import DecodeResult

# A parser reads `size` bytes at `pos` (the channel header is at pos - 2) into `data`, and may add
# warnings to `result`. The caller has already checked that the bytes are there.
Parser = Callable[[bytes, int, dict[str, Any], DecodeResult], None]
# A reader turns the bytes at `pos` into one value; it notes undocumented enum bytes in `odd`.
Reader = Callable[[bytes, int, list[str]], Any]

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from

_ENABLE: Final = {0: "disable", 1: "enable"}
_YES_NO: Final = {0: "no", 1: "yes"}
_RESULT: Final = {1: "forbidden", 2: "invalid parameter"}
_WEEK_BITS: Final = (
    ("sun", 0),
    ("mon", 1),
    ("tue", 2),
    ("wed", 3),
    ("thu", 4),
    ("fri", 5),
    ("sat", 6),
)


def _u8(buf: bytes, pos: int, odd: list[str]) -> int:
    return buf[pos]


def _u8_plus_1(buf: bytes, pos: int, odd: list[str]) -> int:
    """Indexes the device counts from 0 (region, schedule, period) and the codec shows from 1."""
    return buf[pos] + 1


def _u16(buf: bytes, pos: int, odd: list[str]) -> int:
    return int(_U16(buf, pos)[0])


def _u16_be(buf: bytes, pos: int, odd: list[str]) -> int:
    return buf[pos] << 8 | buf[pos + 1]


def _u24(buf: bytes, pos: int, odd: list[str]) -> int:
    return buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16


def _u32(buf: bytes, pos: int, odd: list[str]) -> int:
    return int(_U32(buf, pos)[0])


def _hex8(buf: bytes, pos: int, odd: list[str]) -> str:
    return buf[pos : pos + 8].hex()


def _d2d_command(buf: bytes, pos: int, odd: list[str]) -> str:
    """A D2D command is sent little-endian and written as 4 hex digits: 10 11 -> "1110"."""
    return f"{buf[pos + 1]:02x}{buf[pos]:02x}"


def _yes(buf: bytes, pos: int, odd: list[str]) -> str:
    """Reboot and reset replies carry a fixed ff byte; the codec reports "yes" whatever it holds."""
    return "yes"


def _enum(label: str, names: Mapping[int, str]) -> Reader:
    def read(buf: bytes, pos: int, odd: list[str]) -> str:
        name = names.get(buf[pos])
        if name is None:
            odd.append(f"{label} 0x{buf[pos]:02x} is not a documented value")
            return "unknown"
        return name

    return read


def _week_cycle(buf: bytes, pos: int, odd: list[str]) -> dict[str, str]:
    mask = buf[pos]
    return {day: _ENABLE[mask >> bit & 1] for day, bit in _WEEK_BITS}


def _record(*fields: tuple[str, int, Reader]) -> Reader:
    """A reader for a dict of fields, each (name, byte offset, reader)."""

    def read(buf: bytes, pos: int, odd: list[str]) -> dict[str, Any]:
        return {name: reader(buf, pos + offset, odd) for name, offset, reader in fields}

    return read


def _enable(label: str) -> Reader:
    return _enum(label, _ENABLE)


# One row per setting: type byte, field name, data size, reader, whether replies append to a list.
_Row = tuple[int, str, int, Reader, bool]

_GENERAL: Final[tuple[_Row, ...]] = (  # channels 0xff and 0xfe
    (0x03, "from_now_on_report_interval", 2, _u16, False),
    (0x04, "confirm_mode_enable", 1, _enable("confirm_mode_enable"), False),
    (0x05, "lora_channel_mask_config", 3, _record(("id", 0, _u8), ("mask", 1, _u16_be)), True),
    (0x10, "reboot", 1, _yes, False),
    (0x11, "system_time", 4, _u32, False),
    (0x35, "d2d_key", 8, _hex8, False),
    (0x40, "adr_enable", 1, _enable("adr_enable"), False),
    (0x41, "lora_port", 1, _u8, False),
    (0x42, "wifi_enable", 1, _enable("wifi_enable"), False),
    (0x43, "report_regularly_enable", 1, _enable("report_regularly_enable"), False),
    (
        0x44,
        "people_count_change_report_enable",
        1,
        _enable("people_count_change_report_enable"),
        False,
    ),
    (
        0x45,
        "people_counting_report_mode",
        1,
        _enum("people_counting_report_mode", {0: "zero_to_nonzero", 1: "once_result_change"}),
        False,
    ),
    (
        0x46,
        "people_count_jitter_config",
        3,
        _record(("enable", 0, _enable("people_count_jitter_config.enable")), ("time", 1, _u16)),
        False,
    ),
    (0x48, "line_detect_enable", 1, _enable("line_detect_enable"), False),
    (0x50, "region_people_counting_enable", 1, _enable("region_people_counting_enable"), False),
    (0x51, "clear_cumulative_count", 1, _yes, False),
    (0x84, "d2d_enable", 1, _enable("d2d_enable"), False),
)


def _skip_first(read: Reader) -> Reader:
    def skip(buf: bytes, pos: int, odd: list[str]) -> Any:
        return read(buf, pos + 1, odd)

    return skip


_LOG_LEVEL: Final = _enum("log_level", {2: "error", 4: "debug"})
_PEOPLE_COUNTING_TYPE: Final = {
    0: "region_people_counting",
    1: "line_crossing_counting",
    2: "people_flow_analysis",
}

_EXTENDED: Final[tuple[_Row, ...]] = (  # channels 0xf9 and 0xf8 (0xf8: plus a result byte)
    (
        0x10,
        "periodic_report_scheme",
        1,
        _enum("periodic_report_scheme", {0: "on_the_dot", 1: "from_now_on"}),
        False,
    ),
    (
        0x11,
        "on_the_dot_report_interval",
        1,
        _enum(
            "on_the_dot_report_interval",
            {
                0: "5min",
                1: "10min",
                2: "15min",
                3: "30min",
                4: "1h",
                5: "4h",
                6: "6h",
                7: "8h",
                8: "12h",
            },
        ),
        False,
    ),
    (0x3D, "line_detect_report_enable", 1, _enable("line_detect_report_enable"), False),
    (
        0x85,
        "rejoin_config",
        2,
        _record(("enable", 0, _enable("rejoin_config.enable")), ("max_count", 1, _u8)),
        False,
    ),
    (0x86, "data_rate", 1, _u8, False),
    (0x87, "tx_power_level", 1, _u8, False),
    (0x88, "log_level", 1, _LOG_LEVEL, False),
    (0x89, "log_level", 2, _skip_first(_LOG_LEVEL), False),  # the guide's layout: 00, level
    (0x8B, "lorawan_version", 1, _enum("lorawan_version", {1: "v1.0.2", 2: "v1.0.3"}), False),
    (0x8C, "rx2_data_rate", 1, _u8, False),
    (0x8D, "rx2_frequency", 4, _u32, False),
    (
        0x8E,
        "d2d_occupied_config",
        4,
        _record(
            ("region", 0, _u8_plus_1),
            ("enable", 1, _enable("d2d_occupied_config.enable")),
            ("command", 2, _d2d_command),
        ),
        False,
    ),
    (
        0x90,
        "d2d_vacant_config",
        6,
        _record(
            ("region", 0, _u8_plus_1),
            ("enable", 1, _enable("d2d_vacant_config.enable")),
            ("command", 2, _d2d_command),
            ("delay_time", 4, _u16),
        ),
        False,
    ),
    (
        0x91,
        "time_config",
        5,
        _record(
            ("mode", 0, _enum("time_config.mode", {0: "sync_from_gateway", 1: "manual"})),
            ("timestamp", 1, _u32),
        ),
        False,
    ),
    (
        0x92,
        "region_people_counting_dwell_config",
        3,
        _record(
            ("enable", 0, _enable("region_people_counting_dwell_config.enable")),
            ("min_dwell_time", 1, _u16),
        ),
        False,
    ),
    (0x93, "report_with_timestamp", 1, _enum("report_with_timestamp", _YES_NO), False),
    (0x94, "timed_reset_cumulative_enable", 1, _enable("timed_reset_cumulative_enable"), False),
    (
        0x95,
        "reset_cumulative_schedule",
        6,
        _record(
            (
                "mode",
                0,
                _enum("reset_cumulative_schedule.mode", {0: "modify", 1: "add", 2: "delete"}),
            ),
            ("index", 1, _u8_plus_1),
            ("week_cycle", 2, _week_cycle),
            ("time", 3, _u24),
        ),
        True,
    ),
    (
        0x96,
        "detect_region_config",
        3,
        _record(
            ("enable", 0, _enable("detect_region_config.enable")),
            (
                "detection_type",
                1,
                _enum(
                    "detect_region_config.detection_type",
                    {0: "mapped_region", 1: "unmapped_region"},
                ),
            ),
            (
                "reporting_type",
                2,
                _enum(
                    "detect_region_config.reporting_type",
                    {0: "occupancy", 1: "region_people_counting"},
                ),
            ),
        ),
        False,
    ),
    (
        0x97,
        "time_schedule_config",
        2,
        _record(
            ("enable", 0, _enable("time_schedule_config.enable")),
            (
                "people_counting_type",
                1,
                _enum("time_schedule_config.people_counting_type", _PEOPLE_COUNTING_TYPE),
            ),
        ),
        False,
    ),
    (0x98, "filter_u_turn_enable", 1, _enable("filter_u_turn_enable"), False),
    (
        0x99,
        "time_schedule",
        7,
        _record(
            (
                "people_counting_type",
                0,
                _enum("time_schedule.people_counting_type", _PEOPLE_COUNTING_TYPE),
            ),
            ("period", 1, _u8_plus_1),
            (
                "weekday",
                2,
                _enum(
                    "time_schedule.weekday",
                    dict(enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))),
                ),
            ),
            ("start_hour", 3, _u8),
            ("start_minute", 4, _u8),
            ("end_hour", 5, _u8),
            ("end_minute", 6, _u8),
        ),
        True,
    ),
)


def _where(buf: bytes, pos: int) -> str:
    return f"channel 0x{buf[pos - 2]:02x} 0x{buf[pos - 1]:02x} at byte {pos - 2}"


def _store(data: dict[str, Any], name: str, value: Any, as_list: bool) -> None:
    if not as_list:
        data[name] = value
    elif name in data:
        data[name].append(value)
    else:
        data[name] = [value]


def _setting(name: str, read: Reader, as_list: bool) -> Parser:
    """Parser for a reply that echoes a setting (channels 0xff, 0xfe, 0xf9)."""

    def parse(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
        odd: list[str] = []
        _store(data, name, read(buf, pos, odd), as_list)
        for note in odd:
            result["warnings"].append(f"{_where(buf, pos)}: {note}; decoded as 'unknown'")

    return parse


def _setting_with_result(name: str, size: int, read: Reader, as_list: bool) -> Parser:
    """Parser for a 0xf8 reply: the setting, then a result byte (0 = applied).

    A refused setting is not stored as the device's configuration: it becomes
    `device_response_result` = {channel_type, result, request}, as in the vendor codec.
    """

    def parse(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
        odd: list[str] = []
        value = read(buf, pos, odd)
        for note in odd:
            result["warnings"].append(f"{_where(buf, pos)}: {note}; decoded as 'unknown'")
        status = buf[pos + size]
        if status == 0:
            _store(data, name, value, as_list)
            return
        outcome = _RESULT.get(status, "unknown")
        data["device_response_result"] = {
            "channel_type": buf[pos - 1],
            "result": outcome,
            "request": {name: [value] if as_list else value},
        }
        result["warnings"].append(
            f"{_where(buf, pos)}: the device did not apply {name}: result 0x{status:02x} "
            f"({outcome})"
        )

    return parse


def _build() -> dict[int, tuple[int, Parser]]:
    table: dict[int, tuple[int, Parser]] = {}
    for kind, name, size, read, as_list in _GENERAL:
        for channel in (0xFF, 0xFE):
            table[channel << 8 | kind] = (size, _setting(name, read, as_list))
    for kind, name, size, read, as_list in _EXTENDED:
        table[0xF9 << 8 | kind] = (size, _setting(name, read, as_list))
        table[0xF8 << 8 | kind] = (size + 1, _setting_with_result(name, size, read, as_list))
    return table


# (channel << 8 | type) -> (data size, parser); merged into the uplink decoder's dispatch table.
RESPONSE_TABLE: Final[Mapping[int, tuple[int, Parser]]] = _build()


# The guide's narrower layouts of two settings, which is what the gateway's own encoder sends
# (ff 46 01 03; f9 95 01 00 7f b0 04); a device that echoes the guide's form must decode too.
# Same names and values as the vendor layout, so the two forms read alike.
_GUIDE_WIDTHS: Final[tuple[tuple[int, int, Parser], ...]] = (
    *(
        (
            channel << 8 | 0x46,
            2,
            _setting(
                "people_count_jitter_config",
                _record(
                    ("enable", 0, _enable("people_count_jitter_config.enable")), ("time", 1, _u8)
                ),
                False,
            ),
        )
        for channel in (0xFF, 0xFE)
    ),
)
_GUIDE_SCHEDULE: Final = _record(
    ("mode", 0, _enum("reset_cumulative_schedule.mode", {0: "modify", 1: "add", 2: "delete"})),
    ("index", 1, _u8_plus_1),
    ("week_cycle", 2, _week_cycle),
    ("time", 3, _u16),
)

# (channel << 8 | type) -> (data size, parser) of the other width of a setting whose width the
# guide and the vendor codec disagree on; the uplink decoder picks by the message's length.
ALTERNATE_WIDTHS: Final[Mapping[int, tuple[int, Parser]]] = {
    **{key: (size, parse) for key, size, parse in _GUIDE_WIDTHS},
    0xF995: (5, _setting("reset_cumulative_schedule", _GUIDE_SCHEDULE, True)),
    0xF895: (6, _setting_with_result("reset_cumulative_schedule", 5, _GUIDE_SCHEDULE, True)),
}
