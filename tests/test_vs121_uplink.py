"""VS121 LoRaWAN uplink decoder: reference vectors, the guide's examples, targeted cases.

The vectors (tests/data/*.jsonl, copied verbatim from the project's shared vector set) are JSON
Lines:
- vs121_uplinks.jsonl: {"hex", "fport", "case", "expected"}. Every key of `expected` must decode to
  the same value ("contains": extra keys are fine, also inside history records and nested replies)
  and no error may be reported.
- vs121_malformed.jsonl: {"hex", "fport", "case", "expect", "keep", "forbid"?, "forbid_any_data"?}.
  `expect` is "error" (at least one error), "warning" (no error, at least one warning) or "clean"
  (no error); every key of `keep` must still decode to its value; no key in `forbid` may be present;
  `forbid_any_data` means `data` must be empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.codec.vs121_uplink import APPLICATION_FPORT, decode_hex, decode_uplink

DATA = Path(__file__).parent / "data"


def _vectors(name: str) -> list[Any]:
    """One pytest.param per line, with the case and the line number as its id."""
    params = []
    with (DATA / name).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                vector = json.loads(line)
                params.append(pytest.param(vector, id=f"L{number}:{vector['case']}"))
    return params


def _mismatches(expected: Any, actual: Any, path: str = "data") -> list[str]:
    """Where `actual` does not contain `expected` (dicts: subset; lists: same length, itemwise)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a dict, got {actual!r}"]
        found = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{path}.{key}: missing (expected {value!r})")
            else:
                found += _mismatches(value, actual[key], f"{path}.{key}")
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {expected!r}, got {actual!r}"]
        found = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            found += _mismatches(want, got, f"{path}[{index}]")
        return found
    # bool is an int in Python: a decoded True must not pass for an expected 1.
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


@pytest.mark.parametrize("vector", _vectors("vs121_uplinks.jsonl"))
def test_uplink_vector(vector: dict[str, Any]) -> None:
    result = decode_hex(vector["hex"], vector["fport"])
    assert result["errors"] == []
    assert _mismatches(vector["expected"], result["data"]) == []


@pytest.mark.parametrize("vector", _vectors("vs121_malformed.jsonl"))
def test_malformed_vector(vector: dict[str, Any]) -> None:
    result = decode_hex(vector["hex"], vector.get("fport", APPLICATION_FPORT))
    expect = vector["expect"]
    if expect == "error":
        assert result["errors"], result
    elif expect == "warning":
        assert result["errors"] == []
        assert result["warnings"], result
    else:
        assert expect == "clean", f"unknown expectation {expect!r}"
        assert result["errors"] == []
    assert _mismatches(vector["keep"], result["data"]) == []
    for key in vector.get("forbid", []):
        assert key not in result["data"], result
    if vector.get("forbid_any_data"):
        assert result["data"] == {}


def _clean(text: str, fport: int = APPLICATION_FPORT) -> dict[str, Any]:
    """Decodes a payload that must decode without errors or warnings; returns its data."""
    result = decode_hex(text, fport)
    assert result["errors"] == []
    assert result["warnings"] == []
    return result["data"]


# --- Chapter 7: every uplink example of the guide, with its full decoding ----------------------


def test_guide_basic_information() -> None:
    assert _clean("ff0101 ff086600b0940976 ff090100 ff1f1f07004b") == {
        "protocol_version": 1,
        "sn": "6600b0940976",
        "hardware_version": "1.0",
        "firmware_version": "31.7.0.75",
    }


def test_guide_occupancy_report() -> None:
    """00 a1 => 1010 0001: regions 1, 6 and 8 occupied; 8 mapped regions; max 5 people."""
    assert _clean("04c9030800a1 06cd05") == {
        "people_count_all": 3,
        "region_count": 8,
        "region_1": 1,
        "region_2": 0,
        "region_3": 0,
        "region_4": 0,
        "region_5": 0,
        "region_6": 1,
        "region_7": 0,
        "region_8": 1,
        "people_count_max": 5,
    }


def test_guide_region_people_counting_report() -> None:
    assert _clean("07d50001000000000003 06cd05 0ee40004000b00") == {
        "region_1_count": 0,
        "region_2_count": 1,
        "region_3_count": 0,
        "region_4_count": 0,
        "region_5_count": 0,
        "region_6_count": 0,
        "region_7_count": 0,
        "region_8_count": 3,
        "people_count_max": 5,
        "dwell_time_region": 0,  # 00 = all regions
        "dwell_time_avg": 4,
        "dwell_time_max": 11,
    }


