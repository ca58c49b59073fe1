"""VS121 LoRaWAN uplink decoder (user guide, chapter 7 "Communication Protocol").

An uplink is a run of `channel(1) type(1) data(N)` items, values little-endian. Every item is looked
up in one dispatch table keyed by the 2-byte channel/type, which gives its data size and its parser;
the history item (20 ce) has a size set by its type byte and is handled by its own table. Device
replies to configuration downlinks (channels ff/fe/f9/f8) come from `vs121_responses`.

Rules (see tests/data/README.md and the shared vectors README):
- An unknown channel/type, an unknown history type or a cut item stops decoding with an error that
  names the channel (hex) and the byte offset; everything decoded before it is kept and nothing is
  made up from the cut item (no partial field, no empty history record).
- A repeated item: the last one wins (history records append).
- Occupancy: the bitmap's two bytes read big-endian, bit i = region i+1 ("00 a1" -> regions 1, 6,
  8); region_1..region_min(region_count, 16) are 0/1. A region_count above 16 or a bit set beyond
  region_count is out of spec: decoded, with a warning.
- 05 cc (people in/out this period) is unsigned, as the guide says (the vendor codec reads it
  signed).
- The application port is configurable on the device (ff 41), so any fPort 1..255 is decoded;
  fPort 0 carries MAC commands and is an error.
- Never raises: every fault becomes an entry in `errors`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from gateway.codec.result import DecodeResult, new_result
from gateway.codec.vs121_responses import ALTERNATE_WIDTHS, RESPONSE_TABLE, Parser

__all__ = ["APPLICATION_FPORT", "decode_hex", "decode_uplink"]

APPLICATION_FPORT: Final = 85  # the device's default; configurable with the ff 41 downlink

_HISTORY: Final = 0x20CE  # the one item whose size is set by its content (its type byte)
_HISTORY_HEADER: Final = 5  # uint32 timestamp + type byte

_REGION_KEYS: Final = tuple(f"region_{n}" for n in range(1, 17))
_REGION_PREFIX: Final = tuple(_REGION_KEYS[:m] for m in range(17))
# The 8 occupancy bits of one bitmap byte, lowest bit first.
_BYTE_BITS: Final = tuple(tuple(b >> k & 1 for k in range(8)) for b in range(256))

_FLOW_KEYS: Final = tuple(f"{src}_to_{dst}" for src in "abcd" for dst in "abcd")
_COUNT_KEYS: Final = tuple(f"region_{n}_count" for n in range(1, 17))


def _where(buf: bytes, at: int) -> str:
    return f"channel 0x{buf[at]:02x} 0x{buf[at + 1]:02x} at byte {at}"


def _fields(keys: tuple[str, ...], fmt: str) -> tuple[int, Parser]:
    """Table entry for an item that is just fixed little-endian fields, one key each.

    The common widths get a parser that assigns by tuple unpacking: twice as fast as
    dict.update(zip(...)), and this is the hot path.
    """
    layout = struct.Struct("<" + fmt)
    unpack = layout.unpack_from
    if len(keys) != len(layout.unpack(bytes(layout.size))):
        raise AssertionError(f"{keys} do not match {fmt}")  # a table typo, caught at import

    if len(keys) == 2:
        k0, k1 = keys

        def parse(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
            data[k0], data[k1] = unpack(buf, pos)

    elif len(keys) == 3:
        k0, k1, k2 = keys

        def parse(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
            data[k0], data[k1], data[k2] = unpack(buf, pos)

    elif len(keys) == 4:
        k0, k1, k2, k3 = keys

        def parse(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
            data[k0], data[k1], data[k2], data[k3] = unpack(buf, pos)

    else:

        def parse(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
            data.update(zip(keys, unpack(buf, pos), strict=False))  # lengths checked above

    return layout.size, parse


def _one(key: str, fmt: str) -> tuple[int, Parser]:
    """Table entry for an item holding one value."""
    layout = struct.Struct("<" + fmt)
    unpack = layout.unpack_from

    def parse(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
        data[key] = unpack(buf, pos)[0]

    return layout.size, parse


def _put_occupancy(
    buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult, at: int
) -> None:
    """people_count_all, region_count, bitmap (2 bytes, big-endian, bit i = region i+1)."""
    count = buf[pos + 1]
    high = buf[pos + 2]
    low = buf[pos + 3]
    if "region_count" in data:  # a repeated occupancy item replaces the earlier one whole
        for key in _REGION_KEYS:
            data.pop(key, None)
    data["people_count_all"] = buf[pos]
    data["region_count"] = count
    if count <= 8:
        data.update(zip(_REGION_PREFIX[count], _BYTE_BITS[low], strict=False))
    else:  # zip stops at the last mapped region
        bits = _BYTE_BITS[low] + _BYTE_BITS[high]
        data.update(zip(_REGION_PREFIX[min(count, 16)], bits, strict=False))
    if count > 16:
        result["warnings"].append(
            f"{_where(buf, at)}: region_count {count} is above 16, the most the guide defines; "
            "only region_1..region_16 decoded"
        )
    elif (high << 8 | low) >> count:
        result["warnings"].append(
            f"{_where(buf, at)}: occupancy bits set beyond region_count {count} "
            f"(bitmap 0x{high:02x}{low:02x}); ignored"
        )


def _occupancy(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
    _put_occupancy(buf, pos, data, result, pos - 2)


def _history_occupancy(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
    _put_occupancy(buf, pos, data, result, pos - 2 - _HISTORY_HEADER)


def _sn(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
    data["sn"] = buf[pos : pos + 6].hex()


def _hardware_version(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
    data["hardware_version"] = f"{buf[pos]}.{buf[pos + 1]}"  # 01 00 -> "1.0"


def _firmware_version(buf: bytes, pos: int, data: dict[str, Any], result: DecodeResult) -> None:
    data["firmware_version"] = f"{buf[pos]}.{buf[pos + 1]}.{buf[pos + 2]}.{buf[pos + 3]}"


_IN_OUT: Final = ("people_in", "people_out")
_TOTAL_IN_OUT: Final = ("people_total_in", "people_total_out")
_LINE_IN_OUT: Final = ("line_in", "line_out")
_DWELL: Final = ("dwell_time_region", "dwell_time_avg", "dwell_time_max")

# (channel << 8 | type) -> (data size, parser). Sizes are the guide's.
_TELEMETRY: Final[dict[int, tuple[int, Parser]]] = {
    0xFF01: _one("protocol_version", "B"),
    0xFF08: (6, _sn),
    0xFF09: (2, _hardware_version),
    0xFF1F: (4, _firmware_version),
    0x04C9: (4, _occupancy),
    0x05CC: _fields(_IN_OUT, "HH"),  # unsigned, as the guide says
    0x06CD: _one("people_count_max", "B"),
    0x07D5: _fields(_COUNT_KEYS[:8], "8B"),
    0x08D5: _fields(_COUNT_KEYS[8:], "8B"),
    0x09DA: _fields(_FLOW_KEYS[0:4], "4H"),
    0x0ADA: _fields(_FLOW_KEYS[4:8], "4H"),
    0x0BDA: _fields(_FLOW_KEYS[8:12], "4H"),
    0x0CDA: _fields(_FLOW_KEYS[12:16], "4H"),
    0x0DCC: _fields(_TOTAL_IN_OUT, "HH"),
    0x0EE4: _fields(_DWELL, "BHH"),  # region byte (00 = all regions), average, maximum (s)
    0x0F85: _one("timestamp", "I"),
    0x10F7: _fields(_LINE_IN_OUT, "HH"),
}

# History record type -> (data size, parser); the record is the matching periodic item's fields.
_HISTORY_TYPES: Final[Mapping[int, tuple[int, Parser]]] = {
    0x01: (4, _history_occupancy),
    0x02: _fields(_IN_OUT, "HH"),
    0x03: _one("people_count_max", "B"),
    0x04: _fields(_COUNT_KEYS[0:4], "4B"),
    0x05: _fields(_COUNT_KEYS[4:8], "4B"),
    0x06: _fields(_COUNT_KEYS[8:12], "4B"),
    0x07: _fields(_COUNT_KEYS[12:16], "4B"),
    **{0x08 + k: _fields(_FLOW_KEYS[2 * k : 2 * k + 2], "HH") for k in range(8)},
    0x10: _fields(_TOTAL_IN_OUT, "HH"),
    0x11: _fields(_DWELL, "BHH"),
    0x12: _fields(_LINE_IN_OUT, "HH"),
}

_TABLE: Final[Mapping[int, tuple[int, Parser]]] = {**RESPONSE_TABLE, **_TELEMETRY}
_KNOWN: Final = frozenset(_TABLE) | {_HISTORY}
if set(RESPONSE_TABLE) & set(_TELEMETRY) or _HISTORY in _TABLE:
    raise AssertionError("two dispatch entries share a channel/type")  # caught at import

_U32: Final = struct.Struct("<I").unpack_from


def _history(buf: bytes, at: int, data: dict[str, Any], result: DecodeResult) -> int:
    """Reads the history item at `at`; returns the offset after it, or -1 after an error."""
    pos = at + 2
    left = len(buf) - pos
    if left < _HISTORY_HEADER:
        result["errors"].append(
            f"{_where(buf, at)}: cut short: a history record needs {_HISTORY_HEADER} header bytes "
            f"(timestamp, type), only {left} left; decoding stopped"
        )
        return -1
    kind = buf[pos + 4]
    entry = _HISTORY_TYPES.get(kind)
    if entry is None:
        result["errors"].append(
            f"{_where(buf, at)}: unknown history data type 0x{kind:02x} at byte {pos + 4}; "
            "decoding stopped"
        )
        return -1
    size, parse = entry
    left -= _HISTORY_HEADER
    if left < size:
        result["errors"].append(
            f"{_where(buf, at)}: cut short: history type 0x{kind:02x} needs {size} data bytes, "
            f"only {left} left; decoding stopped"
        )
        return -1
    record: dict[str, Any] = {"timestamp": _U32(buf, pos)[0]}
    parse(buf, pos + _HISTORY_HEADER, record, result)
    if "history" in data:
        data["history"].append(record)
    else:
        data["history"] = [record]
    return pos + _HISTORY_HEADER + size


def _pick_width(
    buf: bytes, at: int, vendor: tuple[int, Parser], guide: tuple[int, Parser]
) -> tuple[int, Parser]:
    """The width of a setting the guide and the vendor codec size differently, by length.

    The one that ends the message wins; else the one followed by a known channel; else (both
    or neither) the vendor codec's, as before.
    """
    end = len(buf)
    fitting = []
    for width in (vendor, guide):
        after = at + 2 + width[0]
        if after == end:
            return width
        if after + 1 < end and (buf[after] << 8 | buf[after + 1]) in _KNOWN:
            fitting.append(width)
    return fitting[0] if len(fitting) == 1 else vendor


def _reject(result: DecodeResult, message: str) -> DecodeResult:
    result["errors"].append(message)
    return result


def decode_uplink(
    payload: bytes | bytearray | memoryview, fport: int = APPLICATION_FPORT
) -> DecodeResult:
    """Decodes one VS121 uplink into {"data", "warnings", "errors"}; never raises."""
    data: dict[str, Any] = {}
    result: DecodeResult = {"data": data, "warnings": [], "errors": []}
    if fport.__class__ is not int or not 0 < fport < 256:
        if fport.__class__ is int and fport == 0:
            return _reject(result, "fPort 0 carries LoRaWAN MAC commands, not sensor data")
        return _reject(result, f"fPort {fport!r} is not a LoRaWAN application port (1..255)")
    if isinstance(payload, bytes):
        buf = payload
    elif isinstance(payload, bytearray | memoryview):
        try:
            buf = bytes(payload)
        except (TypeError, ValueError, BufferError) as exc:  # e.g. a released memoryview
            return _reject(result, f"payload cannot be read as bytes: {exc}")
    else:
        return _reject(result, f"payload must be bytes, not {type(payload).__name__}")
    end = len(buf)
    if not end:
        result["warnings"].append("empty payload: nothing to decode")
        return result
    table_get = _TABLE.get
    at = 0
    while at < end:
        if at + 1 == end:
            result["errors"].append(
                f"channel 0x{buf[at]:02x} at byte {at}: cut short: no type byte; decoding stopped"
            )
            break
        key = buf[at] << 8 | buf[at + 1]
        if key == _HISTORY:
            at = _history(buf, at, data, result)
            if at < 0:
                break
            continue
        entry = table_get(key)
        if entry is None:
            result["errors"].append(f"unknown {_where(buf, at)}; decoding stopped")
            break
        size, parse = entry
        if key in ALTERNATE_WIDTHS:
            size, parse = _pick_width(buf, at, entry, ALTERNATE_WIDTHS[key])
        after = at + 2 + size
        if after > end:
            result["errors"].append(
                f"{_where(buf, at)}: cut short: needs {size} data "
                f"byte{'s' if size > 1 else ''}, only {end - at - 2} left; decoding stopped"
            )
            break
        parse(buf, at + 2, data, result)
        at = after
    return result


def decode_hex(text: str, fport: int = APPLICATION_FPORT) -> DecodeResult:
    """decode_uplink() for a hex string (whitespace between bytes allowed); reports bad hex."""
    try:
        payload = bytes.fromhex(text)
    except (TypeError, ValueError) as exc:
        result = new_result()
        result["errors"].append(f"payload is not hex: {exc}")
        return result
    return decode_uplink(payload, fport)
