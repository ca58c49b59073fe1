"""VS121 downlink encoder and decoder: the guide's examples byte for byte, the guide's layout tables
for every other command, encode/decode round trips, and the validation messages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.vs121_downlink import (
    COMMANDS,
    DOWNLINK_FPORT,
    WEEKDAYS,
    Adr,
    ApplicationPort,
    ChannelMask,
    Command,
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
    command_from_json,
    decode_downlink,
    encode_commands,
)
from gateway.errors import EncodeError

# The guide's downlink examples (chapter 7), each as the JSON this module reads and writes.
GUIDE_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("ff4200", {"command": "wifi", "enable": False}),
    ("ff10ff", {"command": "reboot"}),
    # "f995 01 00 7f b0 04": add, first schedule, every day, 04b0 = 1200 min = 20:00.
    (
        "f99501007fb004",
        {
            "command": "reset_schedule",
            "action": "add",
            "index": 0,
            "days": "everyday",
            "time": "20:00",
        },
    ),
    (
        "f996010000",
        {
            "command": "detection_region",
            "enable": True,
            "area": "mapped",
            "reporting_type": "occupancy",
        },
    ),
    ("ff03b004", {"command": "reporting_interval", "seconds": 1200}),
    # The guide's text says "02: Debounce time is 3s"; its bytes are 01 (enable) 03 (3 s).
    ("ff460103", {"command": "debounce", "enable": True, "seconds": 3}),
    (
        "f99900000008000900",
        {
            "command": "schedule",
            "feature": "region_people_counting",
            "weekday": "sun",
            "period": 1,
            "start": "08:00",
            "end": "09:00",
        },
    ),
    ("ff0501ff00", {"command": "channel_mask", "block": 1, "channels": list(range(8, 16))}),
    ("ff05020000", {"command": "channel_mask", "block": 2, "channels": []}),
    ("ff05030000", {"command": "channel_mask", "block": 3, "channels": []}),
    ("ff05040000", {"command": "channel_mask", "block": 4, "channels": []}),
    ("ff05050000", {"command": "channel_mask", "block": 5, "channels": []}),
    ("f98de07d0b37", {"command": "rx2_frequency", "frequency_hz": 923_500_000}),
    ("ff351234567812345678", {"command": "d2d_key", "key": "1234567812345678"}),
    # "1011 => 1110": the control command 1110 is sent little-endian.
    (
        "f98e00011011",
        {"command": "d2d_occupied", "region": 1, "enable": True, "control_command": "1110"},
    ),
    (
        "f990020101103c00",
        {
            "command": "d2d_vacant",
            "region": 3,
            "enable": True,
            "control_command": "1001",
            "delay_seconds": 60,
        },
    ),
]

# Commands the guide gives no example for, laid out by hand from its tables.
TABLE_LAYOUTS: list[tuple[str, dict[str, Any]]] = [
    ("ff51ff", {"command": "reset_cumulative_count"}),
    ("ff11e8ba1466", {"command": "system_time", "timestamp": 1_712_634_600}),
    ("f9910000000000", {"command": "time_sync", "mode": "gateway", "timestamp": 0}),
    ("f99101e8ba1466", {"command": "time_sync", "mode": "manual", "timestamp": 1_712_634_600}),
    ("f9890002", {"command": "debug_log", "level": "error"}),
    ("f9890004", {"command": "debug_log", "level": "debug"}),
    ("f99401", {"command": "reset_schedule_enable", "enable": True}),
    # Monday and Friday are bits 1 and 5 (22); 08:30 is 510 min = 01fe.
    (
        "f995000122fe01",
        {
            "command": "reset_schedule",
            "action": "modify",
            "index": 1,
            "days": ["mon", "fri"],
            "time": "08:30",
        },
    ),
    (
        "f99502040000 00".replace(" ", ""),
        {"command": "reset_schedule", "action": "delete", "index": 4, "days": [], "time": "00:00"},
    ),
    ("ff5001", {"command": "region_people_counting", "enable": True}),
    ("f992010500", {"command": "min_dwell_time", "enable": True, "seconds": 5}),
    ("ff4800", {"command": "line_crossing_counting", "enable": False}),
    ("f99801", {"command": "filter_u_turns", "enable": True}),
    ("f9970201", {"command": "schedule_enable", "feature": "people_flow_analysis", "enable": True}),
    ("f91001", {"command": "periodic_report_scheme", "scheme": "from_now_on"}),
    ("f91100", {"command": "on_the_dot_interval", "minutes": 5}),
    ("f91108", {"command": "on_the_dot_interval", "minutes": 720}),
    ("ff4501", {"command": "report_by_result_mode", "mode": "on_change"}),
    ("f93d01", {"command": "trigger_report", "enable": True}),
    ("f99300", {"command": "report_with_timestamp", "enable": False}),
    ("ff4301", {"command": "region_report_regularly", "enable": True}),
    ("ff4400", {"command": "region_report_by_result", "enable": False}),
    (
        "f9990106021700003b",
        {
            "command": "schedule",
            "feature": "line_crossing_counting",
            "weekday": "sat",
            "period": 3,
            "start": "23:00",
            "end": "00:59",
        },
    ),
    # Block 6 is channels 80-95: offsets 0 and 15 set the mask 8001.
    ("ff05068001", {"command": "channel_mask", "block": 6, "channels": [80, 95]}),
    ("ff4001", {"command": "adr", "enable": True}),
    ("ff4155", {"command": "application_port", "port": 85}),
    ("f9850108", {"command": "rejoin", "enable": True, "retries": 8}),
    ("ff0401", {"command": "confirmed_mode", "enable": True}),
    ("f98600", {"command": "spreading_factor", "sf": 12}),
    ("f98605", {"command": "spreading_factor", "sf": 7}),
    ("f9870e", {"command": "tx_power", "level": 14}),
    ("f98b02", {"command": "lorawan_version", "version": "1.0.3"}),
    ("f98c05", {"command": "rx2_data_rate", "data_rate": 5}),
    ("ff8401", {"command": "d2d", "enable": True}),
]


def _ids(cases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [f"{obj['command']}-{hex_}" for hex_, obj in cases]


@pytest.mark.parametrize(
    ("hex_", "obj"), GUIDE_EXAMPLES + TABLE_LAYOUTS, ids=_ids(GUIDE_EXAMPLES + TABLE_LAYOUTS)
)
def test_encodes_as_the_guide_lays_out(hex_: str, obj: dict[str, Any]) -> None:
    assert command_from_json(obj).encode().hex() == hex_


@pytest.mark.parametrize(
    ("hex_", "obj"), GUIDE_EXAMPLES + TABLE_LAYOUTS, ids=_ids(GUIDE_EXAMPLES + TABLE_LAYOUTS)
)
def test_decodes_to_the_json_it_was_built_from(hex_: str, obj: dict[str, Any]) -> None:
    result = decode_downlink(bytes.fromhex(hex_))
    assert result["errors"] == []
    assert result["warnings"] == []
    assert result["data"] == {"commands": [obj]}


def test_every_command_has_a_byte_layout_case() -> None:
    covered = {obj["command"] for _, obj in GUIDE_EXAMPLES + TABLE_LAYOUTS}
    assert covered == set(COMMANDS)


def test_guide_channel_mask_example_as_one_downlink() -> None:
    masks = [
        ChannelMask(block=1, channels=frozenset(range(8, 16))),
        *(ChannelMask(block=b, channels=frozenset()) for b in range(2, 6)),
    ]
    assert encode_commands(masks).hex() == "ff0501ff00ff05020000ff05030000ff05040000ff05050000"


def test_reset_schedule_needs_the_schedule_number_byte() -> None:
    # "f995017fb004" drops the guide's "00" (first schedule): the command is then one byte short.
    result = decode_downlink(bytes.fromhex("f995017fb004"))
    assert result["data"]["commands"] == []
    assert result["errors"] == [
        "channel 0xf9 0x95 at byte 0 (reset_schedule): cut short, 4 of 5 data bytes"
    ]


def test_python_construction_matches_json() -> None:
    built = ResetSchedule(action="add", index=0, days=frozenset(WEEKDAYS), time=dt.time(20, 0))
    assert built == command_from_json(GUIDE_EXAMPLES[2][1])
    assert D2dVacant(region=3, enable=True, control_command=0x1001, delay_seconds=60).encode() == (
        bytes.fromhex("f990020101103c00")
    )


def test_downlink_port_default() -> None:
    assert DOWNLINK_FPORT == 85


def test_commands_are_immutable() -> None:
    interval = ReportingInterval(seconds=60)
    with pytest.raises(dataclasses.FrozenInstanceError):
        interval.seconds = 30  # type: ignore[misc]


def test_encode_commands_concatenates_in_order() -> None:
    payload = encode_commands([Reboot(), Wifi(enable=False), ResetCumulativeCount()])
    assert payload.hex() == "ff10ffff4200ff51ff"


def test_encode_commands_refuses_an_empty_downlink() -> None:
    with pytest.raises(EncodeError, match="at least one command"):
        encode_commands([])


def test_defaults_fill_optional_fields() -> None:
    assert command_from_json({"command": "debounce", "enable": False}).encode().hex() == "ff460002"
    assert command_from_json({"command": "time_sync", "mode": "gateway"}).encode().hex() == (
        "f9910000000000"
    )
    delete = command_from_json({"command": "reset_schedule", "action": "delete", "index": 2})
    assert delete.encode().hex() == "f99502020000" + "00"


# --- validation -----------------------------------------------------------------------------------

BAD_VALUES: list[tuple[dict[str, Any], list[str]]] = [
    (
        {"command": "reporting_interval", "seconds": 4},
        ["reporting_interval.seconds", "4", "5..65535"],
    ),
    ({"command": "reporting_interval", "seconds": 65536}, ["65536", "5..65535"]),
    ({"command": "reporting_interval", "seconds": 60.0}, ["60.0", "an integer 5..65535"]),
    ({"command": "reporting_interval", "seconds": True}, ["True", "an integer"]),
    ({"command": "application_port", "port": 0}, ["application_port.port", "1..223"]),
    ({"command": "application_port", "port": 224}, ["224", "1..223"]),
    ({"command": "rejoin", "enable": True, "retries": 3}, ["rejoin.retries", "4..32"]),
    ({"command": "rejoin", "enable": True, "retries": 33}, ["33", "4..32"]),
    ({"command": "tx_power", "level": 15}, ["tx_power.level", "15", "0..14"]),
    ({"command": "rx2_data_rate", "data_rate": 6}, ["rx2_data_rate.data_rate", "0..5"]),
    ({"command": "rx2_frequency", "frequency_hz": 923}, ["923", "100000000..1000000000"]),
    (
        {
            "command": "d2d_vacant",
            "region": 1,
            "enable": True,
            "control_command": "0000",
            "delay_seconds": 601,
        },
        ["d2d_vacant.delay_seconds", "601", "0..600"],
    ),
    (
        {"command": "d2d_occupied", "region": 17, "enable": True, "control_command": "0000"},
        ["d2d_occupied.region", "17", "1..16"],
    ),
    (
        {"command": "d2d_occupied", "region": 1, "enable": True, "control_command": "12345"},
        ["control_command", "'12345'", "4 hex digits"],
    ),
    (
        {"command": "d2d_occupied", "region": 1, "enable": True, "control_command": "xy12"},
        ["'xy12'", "4 hex digits"],
    ),
    ({"command": "d2d_key", "key": "12345678"}, ["d2d_key.key", "16 hex digits"]),
    ({"command": "d2d_key", "key": "123456781234567g"}, ["'123456781234567g'", "16 hex digits"]),
    ({"command": "debounce", "enable": True, "seconds": 61}, ["debounce.seconds", "1..60"]),
    ({"command": "wifi", "enable": 1}, ["wifi.enable", "1", "true or false"]),
    ({"command": "spreading_factor", "sf": 6}, ["spreading_factor.sf", "6", "one of 12, 11"]),
    (
        {"command": "on_the_dot_interval", "minutes": 20},
        ["on_the_dot_interval.minutes", "20", "5, 10, 15"],
    ),
    ({"command": "lorawan_version", "version": "1.1"}, ["'1.1'", "'1.0.2', '1.0.3'"]),
    ({"command": "debug_log", "level": "info"}, ["debug_log.level", "'info'", "'error', 'debug'"]),
    (
        {"command": "time_sync", "mode": "gateway", "timestamp": 5},
        ["time_sync.timestamp", "'gateway'"],
    ),
    ({"command": "time_sync", "mode": "manual"}, ["time_sync.timestamp", "manual"]),
    (
        {
            "command": "reset_schedule",
            "action": "add",
            "index": 5,
            "days": "everyday",
            "time": "20:00",
        },
        ["reset_schedule.index", "5", "0..4"],
    ),
    (
        {
            "command": "reset_schedule",
            "action": "add",
            "index": 0,
            "days": "everyday",
            "time": "24:00",
        },
        ["reset_schedule.time", "'24:00'", "HH:MM"],
    ),
    (
        {
            "command": "reset_schedule",
            "action": "add",
            "index": 0,
            "days": "everyday",
            "time": "8pm",
        },
        ["'8pm'", "HH:MM"],
    ),
    (
        {
            "command": "reset_schedule",
            "action": "add",
            "index": 0,
            "days": ["sun", "funday"],
            "time": "20:00",
        },
        ["reset_schedule.days", "funday", "sun, mon, tue"],
    ),
    (
        {
            "command": "reset_schedule",
            "action": "add",
            "index": 0,
            "days": "weekdays",
            "time": "20:00",
        },
        ["'weekdays'", '"everyday"'],
    ),
    (
        {"command": "reset_schedule", "action": "add", "index": 0, "days": [], "time": "20:00"},
        ["reset_schedule.days", "'add'"],
    ),
    (
        {"command": "reset_schedule", "action": "remove", "index": 0},
        ["reset_schedule.action", "'modify', 'add', 'delete'"],
    ),
    (
        {
            "command": "schedule",
            "feature": "region_people_counting",
            "weekday": "sun",
            "period": 4,
            "start": "08:00",
            "end": "09:00",
        },
        ["schedule.period", "1..3"],
    ),
    (
        {
            "command": "schedule",
            "feature": "occupancy",
            "weekday": "sun",
            "period": 1,
            "start": "08:00",
            "end": "09:00",
        },
        ["schedule.feature", "'people_flow_analysis'"],
    ),
    (
        {
            "command": "schedule",
            "feature": "region_people_counting",
            "weekday": "sunday",
            "period": 1,
            "start": "08:00",
            "end": "09:00",
        },
        ["schedule.weekday", "'sat'"],
    ),
    ({"command": "channel_mask", "block": 7, "channels": []}, ["channel_mask.block", "1..6"]),
    (
        {"command": "channel_mask", "block": 1, "channels": [16]},
        ["channel_mask.channels", "0..15 for block 1"],
    ),
    ({"command": "channel_mask", "block": 1, "channels": [96]}, ["channel_mask.channels", "0..95"]),
    ({"command": "channel_mask", "block": 1, "channels": "8-15"}, ["'8-15'", "a list"]),
    (
        {
            "command": "detection_region",
            "enable": True,
            "area": "inside",
            "reporting_type": "occupancy",
        },
        ["detection_region.area", "'mapped', 'non_mapped'"],
    ),
]


@pytest.mark.parametrize(
    ("obj", "fragments"),
    BAD_VALUES,
    ids=[f"{o['command']}-{i}" for i, (o, _) in enumerate(BAD_VALUES)],
)
def test_bad_value_names_field_value_and_allowed(obj: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(EncodeError) as caught:
        command_from_json(obj)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_python_construction_is_validated_too() -> None:
    with pytest.raises(EncodeError, match=r"reporting_interval\.seconds: 3 .*5\.\.65535"):
        ReportingInterval(seconds=3)
    with pytest.raises(EncodeError, match=r"schedule\.start: .* \"HH:MM\""):
        Schedule(
            feature="region_people_counting",
            weekday="mon",
            period=1,
            start=dt.time(8, 0, 30),
            end=dt.time(9, 0),
        )


def test_unknown_command_lists_allowed_names() -> None:
    with pytest.raises(EncodeError) as caught:
        command_from_json({"command": "self_destruct"})
    message = str(caught.value)
    assert "'self_destruct'" in message
    for name in COMMANDS:
        assert name in message


def test_missing_command_name() -> None:
    with pytest.raises(EncodeError, match="missing 'command'; allowed: adr, application_port"):
        command_from_json({"seconds": 60})


def test_command_must_be_an_object() -> None:
    with pytest.raises(EncodeError, match="JSON object, not list"):
        command_from_json(["reboot"])  # type: ignore[arg-type]


def test_unknown_field_lists_allowed_fields() -> None:
    with pytest.raises(EncodeError, match="rejoin: unknown field count; allowed: enable, retries"):
        command_from_json({"command": "rejoin", "enable": True, "count": 8})
    with pytest.raises(EncodeError, match="reboot: unknown field delay; allowed: none"):
        command_from_json({"command": "reboot", "delay": 5})


def test_class_from_json_refuses_another_command() -> None:
    assert Wifi.from_json({"enable": True}) == Wifi(enable=True)
    with pytest.raises(EncodeError, match="wifi: got an object for command 'adr'"):
        Wifi.from_json({"command": "adr", "enable": True})


def test_missing_field_is_named() -> None:
    with pytest.raises(EncodeError, match="rejoin: missing field retries; required: enable, retr"):
        command_from_json({"command": "rejoin", "enable": True})


# --- decoding faults ------------------------------------------------------------------------------


def test_unknown_channel_stops_and_keeps_what_came_before() -> None:
    result = decode_downlink(bytes.fromhex("ff10ff" + "ff9901" + "ff4200"))
    assert result["data"]["commands"] == [{"command": "reboot"}]
    assert result["errors"] == ["channel 0xff 0x99 at byte 3: not a VS121 downlink command"]


def test_cut_header_is_an_error() -> None:
    result = decode_downlink(bytes.fromhex("ff4201f9"))
    assert result["data"]["commands"] == [{"command": "wifi", "enable": True}]
    assert result["errors"] == ["channel 0xf9 at byte 3: cut short, no type byte"]


def test_cut_data_is_an_error_and_nothing_is_made_up() -> None:
    result = decode_downlink(bytes.fromhex("ff03b0"))
    assert result["data"]["commands"] == []
    assert result["errors"] == [
        "channel 0xff 0x03 at byte 0 (reporting_interval): cut short, 1 of 2 data bytes"
    ]


def test_out_of_range_value_is_skipped_and_decoding_goes_on() -> None:
    # ff03 0300: a 3 s interval is below the guide's 5 s minimum; ff42 02 is not a flag value.
    result = decode_downlink(
        bytes.fromhex("ff030300" + "ff4202" + "f98605" + "f99501008000 00".replace(" ", ""))
    )
    assert result["data"]["commands"] == [{"command": "spreading_factor", "sf": 7}]
    assert result["errors"] == [
        "channel 0xff 0x03 at byte 0: reporting_interval.seconds: 3 is not allowed; "
        "expected an integer 5..65535",
        "channel 0xff 0x42 at byte 4: wifi.enable: byte 02 is neither 00 nor 01",
        "channel 0xf9 0x95 at byte 10: reset_schedule.days: byte 80 sets bit 7, which the guide "
        "keeps 0",
    ]


@pytest.mark.parametrize(
    ("hex_", "fragment"),
    [
        ("ff1000", "reboot: expected ff, got 00"),
        ("f9890104", "debug_log: expected 00, got 01"),
        ("f9890003", "debug_log.level: byte 03 is not one of 02, 04"),
        ("f98606", "spreading_factor.sf: byte 06 is not one of 00, 01, 02, 03, 04, 05"),
        ("f995010001a005", "reset_schedule.time: 1440 minutes is past 23:59"),
        ("f99900000018000900", "schedule.start: hour 24 minute 0 is not a time of day"),
        ("f99100e8ba1466", "time_sync.timestamp"),
        ("ff05070000", "channel_mask.block: 7 is not allowed"),
    ],
)
def test_meaningless_bytes_are_reported(hex_: str, fragment: str) -> None:
    result = decode_downlink(bytes.fromhex(hex_))
    assert result["data"]["commands"] == []
    assert len(result["errors"]) == 1
    assert fragment in result["errors"][0]


def test_from_data_checks_the_length() -> None:
    assert ReportingInterval.from_data(bytes.fromhex("b004")) == ReportingInterval(seconds=1200)
    with pytest.raises(ValueError, match="reporting_interval has 2 data bytes, not 3"):
        ReportingInterval.from_data(bytes.fromhex("b00400"))


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        COMMANDS["reboot"] = Wifi  # type: ignore[index]


def test_empty_payload_warns() -> None:
    assert decode_downlink(b"") == {
        "data": {"commands": []},
        "warnings": ["empty payload: no commands"],
        "errors": [],
    }


def test_non_bytes_payload_is_an_error_not_an_exception() -> None:
    result = decode_downlink("ff10ff")  # type: ignore[arg-type]
    assert result["errors"] == ["payload must be bytes, not str"]


def test_bytearray_and_memoryview_are_accepted() -> None:
    for payload in (bytearray(b"\xff\x10\xff"), memoryview(b"\xff\x10\xff")):
        assert decode_downlink(payload)["data"]["commands"] == [  # type: ignore[arg-type]
            {"command": "reboot"}
        ]


# --- round trips ----------------------------------------------------------------------------------

flag = st.booleans()
clock = st.builds(dt.time, st.integers(0, 23), st.integers(0, 59))
weekday = st.sampled_from(WEEKDAYS)
feature = st.sampled_from(
    ["region_people_counting", "line_crossing_counting", "people_flow_analysis"]
)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def channel_masks(draw: st.DrawFn) -> ChannelMask:
    block = draw(st.integers(1, 6))
    first = (block - 1) * 16
    return ChannelMask(block=block, channels=draw(st.frozensets(st.integers(first, first + 15))))


STRATEGIES: dict[type[Command], st.SearchStrategy[Command]] = {
    Reboot: st.just(Reboot()),
    Wifi: st.builds(Wifi, enable=flag),
    SystemTime: st.builds(SystemTime, timestamp=u32),
    TimeSync: st.just(TimeSync(mode="gateway"))
    | st.builds(TimeSync, mode=st.just("manual"), timestamp=st.integers(1, 2**32 - 1)),
    DebugLog: st.builds(DebugLog, level=st.sampled_from(["error", "debug"])),
    ResetCumulativeCount: st.just(ResetCumulativeCount()),
    ResetScheduleEnable: st.builds(ResetScheduleEnable, enable=flag),
    ResetSchedule: st.builds(
        ResetSchedule,
        action=st.sampled_from(["modify", "add"]),
        index=st.integers(0, 4),
        days=st.frozensets(weekday, min_size=1),
        time=clock,
    )
    | st.builds(
        ResetSchedule,
        action=st.just("delete"),
        index=st.integers(0, 4),
        days=st.frozensets(weekday),
        time=clock,
    ),
    RegionPeopleCounting: st.builds(RegionPeopleCounting, enable=flag),
    DetectionRegion: st.builds(
        DetectionRegion,
        enable=flag,
        area=st.sampled_from(["mapped", "non_mapped"]),
        reporting_type=st.sampled_from(["occupancy", "region_people_counting"]),
    ),
    MinDwellTime: st.builds(MinDwellTime, enable=flag, seconds=st.integers(0, 65535)),
    LineCrossingCounting: st.builds(LineCrossingCounting, enable=flag),
    FilterUTurns: st.builds(FilterUTurns, enable=flag),
    ScheduleEnable: st.builds(ScheduleEnable, feature=feature, enable=flag),
    ReportingInterval: st.builds(ReportingInterval, seconds=st.integers(5, 65535)),
    PeriodicReportScheme: st.builds(
        PeriodicReportScheme, scheme=st.sampled_from(["on_the_dot", "from_now_on"])
    ),
    OnTheDotInterval: st.builds(
        OnTheDotInterval, minutes=st.sampled_from([5, 10, 15, 30, 60, 240, 360, 480, 720])
    ),
    ReportByResultMode: st.builds(
        ReportByResultMode, mode=st.sampled_from(["zero_non_zero", "on_change"])
    ),
    Debounce: st.builds(Debounce, enable=flag, seconds=st.integers(1, 60)),
    TriggerReport: st.builds(TriggerReport, enable=flag),
    ReportWithTimestamp: st.builds(ReportWithTimestamp, enable=flag),
    RegionReportRegularly: st.builds(RegionReportRegularly, enable=flag),
    RegionReportByResult: st.builds(RegionReportByResult, enable=flag),
    Schedule: st.builds(
        Schedule, feature=feature, weekday=weekday, period=st.integers(1, 3), start=clock, end=clock
    ),
    ChannelMask: channel_masks(),
    Adr: st.builds(Adr, enable=flag),
    ApplicationPort: st.builds(ApplicationPort, port=st.integers(1, 223)),
    Rejoin: st.builds(Rejoin, enable=flag, retries=st.integers(4, 32)),
    ConfirmedMode: st.builds(ConfirmedMode, enable=flag),
    SpreadingFactor: st.builds(SpreadingFactor, sf=st.integers(7, 12)),
    TxPower: st.builds(TxPower, level=st.integers(0, 14)),
    LorawanVersion: st.builds(LorawanVersion, version=st.sampled_from(["1.0.2", "1.0.3"])),
    Rx2DataRate: st.builds(Rx2DataRate, data_rate=st.integers(0, 5)),
    Rx2Frequency: st.builds(Rx2Frequency, frequency_hz=st.integers(100_000_000, 1_000_000_000)),
    D2d: st.builds(D2d, enable=flag),
    D2dKey: st.builds(D2dKey, key=st.binary(min_size=8, max_size=8)),
    D2dOccupied: st.builds(
        D2dOccupied, region=st.integers(1, 16), enable=flag, control_command=st.integers(0, 0xFFFF)
    ),
    D2dVacant: st.builds(
        D2dVacant,
        region=st.integers(1, 16),
        enable=flag,
        control_command=st.integers(0, 0xFFFF),
        delay_seconds=st.integers(0, 600),
    ),
}
any_command = st.one_of(*STRATEGIES.values())


def test_every_command_has_a_strategy() -> None:
    assert {cls.NAME for cls in STRATEGIES} == set(COMMANDS)


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda cls: cls.NAME)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_round_trip(cls: type[Command], data: st.DataObject) -> None:
    command = data.draw(STRATEGIES[cls])
    payload = command.encode()
    assert payload[:2] == cls.HEADER
    assert len(payload) == 2 + cls.data_size()
    result = decode_downlink(payload)
    assert result["errors"] == []
    assert result["data"]["commands"] == [command.to_json()]
    # What the decoder writes is valid JSON that builds the same command again.
    assert command_from_json(json.loads(json.dumps(result["data"]["commands"][0]))) == command


@settings(max_examples=200, deadline=None)
@given(commands=st.lists(any_command, min_size=1, max_size=8))
def test_round_trip_of_several_commands(commands: list[Command]) -> None:
    result = decode_downlink(encode_commands(commands))
    assert result["errors"] == []
    assert [command_from_json(obj) for obj in result["data"]["commands"]] == commands


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=40))
def test_decoder_never_raises_and_what_it_accepts_re_encodes(payload: bytes) -> None:
    result = decode_downlink(payload)
    assert set(result) == {"data", "warnings", "errors"}
    if not result["errors"] and payload:
        rebuilt = encode_commands(command_from_json(obj) for obj in result["data"]["commands"])
        assert rebuilt == payload


@st.composite
def framed_commands(draw: st.DrawFn) -> tuple[type[Command], bytes]:
    """A known channel and type followed by arbitrary data bytes of the right length."""
    cls = draw(st.sampled_from(list(COMMANDS.values())))
    return cls, cls.HEADER + draw(st.binary(min_size=cls.data_size(), max_size=cls.data_size()))


@settings(max_examples=200, deadline=None)
@given(case=framed_commands())
def test_arbitrary_data_bytes_decode_or_are_reported(case: tuple[type[Command], bytes]) -> None:
    cls, payload = case
    result = decode_downlink(payload)
    if result["errors"]:
        assert result["data"]["commands"] == []
        assert result["errors"][0].startswith(
            f"channel 0x{payload[0]:02x} 0x{payload[1]:02x} at byte 0: "
        )
    else:
        (obj,) = result["data"]["commands"]
        assert obj["command"] == cls.NAME
        assert command_from_json(obj).encode() == payload
