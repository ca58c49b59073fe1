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
(vendor: f9 88). Two-byte bitmaps are written as the guide's example reads them: channel mask
ff 00 in block 1 enables channels 8-15, i.e. the first byte holds the high bits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal, Self, TypeVar

from gateway.codec.result import DecodeResult, new_result
from gateway.errors import EncodeError

DOWNLINK_FPORT: Final = 85
"""The application port VS121 listens on for downlinks unless reconfigured (guide, chapter 7)."""

WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

Weekday = Literal["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
Feature = Literal["region_people_counting", "line_crossing_counting", "people_flow_analysis"]

_FEATURE_CODES: Final = {
    "region_people_counting": 0,
    "line_crossing_counting": 1,
    "people_flow_analysis": 2,
}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_HEX = re.compile(r"[0-9a-fA-F]*")


# --- field kinds: how one field is checked, laid out in bytes and shown in JSON -----------------


class _Field(ABC):
    width: int
    allowed: str  # completes "expected ..." in error messages

    @abstractmethod
    def accepts(self, value: object) -> bool: ...

    @abstractmethod
    def pack(self, value: Any) -> bytes: ...

    @abstractmethod
    def unpack(self, raw: bytes) -> Any:
        """The value `raw` stands for; ValueError when the bytes mean nothing."""

    def load(self, value: object) -> object:
        """The Python value for a JSON value (checked afterwards by `accepts`)."""
        return value

    def dump(self, value: Any) -> object:
        return value


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which Python also counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


class _Flag(_Field):
    width = 1
    allowed = "true or false"

    def accepts(self, value: object) -> bool:
        return isinstance(value, bool)

    def pack(self, value: bool) -> bytes:
        return bytes((int(value),))

    def unpack(self, raw: bytes) -> bool:
        if raw[0] > 1:
            raise ValueError(f"byte {raw[0]:02x} is neither 00 nor 01")
        return raw[0] == 1


class _UInt(_Field):
    """An unsigned little-endian integer; `bias` is added when reading (labels counted from 1)."""

    def __init__(self, width: int, low: int, high: int, bias: int = 0) -> None:
        self.width, self.low, self.high, self.bias = width, low, high, bias
        self.allowed = f"an integer {low}..{high}"

    def accepts(self, value: object) -> bool:
        return _is_int(value) and self.low <= typing.cast(int, value) <= self.high

    def pack(self, value: int) -> bytes:
        return (value - self.bias).to_bytes(self.width, "little")

    def unpack(self, raw: bytes) -> int:
        return int.from_bytes(raw, "little") + self.bias


class _Choice(_Field):
    """One byte standing for one of a few named (or numbered) values."""

    width = 1

    def __init__(self, codes: Mapping[str, int] | Mapping[int, int]) -> None:
        self.codes: dict[object, int] = dict(codes.items())
        self.names = {code: value for value, code in self.codes.items()}
        self.allowed = "one of " + ", ".join(repr(value) for value in self.codes)

    def accepts(self, value: object) -> bool:
        return isinstance(value, str | int) and not isinstance(value, bool) and value in self.codes

    def pack(self, value: object) -> bytes:
        return bytes((self.codes[value],))

    def unpack(self, raw: bytes) -> object:
        if raw[0] not in self.names:
            codes = ", ".join(f"{code:02x}" for code in sorted(self.names))
            raise ValueError(f"byte {raw[0]:02x} is not one of {codes}")
        return self.names[raw[0]]


class _Clock(_Field):
    """A time of day: "HH:MM" in JSON, `datetime.time` in Python."""

    allowed = 'a time of day "HH:MM", 00:00..23:59'

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, dt.time)
            and value.second == 0
            and value.microsecond == 0
            and value.tzinfo is None
        )

    def load(self, value: object) -> object:
        match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(value)
        return dt.time(int(match[1]), int(match[2]))

    def dump(self, value: dt.time) -> str:
        return f"{value.hour:02d}:{value.minute:02d}"


