"""Properties of the VS121 uplink decoder, checked with hypothesis.

- It never raises, whatever the bytes and the fPort, and always returns the codec shape.
- Telemetry built from random values by an encoder written here from the guide's tables decodes to
  exactly those values (last item wins, history appends).
- Cutting such a payload anywhere keeps exactly the items before the cut, reports an error when the
  cut falls inside an item, and invents nothing.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.vs121_uplink import decode_uplink

SETTINGS = settings(max_examples=300, deadline=None)

# One encoded item: its bytes, the fields it decodes to, and whether it is a history record.
Item = tuple[bytes, dict[str, Any], bool]

_WIDTH = {"B": st.integers(0, 0xFF), "H": st.integers(0, 0xFFFF), "I": st.integers(0, 0xFFFFFFFF)}
_COUNTS = [f"region_{n}_count" for n in range(1, 17)]
_FLOWS = [f"{a}_to_{b}" for a in "abcd" for b in "abcd"]
_REGIONS = {f"region_{n}" for n in range(1, 17)}

# The guide's periodic/trigger items that are plain little-endian fields: header -> (key, format).
_PLAIN: dict[bytes, list[tuple[str, str]]] = {
    b"\xff\x01": [("protocol_version", "B")],
    b"\x05\xcc": [("people_in", "H"), ("people_out", "H")],
    b"\x06\xcd": [("people_count_max", "B")],
    b"\x07\xd5": [(key, "B") for key in _COUNTS[:8]],
    b"\x08\xd5": [(key, "B") for key in _COUNTS[8:]],
    b"\x09\xda": [(key, "H") for key in _FLOWS[0:4]],
    b"\x0a\xda": [(key, "H") for key in _FLOWS[4:8]],
    b"\x0b\xda": [(key, "H") for key in _FLOWS[8:12]],
    b"\x0c\xda": [(key, "H") for key in _FLOWS[12:16]],
    b"\x0d\xcc": [("people_total_in", "H"), ("people_total_out", "H")],
    b"\x0e\xe4": [("dwell_time_region", "B"), ("dwell_time_avg", "H"), ("dwell_time_max", "H")],
    b"\x0f\x85": [("timestamp", "I")],
    b"\x10\xf7": [("line_in", "H"), ("line_out", "H")],
}
# The guide's history data types 02..12 (01 is the occupancy item): type -> (key, format).
_HISTORY_PLAIN: dict[int, list[tuple[str, str]]] = {
    0x02: _PLAIN[b"\x05\xcc"],
    0x03: _PLAIN[b"\x06\xcd"],
    **{0x04 + k: [(key, "B") for key in _COUNTS[4 * k : 4 * k + 4]] for k in range(4)},
    **{0x08 + k: [(key, "H") for key in _FLOWS[2 * k : 2 * k + 2]] for k in range(8)},
    0x10: _PLAIN[b"\x0d\xcc"],
    0x11: _PLAIN[b"\x0e\xe4"],
    0x12: _PLAIN[b"\x10\xf7"],
}


@st.composite
def _plain_fields(draw: st.DrawFn, layout: list[tuple[str, str]]) -> tuple[bytes, dict[str, Any]]:
    values = [draw(_WIDTH[fmt]) for _, fmt in layout]
    packed = struct.pack("<" + "".join(fmt for _, fmt in layout), *values)
    return packed, {key: value for (key, _), value in zip(layout, values, strict=True)}


@st.composite
def _occupancy_fields(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """An in-spec occupancy: up to 16 regions, no bit set beyond region_count."""
    people = draw(_WIDTH["B"])
    count = draw(st.integers(0, 16))
    bits = draw(st.integers(0, (1 << count) - 1))
    fields = {"people_count_all": people, "region_count": count}
    fields |= {f"region_{n}": bits >> (n - 1) & 1 for n in range(1, count + 1)}
    return bytes([people, count]) + bits.to_bytes(2, "big"), fields


@st.composite
def _telemetry_item(draw: st.DrawFn) -> Item:
    header = draw(st.sampled_from([*_PLAIN, b"\x04\xc9", b"\xff\x08", b"\xff\x09", b"\xff\x1f"]))
    if header in _PLAIN:
        body, fields = draw(_plain_fields(_PLAIN[header]))
    elif header == b"\x04\xc9":
        body, fields = draw(_occupancy_fields())
    elif header == b"\xff\x08":
        body = draw(st.binary(min_size=6, max_size=6))
        fields = {"sn": body.hex()}
    else:
        body = draw(
            st.binary(
                min_size=2 if header == b"\xff\x09" else 4,
                max_size=2 if header == b"\xff\x09" else 4,
            )
        )
        name = "hardware_version" if header == b"\xff\x09" else "firmware_version"
        fields = {name: ".".join(str(b) for b in body)}
    return header + body, fields, False


@st.composite
def _history_item(draw: st.DrawFn) -> Item:
    timestamp = draw(_WIDTH["I"])
    kind = draw(st.sampled_from([0x01, *_HISTORY_PLAIN]))
    if kind == 0x01:
        body, fields = draw(_occupancy_fields())
    else:
        body, fields = draw(_plain_fields(_HISTORY_PLAIN[kind]))
    packed = b"\x20\xce" + struct.pack("<IB", timestamp, kind) + body
    return packed, {"timestamp": timestamp, **fields}, True


_items = st.lists(st.one_of(_telemetry_item(), _history_item()), max_size=8)


def _expected(items: list[Item]) -> dict[str, Any]:
    """What the guide says the items decode to: the last item wins, history records append."""
    data: dict[str, Any] = {}
    for _, fields, is_history in items:
        if is_history:
            data.setdefault("history", []).append(fields)
            continue
        if "region_count" in fields:  # an occupancy item replaces the earlier region set
            for key in _REGIONS:
                data.pop(key, None)
        data.update(fields)
    return data


def _check_shape(result: Any) -> None:
    assert isinstance(result, dict)
    assert set(result) == {"data", "warnings", "errors"}
    assert isinstance(result["data"], dict)
    assert all(isinstance(key, str) for key in result["data"])
    for name in ("warnings", "errors"):
        assert isinstance(result[name], list)
        assert all(isinstance(text, str) and text for text in result[name])
    json.dumps(result, allow_nan=False)  # only JSON types: what sinks and the NS see
    for key, value in result["data"].items():
        if key == "history":
            assert isinstance(value, list)
            assert value
            assert all(isinstance(r, dict) and isinstance(r["timestamp"], int) for r in value)
        elif key in {"sn", "hardware_version", "firmware_version"}:
            assert isinstance(value, str)
        elif key in _REGIONS:
            assert type(value) is int
            assert value in (0, 1)


@SETTINGS
@given(payload=st.binary(max_size=96), fport=st.integers(-2, 260))
def test_never_raises_on_arbitrary_bytes(payload: bytes, fport: int) -> None:
    _check_shape(decode_uplink(payload, fport))


# Every telemetry header, the history header, and a few reply headers (f8 ff is undocumented).
_HEADERS = [
    bytes.fromhex(h)
    for h in (
        "ff01",
        "ff08",
        "ff09",
        "ff1f",
        "04c9",
        "05cc",
        "06cd",
        "07d5",
        "08d5",
        "09da",
        "0ada",
        "0bda",
        "0cda",
        "0dcc",
        "0ee4",
        "0f85",
        "10f7",
        "20ce",
        "ff03",
        "ff46",
        "fe35",
        "f995",
        "f999",
        "f891",
        "f895",
        "f8ff",
    )
]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(_HEADERS), st.binary(max_size=12)), max_size=8))
def test_never_raises_on_plausible_item_sequences(parts: list[tuple[bytes, bytes]]) -> None:
    """Known headers followed by random bytes reach far deeper than uniform random bytes."""
    payload = b"".join(header + body for header, body in parts)
    result = decode_uplink(payload)
    _check_shape(result)
    if not result["errors"]:
        assert len(payload) == 0 or result["data"]


@SETTINGS
@given(_items)
def test_telemetry_round_trip(items: list[Item]) -> None:
    payload = b"".join(packed for packed, _, _ in items)
    result = decode_uplink(payload)
    assert result["errors"] == []
    assert result["warnings"] == ([] if payload else ["empty payload: nothing to decode"])
    assert result["data"] == _expected(items)


@SETTINGS
@given(_items.filter(bool), st.data())
def test_a_cut_keeps_exactly_the_whole_items_before_it(
    items: list[Item],
    data: st.DataObject,
) -> None:
    payload = b"".join(packed for packed, _, _ in items)
    cut = data.draw(st.integers(1, len(payload) - 1))  # every item is at least 3 bytes
    whole: list[Item] = []
    end = 0
    for item in items:
        if end + len(item[0]) > cut:
            break
        whole.append(item)
        end += len(item[0])
    result = decode_uplink(payload[:cut])
    assert result["data"] == _expected(whole)
    if end == cut:
        assert result["errors"] == []
    else:
        assert len(result["errors"]) == 1
        assert f"at byte {end}" in result["errors"][0]
