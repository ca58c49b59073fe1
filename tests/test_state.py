"""The counting rules of the sensor state, one test per rule."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.state import (
    STATUS_NEVER,
    STATUS_ONLINE,
    STATUS_STALE,
    Change,
    GatewayState,
    Outcome,
    Report,
)
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make(
    model: Model = Model.VS121, regions: int = 4, stale: float = 600.0, clock: Clock | None = None
) -> tuple[GatewayState, Clock, list[Change]]:
    clock = clock or Clock()
    spec = SensorSpec(id="s1", name="Hall", number=1, model=model, region_count=regions)
    state = GatewayState([(spec, stale, 300.0)], clock=clock)
    changes: list[Change] = []
    state.subscribe(changes.append)
    return state, clock, changes


def rep(
    data: dict[str, Any], at: float = T0, key: str | None = None, fcnt: int | None = None
) -> Report:
    return Report("s1", data, at, key, fcnt)


def totals(state: GatewayState) -> tuple[int, int]:
    v = state.current("s1")
    return int(v["gateway_total_in"]), int(v["gateway_total_out"])


def test_values_are_applied_and_changes_emitted() -> None:
    state, _, changes = make()
    result = state.apply(rep({"people_count_all": 3, "region_1": 1, "region_2_count": 2}))
    assert result.outcome is Outcome.APPLIED
    assert state.current("s1")["people_count_all"] == 3
    assert changes[-1].values["people_count_all"] == 3
    assert changes[-1].online is True


def test_same_dedup_key_changes_nothing() -> None:
    state, _, changes = make()
    state.apply(rep({"people_in": 5, "people_out": 1}, key="id:a"))
    n = len(changes)
    again = state.apply(rep({"people_in": 5, "people_out": 1}, key="id:a"))
    assert again.outcome is Outcome.DUPLICATE
    assert totals(state) == (5, 1)
    assert len(changes) == n


def test_frame_counter_reset_after_rejoin_is_accepted() -> None:
    state, _, _ = make()
    for fcnt in (10, 11, 12):
        state.apply(rep({"people_in": 1}, at=T0 + fcnt, key=f"fc:{fcnt}:x{fcnt}", fcnt=fcnt))
    assert totals(state)[0] == 3
    # The device rejoined: frame counter back to 1, new content.
    r = state.apply(rep({"people_in": 1}, at=T0 + 20, key="fc:1:new", fcnt=1))
    assert r.outcome is Outcome.APPLIED
    assert totals(state)[0] == 4
    # A redelivery of a frame from before the rejoin window is still a duplicate if remembered.
    dup = state.apply(rep({"people_in": 1}, at=T0 + 21, key="fc:1:new", fcnt=1))
    assert dup.outcome is Outcome.DUPLICATE


def test_history_never_overwrites_newer_values() -> None:
    state, _, _ = make()
    state.apply(rep({"people_count_all": 7, "timestamp": int(T0)}, at=T0))
    old = {"history": [{"timestamp": int(T0) - 600, "people_count_all": 2, "region_count": 4}]}
    state.apply(rep(old, at=T0 + 1, key="k2"))
    assert state.current("s1")["people_count_all"] == 7
    assert state.current("s1")["region_count"] == 4  # nothing newer for this one: taken


def test_history_newer_than_present_is_taken() -> None:
    state, _, _ = make()
    state.apply(rep({"people_count_all": 7, "timestamp": int(T0)}, at=T0))
    newer = {"history": [{"timestamp": int(T0) + 60, "people_count_all": 9}]}
    state.apply(rep(newer, at=T0 + 61, key="k2"))
    assert state.current("s1")["people_count_all"] == 9


def test_periodic_lines_counted_once_live_then_history() -> None:
    state, _, _ = make()
    ts = int(T0)
    state.apply(rep({"timestamp": ts, "people_in": 4, "people_out": 2}, key="a"))
    history = {"history": [{"timestamp": ts, "people_in": 4, "people_out": 2}]}
    state.apply(rep(history, at=T0 + 5, key="b"))
    assert totals(state) == (4, 2)


def test_history_fills_a_gap_exactly_once() -> None:
    state, _, _ = make()
    ts = int(T0)
    state.apply(rep({"timestamp": ts, "people_in": 1, "people_out": 0}, key="a"))
    # Outage: two periods lost live, then retransmitted, then retransmitted again.
    gap = {
        "history": [
            {"timestamp": ts + 300, "people_in": 2, "people_out": 1},
            {"timestamp": ts + 600, "people_in": 3, "people_out": 1},
        ]
    }
    state.apply(rep(gap, at=T0 + 900, key="b"))
    state.apply(rep(gap, at=T0 + 905, key="c"))
    assert totals(state) == (6, 2)


def test_history_matches_untimed_live_report_within_window() -> None:
    state, _, _ = make()
    state.apply(rep({"people_in": 3, "people_out": 1}, at=T0, key="a"))  # no sensor time
    history = {"history": [{"timestamp": int(T0) + 20, "people_in": 3, "people_out": 1}]}
    state.apply(rep(history, at=T0 + 30, key="b"))
    assert totals(state) == (3, 1)
    far = {"history": [{"timestamp": int(T0) - 3600, "people_in": 5, "people_out": 0}]}
    state.apply(rep(far, at=T0 + 40, key="c"))
    assert totals(state) == (8, 1)


def test_untimed_live_periods_close_together_all_count() -> None:
    state, _, _ = make()
    for i in range(5):
        state.apply(rep({"people_in": 1, "people_out": 1}, at=T0 + i, key=f"k{i}"))
    assert totals(state) == (5, 5)


def test_triggers_then_periodic_are_not_added_twice() -> None:
    state, _, _ = make()
    state.apply(rep({"line_in": 1, "line_out": 0}, at=T0 + 1, key="t1"))
    state.apply(rep({"line_in": 2, "line_out": 1}, at=T0 + 2, key="t2"))
    assert totals(state) == (3, 1)  # triggers move totals at once
    state.apply(rep({"people_in": 3, "people_out": 1}, at=T0 + 10, key="p1"))
    assert totals(state) == (3, 1)  # the periodic report covers the same crossings
    state.apply(rep({"people_in": 2, "people_out": 0}, at=T0 + 20, key="p2"))
    assert totals(state) == (5, 1)


def test_periodic_smaller_than_triggers_never_decreases_totals() -> None:
    state, _, _ = make()  # report interval 300 s
    state.apply(rep({"line_in": 5}, at=T0, key="t"))
    state.apply(rep({"people_in": 2, "people_out": 0}, at=T0 + 10, key="p"))
    assert totals(state) == (5, 0)  # the period counts the larger of the two views
    state.apply(rep({"people_in": 4, "people_out": 0}, at=T0 + 310, key="p2"))
    assert totals(state) == (9, 0)


def test_trigger_after_its_period_was_counted_is_not_added() -> None:
    # A VS121-P trigger POST overtaken by the interval POST that already includes it.
    state, _, _ = make()
    ts = int(T0)
    state.apply(rep({"timestamp": ts, "people_in": 3, "people_out": 1}, key="p"))
    state.apply(rep({"timestamp": ts - 30, "line_in": 1, "line_out": 0}, at=T0 + 5, key="t"))
    assert totals(state) == (3, 1)
    # The same when the lost trigger comes back as history.
    history = {"history": [{"timestamp": ts - 40, "line_in": 1, "line_out": 1}]}
    state.apply(rep(history, at=T0 + 9, key="h"))
    assert totals(state) == (3, 1)


def test_triggers_only_count_against_their_own_period() -> None:
    state, _, _ = make()
    ts = int(T0)
    state.apply(rep({"timestamp": ts - 10, "line_in": 2}, key="t1"))  # period ending at ts
    state.apply(rep({"timestamp": ts + 10, "line_in": 1}, key="t2"))  # the next period
    assert totals(state) == (3, 0)
    state.apply(rep({"timestamp": ts, "people_in": 2, "people_out": 0}, key="p1"))
    assert totals(state) == (3, 0)
    state.apply(rep({"timestamp": ts + 300, "people_in": 4, "people_out": 0}, key="p2"))
    assert totals(state) == (6, 0)  # t2 belonged to this period: 4 in all, 1 already counted


def test_two_different_triggers_in_the_same_second_both_count() -> None:
    state, _, _ = make()
    ts = int(T0)
    state.apply(rep({"timestamp": ts, "line_in": 1, "line_out": 0}, key="a"))
    state.apply(rep({"timestamp": ts, "line_in": 0, "line_out": 1}, key="b"))
    assert totals(state) == (1, 1)


def test_late_frame_is_not_taken_for_a_rejoin() -> None:
    state, _, _ = make()
    for fcnt in (100, 101, 102):
        data = {"line_in": fcnt - 99}
        state.apply(rep(data, at=T0 + fcnt, key=f"fc:{fcnt}:x", fcnt=fcnt))
    assert totals(state) == (6, 0)
    # The broker redelivers 100, 101, 102 after a reconnect: all duplicates.
    for fcnt in (100, 101, 102):
        result = state.apply(rep({"line_in": fcnt - 99}, key=f"fc:{fcnt}:x", fcnt=fcnt))
        assert result.outcome is Outcome.DUPLICATE
    assert totals(state) == (6, 0)


def test_history_from_a_fast_clock_cannot_freeze_live_values() -> None:
    state, _, _ = make()
    fast = {"history": [{"timestamp": int(T0) + 3 * 86400, "people_count_all": 5}]}
    state.apply(rep(fast, at=T0, key="h"))
    state.apply(rep({"people_count_all": 1}, at=T0 + 60, key="l1"))
    assert state.current("s1")["people_count_all"] == 1


def test_history_matches_a_live_report_with_a_wrong_sensor_clock() -> None:
    state, _, _ = make()
    wrong = 1_000_000  # an unsynchronised clock, far from the receive time
    state.apply(rep({"timestamp": wrong, "people_in": 5, "people_out": 2}, key="a"))
    again = {"history": [{"timestamp": wrong, "people_in": 5, "people_out": 2}]}
    state.apply(rep(again, at=T0 + 60, key="b"))
    assert totals(state) == (5, 2)


def test_hostile_numbers_are_refused_not_raised() -> None:
    state, _, _ = make()
    result = state.apply(
        rep(
            {
                "people_count_all": 10**400,
                "people_count_max": float("inf"),
                "timestamp": 10**400,
                "history": 5,
                "region_1_count": 2,
            }
        )
    )
    assert result.outcome is Outcome.APPLIED
    assert "people_count_all" not in state.current("s1")
    assert "people_count_max" not in state.current("s1")
    assert state.current("s1")["region_1_count"] == 2
    assert any("history" in p for p in result.problems)


def test_history_trigger_records_counted_once() -> None:
    state, _, _ = make()
    rec = {"history": [{"timestamp": int(T0) - 100, "line_in": 2, "line_out": 1}]}
    state.apply(rep(rec, key="a"))
    state.apply(rep(rec, key="b"))
    assert totals(state) == (2, 1)


def test_totals_wrap_at_32_bits() -> None:
    state, _, _ = make()
    sensor = state.sensors["s1"]
    sensor.ledger.total_in = (1 << 32) - 1
    state.apply(rep({"people_in": 2}, key="a"))
    assert state.current("s1")["gateway_total_in"] == 1


def test_reset_zeroes_totals_and_ignores_older_history() -> None:
    state, clock, _ = make()
    state.apply(rep({"people_in": 9, "people_out": 4}, key="a"))
    clock.now = T0 + 100
    state.reset_totals("s1")
    assert totals(state) == (0, 0)
    old = {"history": [{"timestamp": int(T0) - 50, "people_in": 7, "people_out": 0}]}
    state.apply(rep(old, at=T0 + 110, key="b"))
    assert totals(state) == (0, 0)


def test_line_occupancy_is_in_minus_out_floored() -> None:
    state, _, _ = make()
    state.apply(rep({"people_in": 2, "people_out": 5}, key="a"))
    assert state.current("s1")["line_occupancy"] == 0
    state.apply(rep({"people_in": 6, "people_out": 0}, at=T0 + 1, key="b"))
    assert state.current("s1")["line_occupancy"] == 3


def test_unmapped_region_with_data_is_a_problem_not_a_value() -> None:
    state, _, _ = make(regions=2)
    result = state.apply(rep({"region_3_count": 4, "region_4_count": 0, "region_1_count": 1}))
    assert result.outcome is Outcome.APPLIED
    assert result.problems == ("region_3_count=4 for a region that is not mapped",)
    assert "region_3_count" not in state.current("s1")
    assert state.current("s1")["region_1_count"] == 1


def test_wrong_types_are_problems_and_the_rest_is_used() -> None:
    state, _, _ = make()
    result = state.apply(rep({"people_count_all": "7", "people_count_max": 9}))
    assert result.problems == ("people_count_all: expected a number, got str",)
    assert state.current("s1")["people_count_max"] == 9


def test_freshness_transitions_once_each_way() -> None:
    state, clock, changes = make(stale=60)
    assert state.current("s1") == {}
    state.tick()
    assert state.current("s1")["status"] == STATUS_NEVER
    state.apply(rep({"people_count_all": 1}))
    assert state.current("s1")["status"] == STATUS_ONLINE
    clock.now = T0 + 61
    state.tick()
    state.tick()
    offline = [c for c in changes if c.online is False]
    assert len(offline) == 1
    assert state.current("s1")["status"] == STATUS_STALE
    assert state.current("s1")["people_count_all"] == 1  # kept, flagged by status
    state.apply(rep({"people_count_all": 2}, at=T0 + 62))
    online = [c for c in changes if c.online is True]
    assert len(online) == 2  # first report, then recovery


def test_implausible_sensor_clock_does_not_freeze_values() -> None:
    state, _, _ = make()
    state.apply(rep({"people_count_all": 1, "timestamp": 4_000_000_000}, at=T0))
    state.apply(rep({"people_count_all": 2}, at=T0 + 10))
    assert state.current("s1")["people_count_all"] == 2


def test_state_round_trips_through_json() -> None:
    state, clock, _ = make()
    state.apply(rep({"people_count_all": 4, "people_in": 3, "people_out": 1}, key="a", fcnt=5))
    doc = state.sensors["s1"].to_json()
    fresh, _, _ = make(clock=clock)
    fresh.restore("s1", doc)
    assert totals(fresh) == (3, 1)
    assert fresh.current("s1")["people_count_all"] == 4
    dup = fresh.apply(rep({"people_in": 3, "people_out": 1}, key="a", fcnt=5))
    assert dup.outcome is Outcome.DUPLICATE


@pytest.mark.parametrize(
    "broken",
    [
        {"version": 99},
        {"version": 1, "id": "other"},
        {"version": 1, "id": "s1", "values": {"people_count_all": "x"}},
    ],
)
def test_restore_rejects_malformed_documents(broken: dict[str, Any]) -> None:
    state, _, _ = make()
    with pytest.raises((ValueError, TypeError, KeyError)):
        state.restore("s1", broken)


def test_old_report_delivered_late_is_not_fresh() -> None:
    # A message the broker kept for two hours: its values are used, the sensor is not "online".
    state, _, changes = make(stale=600)
    result = state.apply(rep({"people_count_all": 4}, at=T0 - 7200))
    assert result.outcome is Outcome.APPLIED
    assert state.current("s1")["people_count_all"] == 4
    assert state.current("s1")["online"] == 0
    assert state.current("s1")["status"] == STATUS_STALE
    assert all(c.online is not True for c in changes)
