"""f9 95 (reset schedule) and ff 46 (debounce) in both widths: the guide's and the vendor codec's.

The gateway encodes the guide's layout; a device may echo either. The uplink decoder takes the
width the message's length allows, so every command the gateway sends decodes as the same setting.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gateway.codec.vs121_downlink import command_from_json, decode_downlink
from gateway.codec.vs121_uplink import decode_hex, decode_uplink

EVERY_DAY = dict.fromkeys(("sun", "mon", "tue", "wed", "thu", "fri", "sat"), "enable")


def clean(text: str) -> dict[str, Any]:
    result = decode_hex(text)
    assert result["errors"] == []
    assert result["warnings"] == []
    return result["data"]


@pytest.mark.parametrize("seconds", [1, 3, 60])
@pytest.mark.parametrize("enable", [True, False])
def test_gateway_debounce_encoding_decodes(enable: bool, seconds: int) -> None:
    payload = command_from_json({"command": "debounce", "enable": enable, "seconds": seconds})
    encoded = payload.encode().hex()
    assert len(encoded) == 8  # the guide's width: ff 46 <enable> <seconds>
    assert clean(encoded) == {
        "people_count_jitter_config": {
            "enable": "enable" if enable else "disable",
            "time": seconds,
        }
    }


@pytest.mark.parametrize("minutes", [0, 1200, 23 * 60 + 59])
def test_gateway_reset_schedule_encoding_decodes(minutes: int) -> None:
    command = command_from_json(
        {
            "command": "reset_schedule",
            "action": "add",
            "index": 2,
            "days": "everyday",
            "time": dt.time(minutes // 60, minutes % 60).strftime("%H:%M"),
        }
    )
    encoded = command.encode().hex()
    assert len(encoded) == 14  # the guide's width: f9 95 mode index days <2-byte minutes>
    assert clean(encoded) == {
        "reset_cumulative_schedule": [
            {"mode": "add", "index": 3, "week_cycle": EVERY_DAY, "time": minutes}
        ]
    }


@pytest.mark.parametrize(
    ("guide", "vendor"),
    [
        ("ff460103", "ff46010300"),
        ("fe460105", "fe46010500"),
        ("f99501007fb004", "f99501007fb00400"),
        ("f89501007fb00400", "f89501007fb0040000"),  # f8: the setting, then result 00
    ],
)
def test_both_widths_read_alike_alone_and_followed_by_more(guide: str, vendor: str) -> None:
    assert clean(guide) == clean(vendor)
    after = "ff03b004"  # reporting interval 1200 s
    both = clean(guide + after)
    assert both == clean(vendor + after)
    assert both["from_now_on_report_interval"] == 1200
    # Two echoes in one uplink, one of each width.
    assert clean(guide + vendor + after) == clean(vendor + guide + after)


def test_refused_guide_width_schedule_is_a_device_response() -> None:
    result = decode_uplink(bytes.fromhex("f89501007fb00402"))
    assert result["errors"] == []
    assert result["data"]["device_response_result"]["result"] == "invalid parameter"
    assert "reset_cumulative_schedule" not in result["data"]


def test_cut_short_is_still_an_error() -> None:
    result = decode_hex("ff4601")
    assert result["errors"]
    assert "cut short" in result["errors"][0]


@pytest.mark.parametrize(
    ("guide", "vendor"),
    [("ff460103", "ff46010300"), ("f99501007fb004", "f99501007fb00400")],
)
def test_downlink_decoder_reads_the_vendor_encoders_width_too(guide: str, vendor: str) -> None:
    after = "ff03b004"
    for tail in ("", after):
        wide = decode_downlink(bytes.fromhex(vendor + tail))
        assert wide["errors"] == []
        assert wide == decode_downlink(bytes.fromhex(guide + tail))
    # The encoder stays on the guide's form.
    command = decode_downlink(bytes.fromhex(vendor))["data"]["commands"][0]
    assert command_from_json(command).encode().hex() == guide


def test_downlink_decoder_refuses_a_wide_value_out_of_range() -> None:
    result = decode_downlink(bytes.fromhex("ff46012c01"))  # 300 s: the vendor form, over 60
    assert result["data"]["commands"] == []
    assert "out of range" in result["errors"][0]
