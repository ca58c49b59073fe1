"""Alarm scenarios through the state: reports applied to a real GatewayState drive a real
RelayService, with a hand-moved clock and a recording output driver.

The clock is injected (both the monotonic one the rules time with and the wall clock the state
and the saved file use), so minimum times, hysteresis and staleness are exact and no test sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.commands import CommandRefusedError
from gateway.metrics import RelayMetrics, default_metrics, relay_metrics
from gateway.relay import OutputError, RelayService
from gateway.relay.drivers import OutputDriver
from gateway.relay.logic import (
    STATUS_ACTIVE,
    STATUS_ALARM,
    STATUS_CONTACT_CLOSED,
    STATUS_FAULT,
    STATUS_OVERRIDDEN,
    STATUS_STALE,
)
from gateway.settings import AlarmSection, GpioOutput, ModbusCoilOutput, NoOutput
from gateway.state import GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec, decode_priority_array, priority_array_key

pytestmark = pytest.mark.asyncio

STALE_AFTER = 60.0
LOBBY = SensorSpec(id="lobby", name="Lobby", number=1, model=Model.VS121, region_count=4)
HALL = SensorSpec(id="hall", name="Hall", number=2, model=Model.VS121_P, region_count=2)
SETTLE_S = 5.0  # bound on waiting for a worker to write (it writes at once; this is a deadline)


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_763_700_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@dataclass
class RecordingDriver:
    """Records the levels written; `fail` makes writes raise as a dead module would."""

    description: str = "test output"
    reassert_after: float | None = None
    levels: list[bool] = field(default_factory=list)
    fail: bool = False
    closed: bool = False
    attempts: int = 0
    tried: asyncio.Event = field(default_factory=asyncio.Event)

    async def set(self, energised: bool) -> None:
        self.attempts += 1
        self.tried.set()
        if self.fail:
            raise OutputError("module does not answer")
        self.levels.append(energised)

    async def attempted(self, count: int, within: float = 5.0) -> None:
        """Wait until `count` writes have been attempted in all."""
        async with asyncio.timeout(within):
            while self.attempts < count:
                self.tried.clear()
                await self.tried.wait()

    async def close(self) -> None:
        self.closed = True


def alarm(**kw: Any) -> AlarmSection:
    base: dict[str, Any] = {
        "id": "crowd",
        "name": "Crowd",
        "number": 1,
        "sensors": ["lobby"],
        "threshold": 20,
    }
    return AlarmSection.model_validate(base | kw)


class Site:
    """A state, a relay service and its drivers, all on one test clock."""

    def __init__(self, state_dir: Path, alarms: list[AlarmSection], clock: Clock) -> None:
        self.clock = clock
        self.state_dir = state_dir
        self.alarms = alarms
        self.state = GatewayState(
            [(LOBBY, STALE_AFTER, 10.0), (HALL, STALE_AFTER, 10.0)], clock=lambda: clock.wall
        )
        self.metrics: RelayMetrics = relay_metrics(default_metrics().registry)
        self.drivers: dict[str, RecordingDriver] = {}
        self.relay = self._service()

    def _service(self) -> RelayService:
        def build(cfg: NoOutput | GpioOutput | ModbusCoilOutput) -> OutputDriver:
            owner = next(a.id for a in self.alarms if a.output is cfg)
            driver = self.drivers.setdefault(owner, RecordingDriver())
            driver.closed = False
            return driver

        return RelayService(
            self.alarms,
            self.state,
            state_dir=self.state_dir,
            metrics=self.metrics,
            clock=lambda: self.clock.mono,
            wall=lambda: self.clock.wall,
            drivers=build,
            settle_timeout=SETTLE_S,
        )

    async def restart(self, alarms: list[AlarmSection] | None = None) -> None:
        """A new service (as after a daemon restart) on the same state directory."""
        await self.relay.stop()
        if alarms is not None:
            self.alarms = alarms
        self.relay = self._service()
        await self.relay.start()

    def report(self, sensor: str, **data: float) -> None:
        self.state.apply(Report(sensor, data, received_at=self.clock.wall))

    def advance(self, seconds: float) -> None:
        """Time passes: the daemon's tick re-checks freshness, the relay's timer its deadlines."""
        self.clock.advance(seconds)
        self.state.tick()
        self.relay.evaluate()

    def value(self, key: str) -> float:
        return self.state.gateway_values[key]

    def status(self) -> int:
        return int(self.value("rule_1_status"))

    def alarm_on(self, rule: str = "crowd") -> bool:
        return bool(self.relay.snapshot()[rule]["alarm"])

    async def levels(self, rule: str = "crowd") -> list[bool]:
        """The levels written so far, once the output has caught up with the rule. (A worker
        writes the latest wanted level: changes between two of its turns are not replayed.)"""
        worker = self.relay.rules[rule].worker
        assert await worker.settled(SETTLE_S), f"output of {rule} never settled"
        return self.drivers[rule].levels

    async def energised(self, rule: str = "crowd") -> bool:
        return (await self.levels(rule))[-1]


@pytest_asyncio.fixture
async def clock() -> Clock:
    return Clock()


def site_fixture(*alarms: AlarmSection) -> Callable[..., Any]:
    @pytest_asyncio.fixture
    async def make(tmp_path: Path, clock: Clock) -> AsyncIterator[Site]:
        site = Site(tmp_path / "state", list(alarms), clock)
        await site.relay.start()
        yield site
        await site.relay.stop()

    return make


site = site_fixture(alarm(hysteresis=2, min_on_seconds=30, min_off_seconds=60))


# -- scenarios -----------------------------------------------------------------------------------


async def test_rising_over_the_threshold_opens_the_contact(site: Site) -> None:
    # Start-up: no data yet, on_stale = hold: normal, contact closed, so the coil is energised.
    assert await site.levels() == [True]
    assert site.value("rule_1_status") == STATUS_CONTACT_CLOSED | STATUS_STALE
    site.report("lobby", people_count_all=12)
    assert not site.alarm_on()
    assert site.value("rule_1_status") == STATUS_CONTACT_CLOSED
    site.report("lobby", people_count_all=20)  # at the threshold is not over it
    assert not site.alarm_on()
    site.report("lobby", people_count_all=21)
    assert site.alarm_on()
    assert site.value("rule_1_alarm") == 1
    assert site.value("rule_1_relay") == 1
    assert site.value("rule_1_status") == STATUS_ALARM | STATUS_ACTIVE
    assert await site.levels() == [True, False]  # de-energised: contact open, as the VS121-P
    slots = decode_priority_array(site.value(priority_array_key("rule_1_relay")))
    assert slots[15] is True
    assert all(s is None for s in slots[:15])
    assert site.metrics.alarm_active.value(rule="crowd") == 1


async def test_chattering_around_the_threshold_is_held_by_hysteresis_and_minimum_times(
    site: Site,
) -> None:
    site.report("lobby", people_count_all=21)
    assert site.alarm_on()
    timeline = [
        (5, 17, True),  # below threshold - hysteresis (18), but on for only 5 s of 30
        (5, 22, True),
        (5, 19, True),  # within the hysteresis band: stays on regardless of time
        (20, 19, True),  # 35 s on, still in the band
        (0, 18, False),  # at threshold - hysteresis, minimum on time over: clears
        (10, 25, False),  # off for only 10 s of 60
        (10, 15, False),
        (10, 30, False),  # 30 s off
    ]
    for seconds, count, expected in timeline:
        site.advance(seconds)
        site.report("lobby", people_count_all=count)
        assert site.alarm_on() is expected, (seconds, count)
        assert await site.energised() is not expected  # contact open in alarm
    # Nothing new arrives; the minimum off time runs out with the count still high.
    site.advance(29.9)
    assert not site.alarm_on()
    site.advance(0.1)
    assert site.alarm_on()
    assert await site.levels() == [True, False, True, False]


async def test_the_timer_switches_when_a_minimum_time_runs_out(tmp_path: Path) -> None:
    """With the real clock: the service's own timer carries out a held-back switch."""
    relay_site = Site(tmp_path, [alarm(min_on_seconds=0.2)], Clock())
    relay = RelayService(
        relay_site.alarms,
        relay_site.state,
        state_dir=tmp_path,
        drivers=lambda cfg: RecordingDriver(),
    )
    await relay.start()
    try:
        state = relay_site.state
        cleared = asyncio.Event()
        state.subscribe(
            lambda change: cleared.set() if change.values.get("rule_1_alarm") == 0 else None
        )
        state.apply(Report("lobby", {"people_count_all": 30}, received_at=relay_site.clock.wall))
        state.apply(Report("lobby", {"people_count_all": 1}, received_at=relay_site.clock.wall))
        assert relay.snapshot()["crowd"]["alarm"] is True  # held on
        async with asyncio.timeout(SETTLE_S):
            await cleared.wait()
        assert relay.snapshot()["crowd"]["alarm"] is False
    finally:
        await relay.stop()


