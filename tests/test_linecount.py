"""Line-crossing totals whatever the order, batching and clocks of the reports (fast, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.state import GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_400.0  # a multiple of 600: period boundaries fall on round numbers
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make(interval: float = 600.0, model: Model = Model.VS121) -> GatewayState:
    spec = SensorSpec(id="s1", name="Hall", number=1, model=model, region_count=4)
    return GatewayState([(spec, 3 * interval, interval)], clock=Clock())


class Feed:
    """Sends reports to the state with fresh dedup keys, as the ingest layer would."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.n = 0

    def send(self, at: float, **data: Any) -> None:
        self.n += 1
        self.state.apply(Report("s1", data, at, f"k{self.n}"))

    def totals(self) -> tuple[int, int]:
        v = self.state.current("s1")
        return int(v["gateway_total_in"]), int(v["gateway_total_out"])


def test_boundary_example_trigger_after_its_periodic_report_is_not_doubled() -> None:
    # Trigger A at 1196 (crossing at 1196), periodic (600, 1200] at 1200 with A and B, trigger
    # B at 1210: the batched crossing at 1198 reported at the end of its 15 s window.
    feed = Feed(make())
    feed.send(T0 + 1196, line_in=1, line_out=0)
    feed.send(T0 + 1200, people_in=2, people_out=0)
    feed.send(T0 + 1210, line_in=1, line_out=0)
    assert feed.totals() == (2, 0)
    feed.send(T0 + 1800, people_in=0, people_out=0)  # the next period was quiet
    assert feed.totals() == (2, 0)


def test_late_trigger_that_was_a_new_crossing_is_counted_by_the_next_period() -> None:
    # Same messages, but B's crossing was at 1205 and the periodic report's second crossing
    # had its trigger lost: the total is 2 at first, then the next period makes it 3.
    feed = Feed(make())
    feed.send(T0 + 1196, line_in=1, line_out=0)
    feed.send(T0 + 1200, people_in=2, people_out=0)
    feed.send(T0 + 1210, line_in=1, line_out=0)
    assert feed.totals() == (2, 0)
    feed.send(T0 + 1800, people_in=1, people_out=0)
    assert feed.totals() == (3, 0)


@pytest.mark.parametrize("offset", [-DAY, -3600.0, 0.0, 7.0, 3600.0, DAY])
def test_sensor_clock_off_does_not_double_untimed_triggers(offset: float) -> None:
    # The VS121 trigger (0x10f7) has no sensor time; the periodic report carries 0x0f85.
    feed = Feed(make())
    true_in = 0
    for k in range(1, 6):
        end = T0 + 600 * k
        for c in (end - 500, end - 300, end - 8):  # the last one just before the boundary
            feed.send(c + 1, line_in=1, line_out=0)
            true_in += 1
        feed.send(end + 1, timestamp=int(end - offset), people_in=3, people_out=0)
    assert feed.totals() == (true_in, 0)


@pytest.mark.parametrize("drift", [-1.0, 1.0])
def test_drifting_sensor_clock_is_followed(drift: float) -> None:
    # One second per period either way (over 1,000 ppm: far worse than any real quartz).
    feed = Feed(make())
    for k in range(1, 40):
        end = T0 + 600 * k
        if k > 1:
            feed.send(end - 600 + 9, line_in=0, line_out=1)  # crossing just after the boundary
        feed.send(end - 6, line_in=1, line_out=0)  # crossing just before the next one
        feed.send(end + 2, timestamp=int(end + drift * k), people_in=1, people_out=int(k > 1))
        assert feed.totals() == (k, k - 1)


def test_first_trigger_before_any_timed_report_is_placed_once_the_clock_is_known() -> None:
    feed = Feed(make())
    feed.send(T0 + 100, line_in=2, line_out=0)
    assert feed.totals() == (2, 0)  # counted at once
    feed.send(T0 + 600, timestamp=int(T0 + 600 - DAY), people_in=2, people_out=0)
    assert feed.totals() == (2, 0)


def test_accumulated_counter_repairs_lost_periodic_reports() -> None:
    feed = Feed(make())
    feed.send(
        T0 + 600,
        timestamp=int(T0 + 600),
        people_in=1,
        people_out=0,
        people_total_in=10,
        people_total_out=4,
    )
    # Reports for 1200 and 1800 are lost; the one at 2400 says 5 came in since 1800 and 16 in all.
    feed.send(
        T0 + 2400,
        timestamp=int(T0 + 2400),
        people_in=5,
        people_out=1,
        people_total_in=26,
        people_total_out=7,
    )
    assert feed.totals() == (1 + 16, 0 + 3)
    # The lost reports come back as history: nothing more is added.
    history = [
        {"timestamp": int(T0 + 1200), "people_in": 4, "people_out": 1},
        {"timestamp": int(T0 + 1800), "people_in": 7, "people_out": 1},
        {"timestamp": int(T0 + 1800), "people_total_in": 21, "people_total_out": 6},
    ]
    feed.send(T0 + 2410, history=history)
    assert feed.totals() == (17, 3)


def test_accumulated_counter_wraps_at_16_bits_on_the_lorawan_model() -> None:
    feed = Feed(make())
    feed.send(
        T0 + 600,
        timestamp=int(T0 + 600),
        people_in=0,
        people_out=0,
        people_total_in=65530,
        people_total_out=0,
    )
    feed.send(
        T0 + 1800,
        timestamp=int(T0 + 1800),
        people_in=3,
        people_out=0,
        people_total_in=4,
        people_total_out=0,
    )  # 1200's report was lost
    assert feed.totals() == (10, 0)