class _MinuteOfDay(_Clock):
    """Minutes since midnight, 2 bytes (reset schedule: b0 04 = 1200 min = 20:00)."""

    width = 2

    def pack(self, value: dt.time) -> bytes:
        return (value.hour * 60 + value.minute).to_bytes(2, "little")

    def unpack(self, raw: bytes) -> dt.time:
        minutes = int.from_bytes(raw, "little")
        if minutes >= 24 * 60:
            raise ValueError(f"{minutes} minutes is past 23:59")
        return dt.time(minutes // 60, minutes % 60)


class _HourMinute(_Clock):
    """An hour byte then a minute byte (schedule: 08 00 = 08:00)."""

    width = 2

    def pack(self, value: dt.time) -> bytes:
        return bytes((value.hour, value.minute))

    def unpack(self, raw: bytes) -> dt.time:
        if raw[0] > 23 or raw[1] > 59:
            raise ValueError(f"hour {raw[0]} minute {raw[1]} is not a time of day")
        return dt.time(raw[0], raw[1])


class _Weekdays(_Field):
    """A set of weekdays as one byte, bit 0 Sunday to bit 6 Saturday (7f: every day)."""

    width = 1
    allowed = '"everyday" or a list of ' + ", ".join(WEEKDAYS)

    def accepts(self, value: object) -> bool:
        return isinstance(value, frozenset) and value <= frozenset(WEEKDAYS)

    def load(self, value: object) -> object:
        if value == "everyday":
            return frozenset(WEEKDAYS)
        if not isinstance(value, list | tuple):
            raise ValueError(value)
        return frozenset(value)

    def dump(self, value: frozenset[str]) -> object:
        if len(value) == len(WEEKDAYS):
            return "everyday"
        return [day for day in WEEKDAYS if day in value]

    def pack(self, value: frozenset[str]) -> bytes:
        return bytes((sum(1 << bit for bit, day in enumerate(WEEKDAYS) if day in value),))

    def unpack(self, raw: bytes) -> frozenset[str]:
        if raw[0] & 0x80:
            raise ValueError(f"byte {raw[0]:02x} sets bit 7, which the guide keeps 0")
        return frozenset(day for bit, day in enumerate(WEEKDAYS) if raw[0] >> bit & 1)


class _HexBytes(_Field):
    """Raw bytes, written in JSON as hex digits (the D2D key)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.allowed = f"{2 * width} hex digits"

    def accepts(self, value: object) -> bool:
        return isinstance(value, bytes) and len(value) == self.width

    def load(self, value: object) -> object:
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise ValueError(value)
        return bytes.fromhex(value)

    def dump(self, value: bytes) -> str:
        return value.hex()

    def pack(self, value: bytes) -> bytes:
        return value

    def unpack(self, raw: bytes) -> bytes:
        return bytes(raw)


class _HexWord(_Field):
    """A 2-byte D2D control command: "1110" in JSON and the UI, sent little-endian as 10 11."""

    width = 2
    allowed = "4 hex digits, 0000..ffff"

    def accepts(self, value: object) -> bool:
        return _is_int(value) and 0 <= typing.cast(int, value) <= 0xFFFF

    def load(self, value: object) -> object:
        if not isinstance(value, str) or len(value) != 4 or not _HEX.fullmatch(value):
            raise ValueError(value)
        return int(value, 16)

    def dump(self, value: int) -> str:
        return f"{value:04x}"

    def pack(self, value: int) -> bytes:
        return value.to_bytes(2, "little")

    def unpack(self, raw: bytes) -> int:
        return int.from_bytes(raw, "little")


class _ChannelBits(_Field):
    """LoRaWAN channels: the value holds channel numbers 0..95, while `pack`/`unpack` see offsets
    0..15 within the command's block (see `ChannelMask`). The guide's ff 00 enables offsets 8-15."""

    width = 2
    allowed = "a list of channel numbers 0..95"

    def accepts(self, value: object) -> bool:
        return isinstance(value, frozenset) and all(
            _is_int(channel) and 0 <= channel <= 95 for channel in value
        )

    def load(self, value: object) -> object:
        if not isinstance(value, list | tuple):
            raise ValueError(value)
        return frozenset(value)

    def dump(self, value: frozenset[int]) -> list[int]:
        return sorted(value)

    def pack(self, value: frozenset[int]) -> bytes:
        return sum(1 << offset for offset in value).to_bytes(2, "big")

    def unpack(self, raw: bytes) -> frozenset[int]:
        mask = int.from_bytes(raw, "big")
        return frozenset(offset for offset in range(16) if mask >> offset & 1)


_FLAG: Final = _Flag()
_FEATURE: Final = _Choice(_FEATURE_CODES)


# --- the command base and registry ----------------------------------------------------------------


_FIELDS: dict[type[Command], tuple[tuple[str, _Field], ...]] = {}
_BY_NAME: dict[str, type[Command]] = {}
_BY_HEADER: dict[bytes, type[Command]] = {}
COMMANDS: Final[Mapping[str, type[Command]]] = MappingProxyType(_BY_NAME)
"""Every command class by its JSON name (read-only)."""


def _not_allowed(command: str, field: str, value: object, kind: _Field) -> str:
    return f"{command}.{field}: {value!r} is not allowed; expected {kind.allowed}"


@dataclass(frozen=True, kw_only=True)
class Command:
    """One downlink command. Subclasses declare `NAME`, `HEADER` (channel and type bytes), any
    constant data bytes the guide puts first (`FIXED`), and fields annotated with their kind,
    in the order the guide lays them out."""

    NAME: ClassVar[str]
    HEADER: ClassVar[bytes]
    FIXED: ClassVar[bytes] = b""

    def __post_init__(self) -> None:
        if type(self) not in _FIELDS:
            raise TypeError(f"{type(self).__name__} is not a registered command")
        for name, kind in _FIELDS[type(self)]:
            value = getattr(self, name)
            if not kind.accepts(value):
                raise EncodeError(_not_allowed(self.NAME, name, value, kind))
        self._check()

    def _check(self) -> None:
        """Rules that tie fields together; raise EncodeError."""

    def encode(self) -> bytes:
        packed = self._packed()
        fields = _FIELDS[type(self)]
        return self.HEADER + self.FIXED + b"".join(kind.pack(packed[n]) for n, kind in fields)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"command": self.NAME}
        for name, kind in _FIELDS[type(self)]:
            obj[name] = kind.dump(getattr(self, name))
        return obj

    @classmethod
    def data_size(cls) -> int:
        """Data bytes after the channel and type."""
        return len(cls.FIXED) + sum(kind.width for _, kind in _FIELDS[cls])

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Self:
        if obj.get("command", cls.NAME) != cls.NAME:
            raise EncodeError(f"{cls.NAME}: got an object for command {obj['command']!r}")
        fields = _FIELDS[cls]
        names = [name for name, _ in fields]
        given = {key: value for key, value in obj.items() if key != "command"}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise EncodeError(
                f"{cls.NAME}: unknown field {', '.join(unknown)}; allowed: "
                f"{', '.join(names) or 'none'}"
            )
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in given]
        if missing:
            raise EncodeError(
                f"{cls.NAME}: missing field {', '.join(missing)}; required: {', '.join(required)}"
            )
        kwargs: dict[str, Any] = {}
        for name, kind in fields:
            if name in given:
                try:
                    kwargs[name] = kind.load(given[name])
                except (ValueError, TypeError):
                    raise EncodeError(_not_allowed(cls.NAME, name, given[name], kind)) from None
        return cls(**kwargs)

    @classmethod
    def from_data(cls, data: bytes) -> Self:
        """The command whose data bytes (after channel and type) are `data`.

        Raises ValueError for bytes that mean nothing, EncodeError for a value out of range."""
        if len(data) != cls.data_size():
            raise ValueError(f"{cls.NAME} has {cls.data_size()} data bytes, not {len(data)}")
        if data[: len(cls.FIXED)] != cls.FIXED:
            got = data[: len(cls.FIXED)].hex()
            raise ValueError(f"{cls.NAME}: expected {cls.FIXED.hex()}, got {got}")
        pos = len(cls.FIXED)
        values: dict[str, Any] = {}
        for name, kind in _FIELDS[cls]:
            try:
                values[name] = kind.unpack(data[pos : pos + kind.width])
            except ValueError as exc:
                raise ValueError(f"{cls.NAME}.{name}: {exc}") from None
            pos += kind.width
        return cls._from_packed(values)

    def _packed(self) -> dict[str, Any]:
        """Field values as the bytes hold them (overridden where they differ from the fields)."""
        return {name: getattr(self, name) for name, _ in _FIELDS[type(self)]}

    @classmethod
    def _from_packed(cls, values: dict[str, Any]) -> Self:
        return cls(**values)


_C = TypeVar("_C", bound=Command)


def _register(cls: type[_C]) -> type[_C]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: list[tuple[str, _Field]] = []
    for field in dataclasses.fields(cls):
        kinds = [m for m in getattr(hints[field.name], "__metadata__", ()) if isinstance(m, _Field)]
        if len(kinds) != 1:
            raise TypeError(f"{cls.__name__}.{field.name} needs one field kind in Annotated[...]")
        fields.append((field.name, kinds[0]))
    if cls.NAME in _BY_NAME or cls.HEADER in _BY_HEADER or len(cls.HEADER) != 2:
        raise TypeError(f"{cls.__name__}: duplicate name or bad header")
    _FIELDS[cls] = tuple(fields)
    _BY_NAME[cls.NAME] = cls
    _BY_HEADER[cls.HEADER] = cls
    return cls


# --- general settings -----------------------------------------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class Reboot(Command):
    """Restart the device (ff 10 ff)."""

    NAME = "reboot"
    HEADER = b"\xff\x10"
    FIXED = b"\xff"


@_register
@dataclass(frozen=True, kw_only=True)
class Wifi(Command):
    """Switch the device's Wi-Fi access point (used for its web setup) on or off (ff 42)."""

    NAME = "wifi"
    HEADER = b"\xff\x42"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class SystemTime(Command):
    """Set the device clock to a unix time in seconds (ff 11)."""

    NAME = "system_time"
    HEADER = b"\xff\x11"
    timestamp: Annotated[int, _UInt(4, 0, 0xFFFF_FFFF)]


@_register
@dataclass(frozen=True, kw_only=True)
class TimeSync(Command):
    """Take the time from the gateway, or set it by hand (f9 91); gateway mode sends timestamp 0."""

    NAME = "time_sync"
    HEADER = b"\xf9\x91"
    mode: Annotated[Literal["gateway", "manual"], _Choice({"gateway": 0, "manual": 1})]
    timestamp: Annotated[int, _UInt(4, 0, 0xFFFF_FFFF)] = 0

    def _check(self) -> None:
        if self.mode == "gateway" and self.timestamp != 0:
            raise EncodeError(
                f"time_sync.timestamp: {self.timestamp!r} is not allowed; expected 0 (or no "
                "timestamp) when mode is 'gateway'"
            )
        if self.mode == "manual" and self.timestamp == 0:
            raise EncodeError("time_sync.timestamp: manual mode needs a unix time above 0")


@_register
@dataclass(frozen=True, kw_only=True)
class DebugLog(Command):
    """Choose the level of the device's downloadable log (f9 89 00 <level>)."""

    NAME = "debug_log"
    HEADER = b"\xf9\x89"
    FIXED = b"\x00"
    level: Annotated[Literal["error", "debug"], _Choice({"error": 2, "debug": 4})]


# --- reset settings -------------------------------------------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class ResetCumulativeCount(Command):
    """Zero the accumulated counts now (ff 51 ff)."""

    NAME = "reset_cumulative_count"
    HEADER = b"\xff\x51"
    FIXED = b"\xff"


@_register
@dataclass(frozen=True, kw_only=True)
class ResetScheduleEnable(Command):
    """Turn resetting the accumulated counts on a schedule on or off (f9 94)."""

    NAME = "reset_schedule_enable"
    HEADER = b"\xf9\x94"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class ResetSchedule(Command):
    """Modify, add or delete one of the device's 5 reset schedules (f9 95).

    `index` 0 is the first schedule. A delete needs only the index; days and time default to none
    and 00:00. Example from the guide: add, index 0, every day, 20:00 -> f9 95 01 00 7f b0 04.
    """

    NAME = "reset_schedule"
    HEADER = b"\xf9\x95"
    action: Annotated[
        Literal["modify", "add", "delete"], _Choice({"modify": 0, "add": 1, "delete": 2})
    ]
    index: Annotated[int, _UInt(1, 0, 4)]
    days: Annotated[frozenset[Weekday], _Weekdays()] = frozenset()
    time: Annotated[dt.time, _MinuteOfDay()] = dt.time(0, 0)

    def _check(self) -> None:
        if self.action != "delete" and not self.days:
            raise EncodeError(
                f"reset_schedule.days: an empty set is not allowed when action is "
                f"{self.action!r}; expected {_Weekdays.allowed}"
            )


# --- people counting settings ---------------------------------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class RegionPeopleCounting(Command):
    """Turn region people counting on or off (ff 50)."""

    NAME = "region_people_counting"
    HEADER = b"\xff\x50"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class DetectionRegion(Command):
    """Count inside (mapped) or outside (non-mapped) the drawn regions, and report occupancy or
    per-region counts (f9 96)."""

    NAME = "detection_region"
    HEADER = b"\xf9\x96"
    enable: Annotated[bool, _FLAG]
    area: Annotated[Literal["mapped", "non_mapped"], _Choice({"mapped": 0, "non_mapped": 1})]
    reporting_type: Annotated[
        Literal["occupancy", "region_people_counting"],
        _Choice({"occupancy": 0, "region_people_counting": 1}),
    ]


@_register
@dataclass(frozen=True, kw_only=True)
class MinDwellTime(Command):
    """Dwell time detection and its minimum dwell time in seconds, default 5 (f9 92). The guide
    gives no range, so any 16-bit value is sent."""

    NAME = "min_dwell_time"
    HEADER = b"\xf9\x92"
    enable: Annotated[bool, _FLAG]
    seconds: Annotated[int, _UInt(2, 0, 0xFFFF)] = 5


@_register
@dataclass(frozen=True, kw_only=True)
class LineCrossingCounting(Command):
    """Turn line crossing counting on or off (ff 48)."""

    NAME = "line_crossing_counting"
    HEADER = b"\xff\x48"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class FilterUTurns(Command):
    """Ignore people who turn back at the counting line (f9 98)."""

    NAME = "filter_u_turns"
    HEADER = b"\xf9\x98"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class ScheduleEnable(Command):
    """Turn the weekly working schedule of one feature on or off (f9 97)."""

    NAME = "schedule_enable"
    HEADER = b"\xf9\x97"
    feature: Annotated[Feature, _FEATURE]
    enable: Annotated[bool, _FLAG]


# --- report settings ------------------------------------------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class ReportingInterval(Command):
    """Periodic report interval in seconds for the "from now on" scheme (ff 03)."""

    NAME = "reporting_interval"
    HEADER = b"\xff\x03"
    seconds: Annotated[int, _UInt(2, 5, 0xFFFF)]


@_register
@dataclass(frozen=True, kw_only=True)
class PeriodicReportScheme(Command):
    """Report on the clock's round times, or every interval from now on (f9 10)."""

    NAME = "periodic_report_scheme"
    HEADER = b"\xf9\x10"
    scheme: Annotated[
        Literal["on_the_dot", "from_now_on"], _Choice({"on_the_dot": 0, "from_now_on": 1})
    ]


@_register
@dataclass(frozen=True, kw_only=True)
class OnTheDotInterval(Command):
    """Report interval in minutes for the "on the dot" scheme (f9 11)."""

    NAME = "on_the_dot_interval"
    HEADER = b"\xf9\x11"
    minutes: Annotated[
        Literal[5, 10, 15, 30, 60, 240, 360, 480, 720],
        _Choice({m: code for code, m in enumerate((5, 10, 15, 30, 60, 240, 360, 480, 720))}),
    ]


@_register
@dataclass(frozen=True, kw_only=True)
class ReportByResultMode(Command):
    """Report by result when a count goes between zero and non-zero, or on every change (ff 45)."""

    NAME = "report_by_result_mode"
    HEADER = b"\xff\x45"
    mode: Annotated[
        Literal["zero_non_zero", "on_change"], _Choice({"zero_non_zero": 0, "on_change": 1})
    ]


@_register
@dataclass(frozen=True, kw_only=True)
class Debounce(Command):
    """Lower a count only after people stay out this many seconds, default 2 (ff 46). The guide
    sends one byte (ff 46 01 03: enabled, 3 s); 1..60 s is the vendor encoder's range."""

    NAME = "debounce"
    HEADER = b"\xff\x46"
    enable: Annotated[bool, _FLAG]
    seconds: Annotated[int, _UInt(1, 1, 60)] = 2


@_register
@dataclass(frozen=True, kw_only=True)
class TriggerReport(Command):
    """Report line crossings as they happen (f9 3d)."""

    NAME = "trigger_report"
    HEADER = b"\xf9\x3d"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class ReportWithTimestamp(Command):
    """Add a timestamp to reports (f9 93)."""

    NAME = "report_with_timestamp"
    HEADER = b"\xf9\x93"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class RegionReportRegularly(Command):
    """Send region people counting reports periodically (ff 43)."""

    NAME = "region_report_regularly"
    HEADER = b"\xff\x43"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class RegionReportByResult(Command):
    """Send region people counting reports when the result changes (ff 44)."""

    NAME = "region_report_by_result"
    HEADER = b"\xff\x44"
    enable: Annotated[bool, _FLAG]


# --- schedule -------------------------------------------------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class Schedule(Command):
    """One of three daily working periods of a feature on one weekday (f9 99).

    Example from the guide: region people counting, Sunday, period 1, 08:00-09:00 ->
    f9 99 00 00 00 08 00 09 00.
    """

    NAME = "schedule"
    HEADER = b"\xf9\x99"
    feature: Annotated[Feature, _FEATURE]
    weekday: Annotated[Weekday, _Choice({day: bit for bit, day in enumerate(WEEKDAYS)})]
    period: Annotated[int, _UInt(1, 1, 3, bias=1)]
    start: Annotated[dt.time, _HourMinute()]
    end: Annotated[dt.time, _HourMinute()]


# --- LoRaWAN settings (each makes the device rejoin) ----------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class ChannelMask(Command):
    """Which of the 16 uplink channels of one block are enabled (ff 05). Block 1 holds channels
    0-15, block 2 16-31, ... block 6 80-95; `channels` lists enabled channel numbers of that block.
    Example from the guide: block 1, channels 8-15 -> ff 05 01 ff 00."""

    NAME = "channel_mask"
    HEADER = b"\xff\x05"
    block: Annotated[int, _UInt(1, 1, 6)]
    channels: Annotated[frozenset[int], _ChannelBits()]

    def _check(self) -> None:
        first = (self.block - 1) * 16
        outside = sorted(c for c in self.channels if not first <= c < first + 16)
        if outside:
            raise EncodeError(
                f"channel_mask.channels: {outside!r} is not allowed; expected channels "
                f"{first}..{first + 15} for block {self.block}"
            )

    def _packed(self) -> dict[str, Any]:
        first = (self.block - 1) * 16
        return {"block": self.block, "channels": frozenset(c - first for c in self.channels)}

    @classmethod
    def _from_packed(cls, values: dict[str, Any]) -> Self:
        first = (values["block"] - 1) * 16
        offsets: frozenset[int] = values["channels"]
        return cls(block=values["block"], channels=frozenset(first + o for o in offsets))


@_register
@dataclass(frozen=True, kw_only=True)
class Adr(Command):
    """Adaptive data rate on or off (ff 40)."""

    NAME = "adr"
    HEADER = b"\xff\x40"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class ApplicationPort(Command):
    """The LoRaWAN port the device uses, default 85 (ff 41)."""

    NAME = "application_port"
    HEADER = b"\xff\x41"
    port: Annotated[int, _UInt(1, 1, 223)]


@_register
@dataclass(frozen=True, kw_only=True)
class Rejoin(Command):
    """Rejoin when this many LinkCheckReq messages go unanswered (f9 85)."""

    NAME = "rejoin"
    HEADER = b"\xf9\x85"
    enable: Annotated[bool, _FLAG]
    retries: Annotated[int, _UInt(1, 4, 32)]


@_register
@dataclass(frozen=True, kw_only=True)
class ConfirmedMode(Command):
    """Send confirmed uplinks (ff 04)."""

    NAME = "confirmed_mode"
    HEADER = b"\xff\x04"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class SpreadingFactor(Command):
    """Uplink spreading factor when ADR is off (f9 86): SF12 is byte 00, SF7 byte 05."""

    NAME = "spreading_factor"
    HEADER = b"\xf9\x86"
    sf: Annotated[Literal[7, 8, 9, 10, 11, 12], _Choice({sf: 12 - sf for sf in range(12, 6, -1)})]


@_register
@dataclass(frozen=True, kw_only=True)
class TxPower(Command):
    """Transmit power level, an index into the region's power table (f9 87)."""

    NAME = "tx_power"
    HEADER = b"\xf9\x87"
    level: Annotated[int, _UInt(1, 0, 14)]


@_register
@dataclass(frozen=True, kw_only=True)
class LorawanVersion(Command):
    """LoRaWAN MAC version (f9 8b)."""

    NAME = "lorawan_version"
    HEADER = b"\xf9\x8b"
    version: Annotated[Literal["1.0.2", "1.0.3"], _Choice({"1.0.2": 1, "1.0.3": 2})]


@_register
@dataclass(frozen=True, kw_only=True)
class Rx2DataRate(Command):
    """RX2 data rate DR0 (SF12) .. DR5 (SF7), all 125 kHz (f9 8c)."""

    NAME = "rx2_data_rate"
    HEADER = b"\xf9\x8c"
    data_rate: Annotated[int, _UInt(1, 0, 5)]


@_register
@dataclass(frozen=True, kw_only=True)
class Rx2Frequency(Command):
    """RX2 frequency in Hz (f9 8d). The guide gives no range; 100 MHz..1 GHz spans every LoRaWAN
    region and catches a value given in MHz or kHz."""

    NAME = "rx2_frequency"
    HEADER = b"\xf9\x8d"
    frequency_hz: Annotated[int, _UInt(4, 100_000_000, 1_000_000_000)]


# --- Milesight D2D settings -----------------------------------------------------------------------


@_register
@dataclass(frozen=True, kw_only=True)
class D2d(Command):
    """Milesight device-to-device control on or off (ff 84)."""

    NAME = "d2d"
    HEADER = b"\xff\x84"
    enable: Annotated[bool, _FLAG]


@_register
@dataclass(frozen=True, kw_only=True)
class D2dKey(Command):
    """The first 16 hex digits of the D2D key; the device fixes the last 16 as 0 (ff 35)."""

    NAME = "d2d_key"
    HEADER = b"\xff\x35"
    key: Annotated[bytes, _HexBytes(8)]


_REGION: Final = _UInt(1, 1, 16, bias=1)


@_register
@dataclass(frozen=True, kw_only=True)
class D2dOccupied(Command):
    """The D2D command a region sends when it becomes occupied (f9 8e)."""

    NAME = "d2d_occupied"
    HEADER = b"\xf9\x8e"
    region: Annotated[int, _REGION]
    enable: Annotated[bool, _FLAG]
    control_command: Annotated[int, _HexWord()]


@_register
@dataclass(frozen=True, kw_only=True)
class D2dVacant(Command):
    """The D2D command a region sends once it has stayed vacant for the delay (f9 90)."""

    NAME = "d2d_vacant"
    HEADER = b"\xf9\x90"
    region: Annotated[int, _REGION]
    enable: Annotated[bool, _FLAG]
    control_command: Annotated[int, _HexWord()]
    delay_seconds: Annotated[int, _UInt(2, 0, 600)]


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
        cls = _BY_HEADER.get(header)
        if cls is None:
            result["errors"].append(f"{where}: not a VS121 downlink command")
            break
        size = cls.data_size()
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
