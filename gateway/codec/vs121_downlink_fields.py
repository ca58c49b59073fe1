"""Field kinds of the VS121 downlink commands: how one field is checked, laid out in bytes and
shown in JSON.

Each command class in `vs121_downlink_commands` annotates its fields with one of these kinds,
e.g. `enable: Annotated[bool, FLAG]`; the `Command` base in `vs121_downlink_registry` reads them
to validate, encode, decode and convert to and from JSON. Multi-byte integers are little-endian
unless a kind says otherwise.
"""

from __future__ import annotations

import datetime as dt
import re
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Final, Literal

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


class FieldKind(ABC):
    """How one command field is checked (`accepts`), packed into `width` bytes and read back, and
    converted from and to its JSON form (`load`, `dump`)."""

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


class Flag(FieldKind):
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


class UInt(FieldKind):
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


class Choice(FieldKind):
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


class Clock(FieldKind):
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


class MinuteOfDay(Clock):
    """Minutes since midnight, 2 bytes (reset schedule: b0 04 = 1200 min = 20:00)."""

    width = 2

    def pack(self, value: dt.time) -> bytes:
        return (value.hour * 60 + value.minute).to_bytes(2, "little")

    def unpack(self, raw: bytes) -> dt.time:
        minutes = int.from_bytes(raw, "little")
        if minutes >= 24 * 60:
            raise ValueError(f"{minutes} minutes is past 23:59")
        return dt.time(minutes // 60, minutes % 60)


class HourMinute(Clock):
    """An hour byte then a minute byte (schedule: 08 00 = 08:00)."""

    width = 2

    def pack(self, value: dt.time) -> bytes:
        return bytes((value.hour, value.minute))

    def unpack(self, raw: bytes) -> dt.time:
        if raw[0] > 23 or raw[1] > 59:
            raise ValueError(f"hour {raw[0]} minute {raw[1]} is not a time of day")
        return dt.time(raw[0], raw[1])


class WeekdayBits(FieldKind):
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


class HexBytes(FieldKind):
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


class HexWord(FieldKind):
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


class ChannelBits(FieldKind):
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


# Kinds that many commands share.
FLAG: Final = Flag()
FEATURE: Final = Choice(_FEATURE_CODES)
"""A `Feature` as one byte: region people counting 00, line crossing 01, people flow analysis 02."""