def test_guide_line_cross_report_with_timestamp() -> None:
    assert _clean("0f85e8ba1466 05cc02000100 0dcc10000100") == {
        "timestamp": 1712634600,
        "people_in": 2,
        "people_out": 1,
        "people_total_in": 16,
        "people_total_out": 1,
    }


def test_guide_people_flow_report() -> None:
    data = _clean(
        "09da0001000000000000 0ada0000000000000000 0bda0000000000000000 0cda0000000000000000"
    )
    flows = [f"{a}_to_{b}" for a in "abcd" for b in "abcd"]
    assert data == {name: 256 if name == "a_to_a" else 0 for name in flows}


def test_guide_trigger_line_cross_report() -> None:
    assert _clean("10f7 0100 0300") == {"line_in": 1, "line_out": 3}


def test_guide_historical_data() -> None:
    assert _clean("20ce 0d755b63 03 07") == {
        "history": [{"timestamp": 1666938125, "people_count_max": 7}],
    }


# --- Error messages name the channel and the byte offset ---------------------------------------


def test_unknown_channel_is_named_with_offset_and_earlier_items_kept() -> None:
    result = decode_hex("06cd05 04cc0102 06cd07")
    assert result["data"] == {"people_count_max": 5}  # the later 06cd is not read
    assert len(result["errors"]) == 1
    assert "unknown channel 0x04 0xcc at byte 3" in result["errors"][0]


def test_cut_item_is_named_with_offset_and_not_decoded() -> None:
    result = decode_hex("06cd05 0f85e8ba14")
    assert result["data"] == {"people_count_max": 5}
    assert result["errors"] == [
        "channel 0x0f 0x85 at byte 3: cut short: needs 4 data bytes, only 3 left; decoding stopped"
    ]


def test_lone_channel_byte_is_named_with_offset() -> None:
    result = decode_hex("06cd05 10")
    assert result["data"] == {"people_count_max": 5}
    assert "channel 0x10 at byte 3" in result["errors"][0]
    assert "no type byte" in result["errors"][0]


def test_unknown_history_type_names_channel_type_and_offsets() -> None:
    result = decode_hex("20ce0d755b630307 20ce0d755b631301020304")
    assert result["data"] == {"history": [{"timestamp": 1666938125, "people_count_max": 7}]}
    assert "channel 0x20 0xce at byte 8" in result["errors"][0]
    assert "unknown history data type 0x13 at byte 14" in result["errors"][0]


def test_cut_history_record_names_type_and_adds_no_record() -> None:
    result = decode_hex("20ce0d755b630307 20ce0d755b631101")
    assert result["data"] == {"history": [{"timestamp": 1666938125, "people_count_max": 7}]}
    assert "channel 0x20 0xce at byte 8" in result["errors"][0]
    assert "history type 0x11 needs 5 data bytes, only 1 left" in result["errors"][0]


def test_cut_history_header_adds_no_history_key() -> None:
    result = decode_hex("06cd05 20ce0d755b")
    assert result["data"] == {"people_count_max": 5}
    assert "channel 0x20 0xce at byte 3" in result["errors"][0]
    assert "5 header bytes" in result["errors"][0]


def test_unknown_reply_type_is_an_error() -> None:
    """A type on a reply channel that neither the guide nor the vendor codec documents."""
    for text, named in (
        ("ff0200", "0xff 0x02"),
        ("fe0101", "0xfe 0x01"),
        ("f90100", "0xf9 0x01"),
        ("f8010000", "0xf8 0x01"),
    ):
        result = decode_hex(text)
        assert result["data"] == {}
        assert f"unknown channel {named} at byte 0" in result["errors"][0]


# --- Targeted cases -----------------------------------------------------------------------------


def test_periodic_in_out_are_unsigned() -> None:
    """The guide says UINT16; the vendor codec reads them signed (65535 would become -1)."""
    assert _clean("05ccffff0080") == {"people_in": 65535, "people_out": 32768}


def test_occupancy_bitmap_high_byte_holds_regions_9_to_16() -> None:
    data = _clean("04c9021080 01")
    assert data["region_1"] == 1
    assert data["region_16"] == 1
    assert [data[f"region_{n}"] for n in range(2, 16)] == [0] * 14


def test_occupancy_names_only_mapped_regions() -> None:
    assert _clean("04c901030005") == {
        "people_count_all": 1,
        "region_count": 3,
        "region_1": 1,
        "region_2": 0,
        "region_3": 1,
    }
    assert _clean("04c900000000") == {"people_count_all": 0, "region_count": 0}


