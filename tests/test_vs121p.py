"""Tests for the VS121-P JSON report parser (user guide chapter 8).

`tests/data/vs121p/` holds one file per example in chapter 8, rewritten as valid JSON (the guide's
comments, missing commas and quotes removed) with the main spelling of each key, plus variants
keeping the guide's other spellings: `*_guide.json` as printed (`Max_counted`, `dwel_*`, the
repeated `numbering_regions`), and `dwell_interval_dwel.json` (the `dwel_` spelling on an
interval report, which the guide does not print but the parser accepts).

Expected timestamps were worked out by hand: 2022-12-20 00:00:00 UTC is 1671494400 (19346 days
since 1970), so "2022/12/20 18:15:52" at UTC+8:00 is 10:15:52 UTC = 1671494400 + 36952.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.vs121p import parse_report, parse_report_bytes, report_identity

DATA = Path(__file__).parent / "data" / "vs121p"
SNAPSHOT = "/9j/4AAQSkZJRgABAQAAQABAAD/2wDFABALDA4MChAODQ4SERATGCgaGBY"

DAY = 1671494400  # 2022-12-20 00:00:00 UTC
START = DAY + 10 * 3600 + 15 * 60 + 52  # 2022/12/20 18:15:52 at UTC+8
END = START + 3600  # 2022/12/20 19:15:52 at UTC+8

DEVICE = {"sn": "369362028335", "device_mac": "00:16:28:FA:8E:68"}


def interval(event: str) -> dict[str, Any]:
    return {
        "event": event,
        "report_type": "interval",
        **DEVICE,
        "timestamp": END,
        "period_start": START,
        "dst_status": False,
    }


def trigger(event: str) -> dict[str, Any]:
    return {
        "event": event,
        "report_type": "trigger",
        **DEVICE,
        "timestamp": START,
        "dst_status": False,
    }


EXPECTED: dict[str, dict[str, Any]] = {
    "region_interval_occupancy": {
        **interval("region_people_counting"),
        "people_count_all": 10,
        "people_count_max": 12,
        "region_count": 2,
        "region_1": 1,
        "region_2": 0,
    },
    "region_interval_counts": {
        **interval("region_people_counting"),
        "people_count_all": 10,
        "people_count_max": 12,
        "region_count": 2,
        "region_1": 1,
        "region_2": 0,
        "region_1_count": 5,
        "region_2_count": 5,
    },
    "region_trigger_occupancy": {
        **trigger("region_people_counting"),
        "people_count_all": 10,
        "region_count": 2,
        "region_1": 1,
        "region_2": 0,
    },
    "region_trigger_counts": {
        **trigger("region_people_counting"),
        "people_count_all": 10,
        "region_count": 2,
        "region_1_count": 5,
        "region_2_count": 5,
    },
    "dwell_interval": {
        **interval("dwell_time_detection"),
        "region_1_dwell_time_max": 156464,
        "region_1_dwell_time_avg": 156464,
        "region_2_dwell_time_max": 156464,
        "region_2_dwell_time_avg": 156464,
    },
    "dwell_trigger": {
        **trigger("dwell_time_detection"),
        "dwell_events": [
            # 18:15:52+03:00 is 15:15:52 UTC; 19:15:52+03:00 is 16:15:52 UTC.
            {
                "region": 1,
                "people_id": 1,
                "start": DAY + 54952,
                "end": DAY + 58552,
                "duration_s": 5.646,
            },
            # 17:15:52+03:00 is 14:15:52 UTC.
            {
                "region": 2,
                "people_id": 2,
                "start": DAY + 51352,
                "end": DAY + 58552,
                "duration_s": 5.646,
            },
        ],
    },
    "line_interval": {
        **interval("line_crossing_counting"),
        "people_in": 10,
        "people_out": 10,
        "people_total_in": 10,
        "people_total_out": 10,
    },
    "line_trigger": {**trigger("line_crossing_counting"), "line_in": 1, "line_out": 0},
    "flow_interval": {
        **interval("people_flow_analysis"),
        **{f"{a}_to_{b}": 10 for a in "abcd" for b in "abcd"},
    },
}

# Fixtures spelled as the guide prints them, and the main-spelling fixture they must equal.
SPELLING_VARIANTS = {
    "region_interval_counts_guide": "region_interval_counts",
    "dwell_trigger_guide": "dwell_trigger",
    "dwell_interval_dwel": "dwell_interval",
}


def load(name: str) -> dict[str, Any]:
    value = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(value, dict)
    return value


def errors_naming(result: Any, *parts: str) -> list[str]:
    return [e for e in result["errors"] if all(part in e for part in parts)]


# --- the guide's examples --------------------------------------------------------------------


def test_every_fixture_has_an_expectation() -> None:
    names = {path.stem for path in DATA.glob("*.json")}
    assert names == set(EXPECTED) | set(SPELLING_VARIANTS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_guide_example(name: str) -> None:
    result = parse_report(load(name))
    assert result == {"data": EXPECTED[name], "warnings": [], "errors": []}


@pytest.mark.parametrize(("variant", "main"), sorted(SPELLING_VARIANTS.items()))
def test_guide_spelling_variant(variant: str, main: str) -> None:
    result = parse_report(load(variant))
    assert result == {"data": EXPECTED[main], "warnings": [], "errors": []}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bytes_give_same_result(name: str) -> None:
    body = (DATA / f"{name}.json").read_bytes()
    assert parse_report_bytes(body) == parse_report(load(name))


def test_flow_pairs_map_to_their_own_fields() -> None:
    report = load("flow_interval")
    # Distinct values, so a swapped direction shows.
    report["flow_data"] = {
        f"{a}-{b}": 4 * i + j for i, a in enumerate("ABCD") for j, b in enumerate("ABCD")
    }
    data = parse_report(report)["data"]
    assert data["a_to_b"] == 1
    assert data["b_to_a"] == 4
    assert data["c_to_d"] == 11
    assert data["d_to_c"] == 14
    assert data["d_to_d"] == 15


def test_flow_unknown_key_is_a_warning() -> None:
    report = load("flow_interval")
    report["flow_data"]["E-F"] = 3
    result = parse_report(report)
    assert result["errors"] == []
    assert any("flow_data" in w and "unknown" in w for w in result["warnings"])
    assert "e_to_f" not in result["data"]


def test_both_spellings_present_uses_main_one_and_warns() -> None:
    report = load("region_interval_counts")
    report["Max_counted"] = 99
    result = parse_report(report)
    assert result["data"]["people_count_max"] == 12
    assert any("max_counted" in w and "Max_counted" in w for w in result["warnings"])


@pytest.mark.parametrize(
    "event", ["region_people_counting", "REGION-PEOPLE-COUNTING", " Region  People Counting "]
)
def test_event_name_spellings(event: str) -> None:
    report = load("region_trigger_counts")
    report["event"] = event
    result = parse_report(report)
    assert result["errors"] == []
    assert result["data"]["event"] == "region_people_counting"


def test_regions_by_position_when_numbering_is_absent() -> None:
    report = load("region_trigger_occupancy")
    del report["numbering_regions"]
    report["occupancy"] = [0, 1, 1]
    report["total_mapped_regions"] = 3
    data = parse_report(report)["data"]
    assert (data["region_1"], data["region_2"], data["region_3"]) == (0, 1, 1)


def test_numbering_maps_values_to_region_numbers() -> None:
    report = load("region_interval_counts")
    report["numbering_regions"] = [7, 3]
    report["current_counted"] = [4, 6]
    data = parse_report(report)["data"]
    assert data["region_7_count"] == 4
    assert data["region_3_count"] == 6
    assert data["region_7"] == 1
    assert data["region_3"] == 0
    assert "region_1_count" not in data


def test_region_count_mismatch_is_a_warning() -> None:
    report = load("region_trigger_counts")
    report["total_mapped_regions"] = 3
    result = parse_report(report)
    assert result["errors"] == []
    assert any("total_mapped_regions" in w for w in result["warnings"])


def test_missing_report_type_is_inferred_from_time_info() -> None:
    report = load("region_trigger_occupancy")
    del report["report_type"]
    result = parse_report(report)
    assert result["data"]["report_type"] == "trigger"
    assert result["data"]["timestamp"] == START
    assert any("report_type" in w for w in result["warnings"])


def test_missing_report_type_inferred_as_interval() -> None:
    report = load("line_interval")
    del report["report_type"]
    result = parse_report(report)
    assert result["errors"] == []
    assert result["data"]["report_type"] == "interval"
    assert result["data"]["timestamp"] == END


def test_dwell_event_starting_after_its_end_is_a_warning() -> None:
    report = changed(
        "dwell_trigger", ("dwell_time_data", 0, "dwell_start_time"), "2022-12-20T20:00:00+03:00"
    )
    result = parse_report(report)
    assert result["errors"] == []
    assert any("dwell_time_data[0]" in w and "after" in w for w in result["warnings"])
    assert len(result["data"]["dwell_events"]) == 2


def test_report_type_missing_and_not_inferable() -> None:
    report = load("line_interval")
    del report["report_type"]
    report["time_info"]["time"] = "2022/12/20 19:15:52"  # both kinds of time: ambiguous
    result = parse_report(report)
    assert errors_naming(result, "report_type", "missing")
    assert "timestamp" not in result["data"]
    assert result["data"]["people_in"] == 10


def test_missing_period_start_is_a_warning() -> None:
    report = changed("line_interval", ("time_info", "start_time"), DELETE)
    result = parse_report(report)
    assert result["errors"] == []
    assert any("time_info.start_time" in w for w in result["warnings"])
    assert result["data"]["timestamp"] == END
    assert "period_start" not in result["data"]


def test_missing_device_info_is_a_warning_only() -> None:
    report = load("line_trigger")
    del report["device_info"]
    result = parse_report(report)
    assert result["errors"] == []
    assert "sn" not in result["data"]
    assert any("device_info" in w for w in result["warnings"])


# --- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC+8:00", START),
        ("UTC+08:00", START),
        ("UTC-3:30", DAY + 21 * 3600 + 45 * 60 + 52),  # 18:15:52 + 3:30 = 21:45:52 UTC
        ("UTC", DAY + 18 * 3600 + 15 * 60 + 52),
        ("UTC+0:00", DAY + 18 * 3600 + 15 * 60 + 52),
        ("GMT+5:45", DAY + 12 * 3600 + 30 * 60 + 52),  # 18:15:52 - 5:45 = 12:30:52 UTC
        # Milesight firmware writes a zone name after the offset; only the offset is read.
        ("UTC-0:00 WET/GMT", DAY + 18 * 3600 + 15 * 60 + 52),
        ("UTC+8:00 China Standard Time", START),
        ("(UTC-08:00) United States - Pacific", DAY + 86400 + 2 * 3600 + 15 * 60 + 52),
        ("(UTC+05:30)Chennai, Kolkata", DAY + 12 * 3600 + 45 * 60 + 52),
        ("UTC+8:00 " + "x" * 200, START),  # a long name is cut, not refused
    ],
)
def test_local_time_uses_timezone(zone: str, expected: int) -> None:
    report = load("line_trigger")
    report["time_info"]["timezone"] = zone
    result = parse_report(report)
    assert result["errors"] == []
    assert result["data"]["timestamp"] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-12-20T18:15:52+03:00", DAY + 15 * 3600 + 15 * 60 + 52),  # own offset wins
        ("2022-12-20T18:15:52-03:30", DAY + 21 * 3600 + 45 * 60 + 52),
        ("2022-12-20T18:15:52Z", DAY + 18 * 3600 + 15 * 60 + 52),
        ("2022-12-20T18:15:52", START),  # no offset: time_info.timezone (UTC+8) applies
    ],
)
def test_iso_time(text: str, expected: int) -> None:
    report = load("line_trigger")
    report["time_info"]["time"] = text
    result = parse_report(report)
    assert result["errors"] == []
    assert result["data"]["timestamp"] == expected


def test_dst_status_adds_the_hour_to_the_standard_offset() -> None:
    # The zone is the standard one (the guide's settings page has a separate DST switch): with
    # dst_status the same local time is an hour earlier in UTC.
    report = load("line_trigger")
    report["time_info"]["dst_status"] = True
    assert parse_report(report)["data"]["timestamp"] == START - 3600


@pytest.mark.parametrize(
    "zone", ["UTC+25:00", "UTC+8:75", "", "Asia/Shanghai", "UTC+8:00China", "China UTC+8", 8, None]
)
def test_unreadable_timezone(zone: object) -> None:
    report = load("line_trigger")
    report["time_info"]["timezone"] = zone
    result = parse_report(report)
    assert errors_naming(result, "time_info.timezone")
    assert "timestamp" not in result["data"]
    assert result["data"]["line_in"] == 1


def test_period_start_after_end_is_a_warning() -> None:
    report = load("line_interval")
    report["time_info"]["start_time"] = "2022/12/20 20:00:00"
    result = parse_report(report)
    assert result["errors"] == []
    assert any("start_time" in w for w in result["warnings"])


# --- bad input -------------------------------------------------------------------------------

DELETE = object()

# (fixture, path to change, new value or DELETE, words the error must contain,
#  a field that must survive, a field that must not be produced)
BAD_INPUT: dict[str, tuple[str, tuple[Any, ...], object, tuple[str, ...], str, str | None]] = {
    "count is a string": ("region_interval_counts", ("current_total",), "10",
                          ("current_total", "string"), "region_1_count", "people_count_all"),
    "count is negative": ("region_interval_counts", ("max_counted",), -1,
                          ("max_counted", "negative"), "people_count_all", "people_count_max"),
    "count is a boolean": ("region_interval_counts", ("current_total",), True,
                           ("current_total", "boolean"), "people_count_max", "people_count_all"),
    "count is fractional": ("region_interval_counts", ("current_counted", 1), 2.5,
                            ("current_counted[1]", "2.5"), "region_1_count", "region_2_count"),
    "count is huge": ("region_interval_counts", ("current_total",), 2**40,
                      ("current_total", "maximum"), "region_1", "people_count_all"),
    "event missing": ("region_interval_counts", ("event",), DELETE,
                      ("event", "missing"), "timestamp", "people_count_all"),
    "event unknown": ("region_interval_counts", ("event",), "Heat Map",
                      ("event", "unknown", "Heat Map"), "sn", "people_count_all"),
    "event not a string": ("region_interval_counts", ("event",), 3,
                           ("event", "integer"), "sn", "event"),
    "current_total missing": ("region_interval_counts", ("current_total",), DELETE,
                              ("current_total", "missing"), "region_1", None),
    "max_counted missing": ("region_interval_occupancy", ("max_counted",), DELETE,
                            ("max_counted", "missing"), "people_count_all", None),
    "region number 17": ("region_interval_counts", ("numbering_regions", 1), 17,
                         ("numbering_regions[1]", "17", "1..16"), "region_1_count", "region_2"),
    "region number twice": ("region_interval_counts", ("numbering_regions", 1), 1,
                            ("numbering_regions[1]", "twice"), "region_1_count",
                            "region_2_count"),
    "region number a string": ("region_interval_counts", ("numbering_regions", 0), "1",
                               ("numbering_regions[0]", "string"), "region_2", "region_1"),
    "numbering not a list": ("region_interval_counts", ("numbering_regions",), "1,2",
                             ("numbering_regions", "list"), "people_count_all", "region_1"),
    "occupancy not 0/1": ("region_interval_counts", ("occupancy", 1), 2,
                          ("occupancy[1]", "2"), "region_1", "region_2"),
    "occupancy boolean": ("region_interval_counts", ("occupancy", 0), True,
                          ("occupancy[0]", "boolean"), "region_2", "region_1"),
    "occupancy not a list": ("region_interval_counts", ("occupancy",), {"1": 1},
                             ("occupancy", "list"), "region_1_count", "region_1"),
    "more values than numbers": ("region_trigger_counts", ("current_counted",), [5, 5, 5],
                                 ("current_counted[2]", "numbering_regions"), "region_2_count",
                                 None),
    "too many mapped regions": ("region_trigger_counts", ("total_mapped_regions",), 17,
                                ("total_mapped_regions", "16"), "region_1_count",
                                "region_count"),
    "dwell region 0": ("dwell_interval", ("dwell_time_data", 1, "region"), 0,
                       ("dwell_time_data[1].region", "1..16"), "region_1_dwell_time_max", None),
    "dwell seconds a string": ("dwell_interval", ("dwell_time_data", 0, "avg_dwell_time"), "1h",
                               ("dwell_time_data[0].avg_dwell_time", "string"),
                               "region_1_dwell_time_max", "region_1_dwell_time_avg"),
    "dwell seconds negative": ("dwell_interval", ("dwell_time_data", 1, "max_dwell_time"), -1.5,
                               ("dwell_time_data[1].max_dwell_time", "negative"),
                               "region_2_dwell_time_avg", "region_2_dwell_time_max"),
    "dwell entry not an object": ("dwell_interval", ("dwell_time_data", 0), 5,
                                  ("dwell_time_data[0]", "object"), "region_2_dwell_time_max",
                                  "region_1_dwell_time_max"),
    "dwell data missing": ("dwell_interval", ("dwell_time_data",), DELETE,
                           ("dwell_time_data", "missing"), "timestamp", None),
    "dwell start unreadable": ("dwell_trigger", ("dwell_time_data", 0, "dwell_start_time"),
                               "yesterday", ("dwell_time_data[0].dwell_start_time", "yesterday"),
                               "dwell_events", None),
    "dwell duration negative": ("dwell_trigger", ("dwell_time_data", 1, "duration"), -5,
                                ("dwell_time_data[1].duration", "negative"), "dwell_events",
                                None),
    "dwell person missing": ("dwell_trigger", ("dwell_time_data", 0, "people_id"), DELETE,
                             ("dwell_time_data[0].people_id", "missing"), "dwell_events", None),
    "dwell guide-spelled end unreadable": ("dwell_trigger_guide",
                                           ("dwel_time_data", 1, "dwel_end_time"), 17,
                                           ("dwel_time_data[1].dwel_end_time", "integer"),
                                           "dwell_events", None),
    "line in negative": ("line_interval", ("in_counted",), -3,
                         ("in_counted", "negative"), "people_out", "people_in"),
    "line cumulative missing": ("line_interval", ("total_data", "out_cumulative_counted"),
                                DELETE, ("total_data.out_cumulative_counted", "missing"),
                                "people_total_in", "people_total_out"),
    "line trigger data missing": ("line_trigger", ("line_trigger_data",), DELETE,
                                  ("line_trigger_data", "missing"), "timestamp", "line_in"),
    "line trigger in a string": ("line_trigger", ("line_trigger_data", "in"), "one",
                                 ("line_trigger_data.in", "string"), "line_out", "line_in"),
    "flow key missing": ("flow_interval", ("flow_data", "C-D"), DELETE,
                         ("flow_data.C-D", "missing"), "c_to_c", "c_to_d"),
    "flow value boolean": ("flow_interval", ("flow_data", "A-B"), False,
                           ("flow_data.A-B", "boolean"), "a_to_a", "a_to_b"),
    "flow data not an object": ("flow_interval", ("flow_data",), [10] * 16,
                                ("flow_data", "object"), "timestamp", "a_to_a"),
    "end time unreadable": ("region_interval_occupancy", ("time_info", "end_time"),
                            "2022/13/45 99:00:00", ("time_info.end_time", "2022/13/45"),
                            "people_count_all", "timestamp"),
    "end time missing": ("region_interval_occupancy", ("time_info", "end_time"), DELETE,
                         ("time_info.end_time", "missing"), "period_start", "timestamp"),
    "trigger time unreadable": ("region_trigger_occupancy", ("time_info", "time"), "soon",
                                ("time_info.time", "soon"), "people_count_all", "timestamp"),
    "trigger time a number": ("region_trigger_occupancy", ("time_info", "time"), 1671531352,
                              ("time_info.time", "integer"), "region_1", "timestamp"),
    "timezone missing": ("region_interval_occupancy", ("time_info", "timezone"), DELETE,
                         ("time_info.end_time", "no UTC offset", "timezone"), "region_1",
                         "timestamp"),
    "time_info missing": ("region_interval_occupancy", ("time_info",), DELETE,
                          ("time_info", "missing"), "people_count_all", "timestamp"),
    "report_type unknown": ("region_interval_occupancy", ("report_type",), "sometimes",
                            ("report_type", "sometimes"), "people_count_all", "timestamp"),
    "serial number an integer": ("line_trigger", ("device_info", "device_sn"), 369362028335,
                                 ("device_info.device_sn", "integer"), "line_in", "sn"),
    "serial number empty": ("line_trigger", ("device_info", "device_sn"), "",
                            ("device_info.device_sn", "empty"), "line_in", "sn"),
    "dwell seconds not finite": ("dwell_interval", ("dwell_time_data", 0, "max_dwell_time"),
                                 float("nan"), ("dwell_time_data[0].max_dwell_time", "finite"),
                                 "region_1_dwell_time_avg", "region_1_dwell_time_max"),
    "dwell seconds huge": ("dwell_interval", ("dwell_time_data", 0, "avg_dwell_time"), 2**40,
                           ("dwell_time_data[0].avg_dwell_time", "maximum"),
                           "region_1_dwell_time_max", "region_1_dwell_time_avg"),
    "dwell region twice": ("dwell_interval", ("dwell_time_data", 1, "region"), 1,
                           ("dwell_time_data[1].region", "twice"), "region_1_dwell_time_max",
                           "region_2_dwell_time_max"),
    "dwell maximum missing": ("dwell_interval", ("dwell_time_data", 0, "max_dwell_time"), DELETE,
                              ("dwell_time_data[0].max_dwell_time", "missing"),
                              "region_1_dwell_time_avg", "region_1_dwell_time_max"),
    "time before 2000": ("region_trigger_occupancy", ("time_info", "time"),
                         "1970/01/01 08:00:00", ("time_info.time", "clock"), "region_1",
                         "timestamp"),
    "time after 2099": ("line_interval", ("time_info", "end_time"), "9999-12-31T23:59:59-14:00",
                        ("time_info.end_time", "clock"), "people_in", "timestamp"),
}  # fmt: skip


def changed(name: str, path: tuple[Any, ...], value: object) -> dict[str, Any]:
    report = load(name)
    parent: Any = report
    for step in path[:-1]:
        parent = parent[step]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return report


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_named_and_the_rest_kept(case: str) -> None:
    name, path, value, words, kept, dropped = BAD_INPUT[case]
    result = parse_report(changed(name, path, value))
    assert errors_naming(result, *words), result["errors"]
    assert kept in result["data"]
    if dropped is not None:
        assert dropped not in result["data"]


def test_bad_dwell_event_is_dropped_and_the_other_kept() -> None:
    report = changed("dwell_trigger", ("dwell_time_data", 0, "region"), 99)
    result = parse_report(report)
    assert errors_naming(result, "dwell_time_data[0].region", "99")
    assert result["data"]["dwell_events"] == EXPECTED["dwell_trigger"]["dwell_events"][1:]


def test_position_past_region_16_is_an_error() -> None:
    report = load("region_trigger_occupancy")
    del report["numbering_regions"]
    report["occupancy"] = [1] * 17
    result = parse_report(report)
    assert errors_naming(result, "occupancy[16]")
    assert result["data"]["region_16"] == 1
    assert "region_17" not in result["data"]


@pytest.mark.parametrize("report", [[1, 2], "report", 3, None, True])
def test_report_not_an_object(report: object) -> None:
    result = parse_report(report)
    assert result["data"] == {}
    assert errors_naming(result, "report", "object")


def test_errors_are_capped() -> None:
    report = load("dwell_trigger")
    report["dwell_time_data"] = ["bad"] * 200
    errors = parse_report(report)["errors"]
    assert len(errors) == 33
    assert "168 further errors" in errors[-1]


# --- privacy and message size ----------------------------------------------------------------


def all_text(result: Any) -> str:
    return repr(result)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_snapshot_is_dropped(name: str) -> None:
    report = load(name)
    report["snapshot"] = SNAPSHOT + "-marker"
    result = parse_report(report)
    assert "snapshot" not in all_text(result)
    assert SNAPSHOT not in all_text(result)


def test_snapshot_dropped_even_when_the_report_is_broken() -> None:
    image = SNAPSHOT * 40  # real snapshots are kilobytes of base64
    report = load("region_interval_counts")
    report["snapshot"] = {"image": image}
    report["current_total"] = "many"
    report["time_info"] = image
    report["event"] = image
    result = parse_report(report)
    assert errors_naming(result, "time_info")
    assert errors_naming(result, "event")
    assert SNAPSHOT not in all_text(result)


@pytest.mark.parametrize(
    "path",
    [
        ("event",),
        ("device_info", "device_sn"),
        ("time_info", "end_time"),
        ("time_info", "timezone"),
        ("report_type",),
        ("current_total",),
    ],
)
def test_long_values_are_never_echoed(path: tuple[str, ...]) -> None:
    secret = "Q" * 65
    result = parse_report(changed("region_interval_counts", path, secret))
    assert errors_naming(result, ".".join(path))
    assert "Q" * 65 not in all_text(result)


def test_huge_integer_is_not_printed() -> None:
    result = parse_report(changed("region_interval_counts", ("current_total",), 10**200))
    assert errors_naming(result, "current_total")
    assert "0" * 30 not in all_text(result)


# --- bytes -----------------------------------------------------------------------------------


def test_invalid_utf8() -> None:
    result = parse_report_bytes(b'{"event": "\xff"}')
    assert errors_naming(result, "body", "UTF-8")
    assert result["data"] == {}


def test_invalid_json_as_printed_in_the_guide() -> None:
    body = b'{\n  "current_total": 10 //comment\n  "occupancy": [1, 0]\n}'
    result = parse_report_bytes(body)
    assert errors_naming(result, "body", "JSON")
    assert result["data"] == {}


def test_body_over_the_limit_is_not_parsed() -> None:
    body = (DATA / "line_trigger.json").read_bytes()
    result = parse_report_bytes(body, max_bytes=len(body) - 1)
    assert errors_naming(result, "body", "limit")
    assert result["data"] == {}
    assert parse_report_bytes(body, max_bytes=len(body))["errors"] == []


def test_default_limit_is_one_mebibyte() -> None:
    assert errors_naming(parse_report_bytes(b" " * (1024 * 1024 + 1)), "limit")
    assert not errors_naming(parse_report_bytes(b" " * (1024 * 1024)), "limit")


def test_byte_order_mark_is_accepted() -> None:
    body = b"\xef\xbb\xbf" + (DATA / "line_trigger.json").read_bytes()
    assert parse_report_bytes(body)["data"] == EXPECTED["line_trigger"]


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b"1" * 5000, b"", b"null", b'"text"'],
    ids=["deep", "long", "empty", "null", "string"],
)
def test_unusable_bodies_give_errors(body: bytes) -> None:
    result = parse_report_bytes(body)
    assert result["errors"]
    assert result["data"] == {}


def test_body_of_wrong_type() -> None:
    result = parse_report_bytes("{}")  # type: ignore[arg-type]
    assert errors_naming(result, "body", "bytes")


# --- identity --------------------------------------------------------------------------------


def test_identity_of_interval_report() -> None:
    key = report_identity(parse_report(load("region_interval_counts")))
    assert key == json.dumps(
        ["369362028335", "region_people_counting", "interval", END], separators=(",", ":")
    )


def test_identity_is_stable_across_spellings_and_snapshots() -> None:
    first = load("region_interval_counts")
    again = load("region_interval_counts_guide")
    again["snapshot"] = "different image"
    key = report_identity(parse_report(first))
    assert key is not None
    assert key == report_identity(parse_report(again))


def test_identity_of_trigger_report_includes_time_and_content() -> None:
    key = report_identity(parse_report(load("line_trigger")))
    assert key is not None
    sn, event, kind, stamp, digest = json.loads(key)
    assert [sn, event, kind, stamp] == ["369362028335", "line_crossing_counting", "trigger", START]
    assert isinstance(digest, str)
    assert digest
    assert key == report_identity(parse_report(load("line_trigger")))
    # Another crossing reported in the same second is a different report.
    other = changed("line_trigger", ("line_trigger_data", "out"), 1)
    assert report_identity(parse_report(other)) != key


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("time_info", "end_time"), "2022/12/20 20:15:52"),
        (("device_info", "device_sn"), "1"),
        (("event",), "People Flow Analysis"),
        (("report_type",), "trigger"),
    ],
)
def test_identity_changes_with_each_part(path: tuple[str, ...], value: object) -> None:
    base = report_identity(parse_report(load("line_interval")))
    report = changed("line_interval", path, value)
    if path == ("report_type",):
        report["time_info"]["time"] = report["time_info"]["end_time"]
    other = report_identity(parse_report(report))
    assert other is not None
    assert other != base


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("device_info",), DELETE),
        (("time_info",), DELETE),
        (("time_info", "end_time"), DELETE),
        (("event",), "Heat"),
        (("report_type",), "sometimes"),
    ],
)
def test_identity_needs_every_part(path: tuple[str, ...], value: object) -> None:
    assert report_identity(parse_report(changed("line_interval", path, value))) is None


def test_identity_takes_the_serial_from_the_caller_when_the_report_has_none() -> None:
    report = changed("line_interval", ("device_info",), DELETE)
    key = report_identity(parse_report(report), "369362028335")
    assert key == report_identity(parse_report(load("line_interval")))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("time_info", "end_time"), "never"),
        (("time_info", "timezone"), "Asia/Shanghai"),
        (("time_info", "end_time"), "1970/01/01 08:10:00"),
    ],
)
def test_identity_of_report_with_unreadable_time(path: tuple[str, ...], value: object) -> None:
    # Stable for redeliveries (also with another snapshot), different for another period or
    # other counts, so a report without a usable time is neither counted twice nor dropped.
    report = changed("line_interval", path, value)
    result = parse_report(report)
    assert "timestamp" not in result["data"]
    key = report_identity(result)
    assert key is not None
    again = copy.deepcopy(report)
    again["snapshot"] = "another image"
    assert report_identity(parse_report(again)) == key
    later = copy.deepcopy(report)
    later["time_info"]["start_time"] = "2022/12/20 19:15:52"
    assert report_identity(parse_report(later)) != key
    more = copy.deepcopy(report)
    more["in_counted"] = 99
    assert report_identity(parse_report(more)) != key


def test_dst_flag_tells_apart_the_repeated_hour() -> None:
    # The autumn change: the same local time and zone string, once in summer time, once not.
    summer = changed("line_interval", ("time_info", "dst_status"), True)
    winter = changed("line_interval", ("time_info", "dst_status"), False)
    # The summer report is an hour earlier in UTC (the zone is the standard offset).
    summer_time = parse_report(summer)["data"]["timestamp"]
    assert summer_time == parse_report(winter)["data"]["timestamp"] - 3600
    first, second = report_identity(parse_report(summer)), report_identity(parse_report(winter))
    assert first is not None
    assert second is not None
    assert first != second
    # Standard-time keys are those of reports without the flag, as before the flag was read.
    assert second == report_identity(
        parse_report(changed("line_interval", ("time_info", "dst_status"), DELETE))
    )


def test_dst_flag_of_wrong_type_is_a_warning() -> None:
    result = parse_report(changed("line_interval", ("time_info", "dst_status"), "yes"))
    assert result["errors"] == []
    assert any("dst_status" in w for w in result["warnings"])


# --- properties ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=40,
)


def check_shape(result: Any) -> None:
    assert set(result) == {"data", "warnings", "errors"}
    # Decoded data stays plain JSON, so it can be stored and compared as is.
    json.dumps(result["data"], allow_nan=False)
    for message in result["warnings"] + result["errors"]:
        assert isinstance(message, str)
        assert len(message) <= 200


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_never_raises_on_json_values(value: object) -> None:
    check_shape(parse_report(value))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_never_raises_on_bytes(body: bytes) -> None:
    check_shape(parse_report_bytes(body))


def paths(value: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


FIXTURES = {path.stem: load(path.stem) for path in sorted(DATA.glob("*.json"))}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_never_raises_on_damaged_examples(draw: st.DataObject) -> None:
    report = copy.deepcopy(FIXTURES[draw.draw(st.sampled_from(sorted(FIXTURES)))])
    for _ in range(draw.draw(st.integers(1, 3))):
        path = draw.draw(st.sampled_from(list(paths(report))))
        parent: Any = report
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw.draw(json_values)
    result = parse_report(report)
    check_shape(result)
    assert SNAPSHOT not in all_text(result)
    key = report_identity(result)
    assert key is None or isinstance(key, str)