def test_accumulated_counter_reset_by_the_sensor_falls_back_on_the_period() -> None:
    feed = Feed(make())
    feed.send(
        T0 + 600,
        timestamp=int(T0 + 600),
        people_in=2,
        people_out=0,
        people_total_in=500,
        people_total_out=0,
    )
    # The sensor's scheduled reset zeroed its total at some point in (600, 1200].
    feed.send(
        T0 + 1200,
        timestamp=int(T0 + 1200),
        people_in=6,
        people_out=0,
        people_total_in=3,
        people_total_out=0,
    )
    assert feed.totals() == (8, 0)
    feed.send(
        T0 + 1800,
        timestamp=int(T0 + 1800),
        people_in=1,
        people_out=0,
        people_total_in=4,
        people_total_out=0,
    )
    assert feed.totals() == (9, 0)


def test_accumulated_only_reports_count_their_differences() -> None:
    feed = Feed(make(model=Model.VS121_P))
    feed.send(T0 + 600, timestamp=int(T0 + 600), people_total_in=(1 << 32) - 2, people_total_out=0)
    feed.send(T0 + 1200, timestamp=int(T0 + 1200), people_total_in=3, people_total_out=2)
    assert feed.totals() == (5, 2)  # wrapped at 32 bits


def test_triggers_inside_an_accumulated_span_are_not_doubled() -> None:
    feed = Feed(make())
    feed.send(
        T0 + 600,
        timestamp=int(T0 + 600),
        people_in=0,
        people_out=0,
        people_total_in=0,
        people_total_out=0,
    )
    feed.send(T0 + 700, line_in=1, line_out=0)
    feed.send(T0 + 1300, line_in=1, line_out=0)
    # The periodic report for 1200 was lost; the one at 1800 carries both crossings in its total.
    feed.send(
        T0 + 1800,
        timestamp=int(T0 + 1800),
        people_in=1,
        people_out=0,
        people_total_in=2,
        people_total_out=0,
    )
    assert feed.totals() == (2, 0)


def test_timed_trigger_overtaken_by_its_periodic_report() -> None:
    # VS121-P: the trigger carries its time; an interval POST overtook it.
    feed = Feed(make(model=Model.VS121_P))
    end = int(T0 + 600)
    feed.send(T0 + 601, timestamp=end, period_start=end - 600, people_in=2, people_out=0)
    feed.send(T0 + 604, timestamp=end - 3, line_in=1, line_out=0)
    feed.send(T0 + 605, timestamp=end - 1, line_in=1, line_out=0)
    assert feed.totals() == (2, 0)


def test_restart_keeps_pending_triggers_and_credit() -> None:
    state = make()
    feed = Feed(state)
    feed.send(T0 + 1196, line_in=1, line_out=0)
    feed.send(T0 + 1200, people_in=2, people_out=0)
    doc = state.sensors["s1"].to_json()
    again = make()
    again.restore("s1", doc)
    feed2 = Feed(again)
    feed2.n = 100
    feed2.send(T0 + 1210, line_in=1, line_out=0)
    assert feed2.totals() == (2, 0)


def test_batch_straddling_a_period_end_is_not_counted_again_by_the_next_period() -> None:
    # The sensor's own clock is unknown (no report states its time). Period (0, 600] holds
    # crossings at 1 ... 6, 586, 599 and 600; period (600, 1200] holds 601, 602, 603, 618, 619.
    # Triggers: 1 at 1, 5 at 16 (the batch), 1 at 586, and 3 at 601: the batch of 599, 600
    # and 601, across the period end. The periodic report for (0, 600] arrives a second late,
    # so on the gateway's clock its stretch is (1, 601]: the trigger at 1 falls before it and
    # the batch at 601 inside it. The next periods' triggers are lost.
    feed = Feed(make())
    feed.send(T0 + 1, line_in=1, line_out=0)
    feed.send(T0 + 16, line_in=5, line_out=0)
    feed.send(T0 + 586, line_in=1, line_out=0)
    feed.send(T0 + 601, line_in=3, line_out=0)
    feed.send(T0 + 601, people_in=9, people_out=0)
    assert feed.totals() == (10, 0)
    feed.send(T0 + 1200, people_in=5, people_out=0)
    assert feed.totals() == (14, 0)  # 601 was counted by its trigger already
    feed.send(T0 + 1800, people_in=1, people_out=0)
    assert feed.totals() == (15, 0)


def test_batch_wholly_before_a_period_end_stays_with_that_period() -> None:
    # The batch at 600 holds 598, 599 and 600, all in (0, 600]; the next period's crossings at
    # 601, 999 and 1000 have their triggers lost but for the batch sent at 1014 (1000). With
    # no trigger of (0, 600] left pending, nothing may be swapped: (600, 1200] credits its 3,
    # and the late batch uses that credit.
    feed = Feed(make())
    feed.send(T0 + 600, line_in=3, line_out=0)
    feed.send(T0 + 600, people_in=12, people_out=0)
    assert feed.totals() == (12, 0)
    feed.send(T0 + 1200, people_in=3, people_out=0)
    assert feed.totals() == (15, 0)
    feed.send(T0 + 1214, line_in=1, line_out=0)
    assert feed.totals() == (15, 0)