alarm_when_stale = site_fixture(alarm(on_stale="alarm", min_off_seconds=0))


async def test_stale_data_takes_the_on_stale_state_and_recovers(
    alarm_when_stale: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site = alarm_when_stale
    assert site.alarm_on()  # never reported: stale from the start, on_stale = alarm
    assert await site.energised() is False
    site.report("lobby", people_count_all=3)
    assert not site.alarm_on()
    assert await site.energised() is True
    with caplog.at_level(logging.INFO, logger="gateway.relay"):
        site.advance(STALE_AFTER + 1)
        site.advance(5)
        site.advance(5)
    assert site.alarm_on()
    assert site.status() & STATUS_STALE
    assert sum("no usable data" in r.getMessage() for r in caplog.records) == 2  # once + switch
    assert await site.energised() is False
    site.report("lobby", people_count_all=3)
    assert not site.alarm_on()
    assert not site.status() & STATUS_STALE
    assert await site.levels() == [False, True, False, True]


summed = site_fixture(alarm(sensors=["lobby", "hall"], threshold=10))


async def test_several_sensors_of_one_space_are_added(summed: Site) -> None:
    summed.report("lobby", people_count_all=6)
    assert not summed.alarm_on()  # hall has not reported: no usable total (hold)
    summed.report("hall", people_count_all=4)
    assert not summed.alarm_on()
    summed.report("hall", people_count_all=5)
    assert summed.alarm_on()


by_region = site_fixture(alarm(trigger="any_region", threshold=4))


async def test_any_region_over_the_threshold(by_region: Site) -> None:
    by_region.report("lobby", people_count_all=12, region_1_count=4, region_2_count=4)
    assert not by_region.alarm_on()
    by_region.report("lobby", region_3_count=5)
    assert by_region.alarm_on()


async def test_region_counts_no_longer_reported_do_not_hold_the_alarm(by_region: Site) -> None:
    # Region People Counting: region 1 is crowded.
    by_region.report("lobby", region_1_count=13, region_2_count=0, region_3_count=0)
    assert by_region.alarm_on()
    assert int(by_region.value("rule_1_status")) & STATUS_STALE == 0
    # The sensor is switched to Occupancy reporting: a total of 2 and no region counts. The old
    # region count of 13 is no longer reported and must not keep the relay on.
    by_region.report("lobby", people_count_all=2, region_count=4, region_1=1)
    assert not by_region.alarm_on()


by_total = site_fixture(alarm(trigger="total", threshold=3))


async def test_total_of_a_region_only_sensor_is_the_sum_of_its_regions(by_total: Site) -> None:
    # The VS121's Region People Counting type sends no total (04c9), only region counts.
    regions = {f"region_{n}_count": 0 for n in range(3, 9)}
    by_total.report("lobby", region_1_count=1, region_2_count=3, people_count_max=4, **regions)
    assert int(by_total.value("rule_1_status")) & STATUS_STALE == 0  # reporting, so not stale
    assert by_total.alarm_on()  # 4 people > 3


@pytest.mark.parametrize(
    ("on_shutdown", "last"), [("open", False), ("closed", True), ("hold", None)]
)
async def test_shutdown_leaves_the_configured_contact(
    tmp_path: Path, clock: Clock, on_shutdown: str, last: bool | None
) -> None:
    site = Site(tmp_path, [alarm(on_shutdown=on_shutdown, contact_in_alarm="closed")], clock)
    await site.relay.start()
    site.report("lobby", people_count_all=1)
    assert await site.levels() == [False]  # contact closed in alarm: normal = open
    await site.relay.stop()
    driver = site.drivers["crowd"]
    assert driver.levels == [False] + ([] if last is None else [last])
    assert driver.closed


# -- commands and restarts ------------------------------------------------------------------------


async def test_override_at_8_beats_the_alarm_and_relinquish_returns_to_it(site: Site) -> None:
    site.report("lobby", people_count_all=30)
    assert await site.levels() == [True, False]
    await site.relay.command_relay("crowd", 8, False)  # BMS: relay inactive whatever the count
    assert site.value("rule_1_relay") == 0
    assert site.value("rule_1_override") == 1
    assert site.value("rule_1_alarm") == 1  # the alarm itself is still reported
    assert site.status() & STATUS_OVERRIDDEN
    assert await site.levels() == [True, False, True]
    await site.relay.command_relay("crowd", 8, None)
    assert site.value("rule_1_relay") == 1
    assert site.value("rule_1_override") == 0
    assert await site.levels() == [True, False, True, False]
    await site.relay.command_relay("crowd", 3, True)
    slots = decode_priority_array(site.value(priority_array_key("rule_1_relay")))
    assert slots[2] is True
    assert slots[15] is True


async def test_commands_are_checked(site: Site) -> None:
    with pytest.raises(CommandRefusedError):
        await site.relay.command_relay("crowd", 16, True)
    with pytest.raises(ValueError, match="priority 6"):
        await site.relay.command_relay("crowd", 6, True)
    with pytest.raises(KeyError):
        await site.relay.command_relay("nope", 8, True)
    with pytest.raises(ValueError, match="outside"):
        await site.relay.set_alarm_threshold("crowd", 70000)
    with pytest.raises(ValueError, match="outside"):
        await site.relay.set_alarm_threshold("crowd", float("nan"))


async def test_a_written_threshold_applies_at_once(site: Site) -> None:
    site.report("lobby", people_count_all=15)
    assert not site.alarm_on()
    assert await site.relay.set_alarm_threshold("crowd", 12) == "threshold 12"
    assert site.alarm_on()
    assert site.value("rule_1_threshold") == 12


async def test_threshold_override_and_alarm_survive_a_restart(site: Site) -> None:
    site.report("lobby", people_count_all=25)
    await site.relay.set_alarm_threshold("crowd", 24)
    await site.relay.command_relay("crowd", 8, True)
    assert site.alarm_on()
    await site.relay.stop()
    assert site.drivers["crowd"].levels[-1] is False  # on_shutdown = open
    site.drivers["crowd"].levels.clear()  # what the hardware saw before does not matter
    await site.restart()
    snap = site.relay.snapshot()["crowd"]
    assert snap["threshold"] == 24
    assert snap["level"] == 8
    assert snap["relay"] is True
    assert snap["alarm"] is True
    assert site.value("rule_1_override") == 2
    # The output is written at start-up, not left as it was.
    assert site.drivers["crowd"].levels == [False]
    # The minimum on time carries over: 30 s from the switch, on the wall clock.
    site.report("lobby", people_count_all=1)
    assert site.alarm_on()
    site.advance(30)
    assert not site.alarm_on()


async def test_a_changed_configured_threshold_wins_over_an_old_written_one(site: Site) -> None:
    await site.relay.set_alarm_threshold("crowd", 5)
    await site.restart()
    assert site.relay.snapshot()["crowd"]["threshold"] == 5
    await site.restart([alarm(threshold=40, hysteresis=2)])
    assert site.relay.snapshot()["crowd"]["threshold"] == 40


async def test_a_damaged_state_file_is_set_aside(site: Site) -> None:
    await site.relay.command_relay("crowd", 8, True)
    await site.relay.stop()
    (site.state_dir / "alarms.json").write_text('{"version": 1, "rules": {"crowd": 3}}')
    await site.restart()
    assert site.relay.snapshot()["crowd"]["level"] == 16
    assert list(site.state_dir.glob("alarms.json.damaged-*"))


async def test_a_command_that_cannot_be_saved_changes_nothing(tmp_path: Path, clock: Clock) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    site = Site(not_a_dir, [alarm()], clock)
    await site.relay.start()
    try:
        with pytest.raises(FileExistsError):
            await site.relay.command_relay("crowd", 8, True)
        with pytest.raises(FileExistsError):
            await site.relay.set_alarm_threshold("crowd", 3)
        snap = site.relay.snapshot()["crowd"]
        assert snap["level"] == 16
        assert snap["threshold"] == 20
    finally:
        await site.relay.stop()


# -- output failures ------------------------------------------------------------------------------

two_rules = site_fixture(
    alarm(output={"type": "modbus", "port": "/dev/null", "retry_seconds": 0.1}),
    alarm(id="other", name="Other", number=2, sensors=["hall"], threshold=1),
)


async def test_a_failing_output_is_counted_logged_once_and_retried(
    two_rules: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site = two_rules
    dead = site.drivers["crowd"]
    with caplog.at_level(logging.INFO, logger="gateway.relay"):
        dead.fail = True
        site.report("lobby", people_count_all=50)
        # Several retries fail (every 0.1 s) while the other rule carries on.
        before = dead.attempts
        await dead.attempted(before + 3)
        assert site.metrics.output_errors.value(rule="crowd") >= 3
        site.report("hall", people_count_all=2)
        assert await site.levels("other") == [True, False]
        assert site.status() & STATUS_FAULT
        assert site.metrics.output_fault.value(rule="crowd") == 1
        dead.fail = False
        assert await site.levels("crowd") == [True, False]
    assert not site.status() & STATUS_FAULT
    assert site.metrics.output_fault.value(rule="crowd") == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot drive" in m for m in messages) == 1
    assert sum("works again" in m for m in messages) == 1
