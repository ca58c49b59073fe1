"""Per-point status: current, stale, not reported by the latest report of its kind, never."""

from __future__ import annotations

from gateway.state import STATUS_NOT_REPORTED, STATUS_ONLINE, GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_000.0


def make(model: Model = Model.VS121) -> GatewayState:
    spec = SensorSpec(id="s1", name="Hall", number=1, model=model, region_count=4)
    return GatewayState([(spec, 600.0, 300.0)], clock=lambda: T0)


def test_region_counts_only_give_the_total_as_their_sum() -> None:
    state = make()
    regions = {f"region_{n}_count": 0 for n in range(1, 9)}
    regions.update(region_1_count=2, region_2_count=1, region_8_count=3)
    state.apply(Report("s1", regions, T0))
    assert state.current("s1")["people_count_all"] == 6  # region 8 counts though not mapped
    assert state.point_status("s1")["people_count_all"] == "current"


def test_a_reported_total_is_never_replaced_by_the_sum() -> None:
    state = make()
    state.apply(Report("s1", {"people_count_all": 9, "region_1_count": 2}, T0))
    assert state.current("s1")["people_count_all"] == 9


def test_values_of_a_previous_reporting_type_are_marked_until_reported_again() -> None:
    state = make()
    state.apply(Report("s1", {"region_1_count": 13, "region_2_count": 0}, T0, "a"))
    state.apply(Report("s1", {"people_count_all": 2, "region_count": 4, "region_1": 1}, T0, "b"))
    points = state.point_status("s1")
    assert points["region_1_count"] == "not-reported"
    assert points["people_count_all"] == "current"
    assert points["region_1"] == "current"
    assert points["dwell_time_avg"] == "never-reported"
    assert state.current("s1")["status"] == STATUS_ONLINE | STATUS_NOT_REPORTED
    assert state.usable("s1").get("region_1_count") is None
    # A line report says nothing about occupancy values; a trigger nothing about periodic ones.
    state.apply(Report("s1", {"line_in": 1, "line_out": 0}, T0, "c"))
    state.apply(Report("s1", {"people_in": 1, "people_out": 0}, T0, "d"))
    assert state.point_status("s1")["region_1"] == "current"
    # Back to region counting: the region counts are current again, the bitmap is not.
    state.apply(Report("s1", {"region_1_count": 1, "region_2_count": 0}, T0, "e"))
    points = state.point_status("s1")
    assert points["region_1_count"] == "current"
    assert points["region_1"] == "not-reported"


def test_not_reported_survives_a_restart() -> None:
    state = make()
    state.apply(Report("s1", {"region_1_count": 13}, T0, "a"))
    state.apply(Report("s1", {"people_count_all": 2, "region_1": 1}, T0, "b"))
    doc = state.sensors["s1"].to_json()
    again = make()
    again.restore("s1", doc)
    assert again.point_status("s1")["region_1_count"] == "not-reported"


def test_vs121p_without_total_data_marks_the_sensor_totals() -> None:
    state = make(Model.VS121_P)
    full = {"people_in": 1, "people_out": 0, "people_total_in": 5, "people_total_out": 2}
    state.apply(Report("s1", full, T0, "a"))
    state.apply(Report("s1", {"people_in": 0, "people_out": 1}, T0 + 300, "b"))
    assert state.point_status("s1")["people_total_in"] == "not-reported"


def test_a_partial_report_marks_nothing() -> None:
    # A network server's own codec may send only some fields: that is no change of type.
    state = make()
    state.apply(Report("s1", {"region_1_count": 2, "region_2_count": 1}, T0, "a"))
    state.apply(Report("s1", {"people_count_all": 3}, T0, "b"))
    state.apply(Report("s1", {"region_3_count": 0}, T0, "c"))
    assert state.current("s1")["people_count_all"] == 3  # a partial report is no total
    points = state.point_status("s1")
    assert points["region_1_count"] == "current"
    assert state.current("s1")["status"] == STATUS_ONLINE