def test_occupancy_region_count_above_16_warns_and_stops_at_16() -> None:
    result = decode_hex("04c9052000ff")
    assert result["errors"] == []
    assert result["data"]["region_count"] == 32
    assert "region_16" in result["data"]
    assert "region_17" not in result["data"]
    assert "channel 0x04 0xc9 at byte 0" in result["warnings"][0]
    assert "region_count 32" in result["warnings"][0]


def test_occupancy_bits_beyond_region_count_warn() -> None:
    result = decode_hex("04c903020007")  # regions 1..3 set, only 2 mapped
    assert result["errors"] == []
    assert result["data"] == {
        "people_count_all": 3,
        "region_count": 2,
        "region_1": 1,
        "region_2": 1,
    }
    assert "bits set beyond region_count 2" in result["warnings"][0]
    assert "0x0007" in result["warnings"][0]


def test_history_occupancy_checks_the_same_rules() -> None:
    result = decode_hex("20ce00000000 01 03 02 0007")
    assert result["data"] == {
        "history": [
            {"timestamp": 0, "people_count_all": 3, "region_count": 2, "region_1": 1, "region_2": 1}
        ]
    }
    assert "channel 0x20 0xce at byte 0" in result["warnings"][0]


def test_repeated_item_last_one_wins() -> None:
    assert _clean("06cd05 06cd09 0f8501000000 0f8502000000") == {
        "people_count_max": 9,
        "timestamp": 2,
    }


def test_repeated_occupancy_replaces_the_whole_region_set() -> None:
    """A second 04c9 with fewer regions must not leave the first one's region_5..8 behind."""
    data = _clean("04c90108 00ff 04c90004 0001")
    assert data == {
        "people_count_all": 0,
        "region_count": 4,
        "region_1": 1,
        "region_2": 0,
        "region_3": 0,
        "region_4": 0,
    }


def test_history_records_append_in_order() -> None:
    data = _clean("20ce01000000 0307 20ce02000000 12 0100 0200 20ce03000000 11 01 0a00 1400")
    assert data == {
        "history": [
            {"timestamp": 1, "people_count_max": 7},
            {"timestamp": 2, "line_in": 1, "line_out": 2},
            {"timestamp": 3, "dwell_time_region": 1, "dwell_time_avg": 10, "dwell_time_max": 20},
        ]
    }


def test_history_mixed_with_live_items_keeps_them_apart() -> None:
    data = _clean("06cd05 20ce01000000 0307 0f8509000000")
    assert data == {
        "people_count_max": 5,
        "timestamp": 9,
        "history": [{"timestamp": 1, "people_count_max": 7}],
    }


def test_every_history_type_decodes() -> None:
    """Types 01..12 as the guide lists them; each carries the matching periodic item's fields."""
    sizes = {0x01: 4, 0x03: 1, 0x11: 5}
    for kind in range(0x01, 0x13):
        body = bytes(range(1, sizes.get(kind, 4) + 1))
        if kind == 0x01:
            body = bytes([5, 16, 0, 1])  # a valid occupancy: 16 regions, region 1 occupied
        result = decode_uplink(bytes.fromhex("20ce0a000000") + bytes([kind]) + body)
        assert result["errors"] == [], kind
        (record,) = result["data"]["history"]
        assert record["timestamp"] == 10
        assert len(record) > 1, kind


def test_every_fport_but_zero_decodes() -> None:
    for fport in (1, 85, 100, 223):
        assert decode_hex("06cd05", fport)["data"] == {"people_count_max": 5}


@pytest.mark.parametrize("fport", [0, -1, 256, True])
def test_invalid_fport_is_an_error(fport: int) -> None:
    result = decode_hex("06cd05", fport)
    assert result["data"] == {}
    assert result["errors"]
    if fport == 0:
        assert "MAC commands" in result["errors"][0]


def test_bytes_like_inputs_decode_and_others_are_reported() -> None:
    raw = bytes.fromhex("06cd05")
    for payload in (raw, bytearray(raw), memoryview(raw)):
        assert decode_uplink(payload)["data"] == {"people_count_max": 5}
    for wrong in ("06cd05", None, 6):
        result = decode_uplink(wrong)  # type: ignore[arg-type]
        assert result["data"] == {}
        assert "payload must be bytes" in result["errors"][0]


def test_released_buffer_is_reported() -> None:
    view = memoryview(b"\x06\xcd\x05")
    view.release()
    result = decode_uplink(view)
    assert result["data"] == {}
    assert "cannot be read as bytes" in result["errors"][0]


