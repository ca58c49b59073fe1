"""Daily line totals: today and yesterday, at a configured local reset time, across restarts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.daily import DayClock
from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.state import GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    """A Berlin wall-clock time as unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, reset: str = "00:00") -> GatewayState:
    spec = SensorSpec(id="s1", name="Door", number=1, model=Model.VS121, region_count=4)
    return GatewayState(
        [(spec, 86400.0, 600.0)], clock=clock, day_clock=DayClock.parse("Europe/Berlin", reset)
    )


def daily(state: GatewayState) -> tuple[int, int, int, int]:
    v = state.current("s1")
    return (
        int(v["today_in"]),
        int(v["today_out"]),
        int(v["yesterday_in"]),
        int(v["yesterday_out"]),
    )


def test_the_day_starts_at_the_local_reset_time_through_daylight_saving() -> None:
    clock = DayClock.parse("Europe/Berlin", "04:30")
    # 29 March 2026: the clocks go forward at 02:00; the day still starts at 04:30 local.
    assert clock.day(at("2026-03-29T04:29:59")) == clock.day(at("2026-03-28T12:00:00"))
    assert clock.day(at("2026-03-29T04:30:00")) == clock.day(at("2026-03-28T12:00:00")) + 1
    utc = DayClock.parse("UTC", "00:00")
    assert utc.day(at("2026-03-29T01:30:00")) == utc.day(at("2026-03-29T00:30:00")) + 1


def test_today_rolls_into_yesterday_at_midnight_without_a_report() -> None:
    clock = Clock(at("2026-06-01T22:00:00"))
    state = make(clock)
    state.apply(Report("s1", {"people_in": 5, "people_out": 2}, clock.now, "a"))
    assert daily(state) == (5, 2, 0, 0)
    clock.now = at("2026-06-02T00:00:01")
    state.tick()
    assert daily(state) == (0, 0, 5, 2)
    state.apply(Report("s1", {"people_in": 1, "people_out": 0}, clock.now, "b"))
    assert daily(state) == (1, 0, 5, 2)
    # A report received before midnight but delivered after it counts for yesterday.
    state.apply(Report("s1", {"people_in": 3, "people_out": 0}, at("2026-06-01T23:59:00"), "c"))
    assert daily(state) == (1, 0, 8, 2)
    assert state.current("s1")["gateway_total_in"] == 9  # the running total is not daily


def test_daily_totals_survive_a_restart_and_a_long_stop() -> None:
    clock = Clock(at("2026-06-01T10:00:00"))
    state = make(clock)
    state.apply(Report("s1", {"people_in": 4, "people_out": 1}, clock.now, "a"))
    doc = state.sensors["s1"].to_json()
    again = make(clock)
    again.restore("s1", doc)
    assert daily(again) == (4, 1, 0, 0)
    clock.now = at("2026-06-02T09:00:00")  # restarted the next day
    later = make(clock)
    later.restore("s1", doc)
    assert daily(later) == (0, 0, 4, 1)
    clock.now = at("2026-06-04T09:00:00")  # stopped for a whole day in between
    gone = make(clock)
    gone.restore("s1", doc)
    assert daily(gone) == (0, 0, 0, 0)


def test_a_state_file_without_daily_totals_still_loads() -> None:
    clock = Clock(at("2026-06-01T10:00:00"))
    state = make(clock)
    state.apply(Report("s1", {"people_in": 4, "people_out": 1}, clock.now, "a"))
    doc = dict(state.sensors["s1"].to_json())
    del doc["daily"]
    again = make(clock)
    again.restore("s1", doc)
    assert again.current("s1")["gateway_total_in"] == 4
    assert daily(again) == (0, 0, 0, 0)


SENSOR = """
[[sensors]]
id = "a"
name = "A"
number = 1
model = "vs121"
dev_eui = "24e124538c000001"
"""


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[daily]\ntimezone = "Mars/Olympus"\n', "'Mars/Olympus' is not a known time zone"),
        ('[daily]\nreset_time = "24:00"\n', "'24:00' is not a time of day"),
    ],
)
def test_bad_daily_settings_name_the_key_and_what_is_allowed(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text + SENSOR)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert named in str(err.value)
    assert "daily." in str(err.value)


def test_daily_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[daily]\ntimezone = "Europe/Berlin"\nreset_time = "04:30"\n' + SENSOR)
    daily_cfg = load_settings(path).daily
    assert (daily_cfg.timezone, daily_cfg.reset_time) == ("Europe/Berlin", "04:30")