def test_empty_payload_warns() -> None:
    result = decode_uplink(b"")
    assert result == {"data": {}, "warnings": [result["warnings"][0]], "errors": []}
    assert "empty" in result["warnings"][0]


def test_decode_hex_reports_bad_hex() -> None:
    for text in ("06cd0", "zz", "06cd05 0x"):
        result = decode_hex(text)
        assert result["data"] == {}
        assert "not hex" in result["errors"][0]
    assert "not hex" in decode_hex(b"06cd05")["errors"][0]  # type: ignore[arg-type]


def test_decode_hex_accepts_whitespace_between_bytes() -> None:
    assert decode_hex(" 06 cd\n05 ")["data"] == {"people_count_max": 5}


# --- Replies to configuration downlinks -------------------------------------------------------


def test_reply_and_telemetry_in_one_uplink() -> None:
    assert _clean("ff0301 00 06cd05 f99301") == {
        "from_now_on_report_interval": 1,
        "people_count_max": 5,
        "report_with_timestamp": "yes",
    }


def test_applied_f8_reply_stores_the_setting() -> None:
    assert _clean("f8 8d a0700837 00") == {"rx2_frequency": 923300000}


def test_refused_f8_reply_is_reported_not_stored() -> None:
    result = decode_hex("f8 87 0b 01")
    assert result["errors"] == []
    assert result["data"] == {
        "device_response_result": {
            "channel_type": 0x87,
            "result": "forbidden",
            "request": {"tx_power_level": 11},
        }
    }
    assert "channel 0xf8 0x87 at byte 0" in result["warnings"][0]
    assert "forbidden" in result["warnings"][0]


def test_f8_reply_without_its_result_byte_is_cut() -> None:
    result = decode_hex("06cd05 f8870b")
    assert result["data"] == {"people_count_max": 5}
    assert "channel 0xf8 0x87 at byte 3: cut short: needs 2 data bytes" in result["errors"][0]


def test_undocumented_enum_value_decodes_as_unknown_with_a_warning() -> None:
    result = decode_hex("ff0455")
    assert result["errors"] == []
    assert result["data"] == {"confirm_mode_enable": "unknown"}
    assert "channel 0xff 0x04 at byte 0: confirm_mode_enable 0x55" in result["warnings"][0]


def test_schedule_replies_append() -> None:
    data = _clean("f999 00 00 01 08 00 09 00 f999 01 01 02 0a 1e 0b 00")
    assert [
        (s["people_counting_type"], s["period"], s["weekday"]) for s in data["time_schedule"]
    ] == [("region_people_counting", 1, "mon"), ("line_crossing_counting", 2, "tue")]


def test_reset_schedule_reply_uses_the_vendor_layout() -> None:
    """The vendor codec: mode, index, weekday mask, 3-byte minutes (the guide shows 2 bytes)."""
    assert _clean("f995 01 00 7f b00400") == {
        "reset_cumulative_schedule": [
            {
                "mode": "add",
                "index": 1,
                "week_cycle": dict.fromkeys(
                    ("sun", "mon", "tue", "wed", "thu", "fri", "sat"), "enable"
                ),
                "time": 1200,
            }
        ]
    }


def test_d2d_replies_match_the_guide_examples() -> None:
    assert _clean("ff35 1234567812345678") == {"d2d_key": "1234567812345678"}
    assert _clean("f98e 00 01 1011") == {
        "d2d_occupied_config": {"region": 1, "enable": "enable", "command": "1110"}
    }
    assert _clean("f990 02 01 0110 3c00") == {
        "d2d_vacant_config": {"region": 3, "enable": "enable", "command": "1001", "delay_time": 60}
    }


def test_guide_only_settings_decode() -> None:
    """Downlinks in the guide that the vendor's VS121 codec does not decode."""
    assert _clean("ff4200 ff4155 ff11e8ba1466 f9890004") == {
        "wifi_enable": "disable",
        "lora_port": 85,
        "system_time": 1712634600,
        "log_level": "debug",
    }
    # The guide: "ff0501ff00 => channel index 0-15, ff00 => 8-15 is enabled" (bit i = channel i).
    assert _clean("ff0501ff00 ff05020000") == {
        "lora_channel_mask_config": [{"id": 1, "mask": 0xFF00}, {"id": 2, "mask": 0}]
    }


def test_reboot_and_reset_replies() -> None:
    assert _clean("ff10ff ff51ff") == {"reboot": "yes", "clear_cumulative_count": "yes"}
