"""A wall-clock step (NTP correction, a bad RTC at boot) neither freezes values nor keeps a
silent sensor online: freshness runs on the monotonic clock, values in receive order.

In the state, with separate wall and monotonic test clocks; across a snapshot taken before the
step; and in the running daemon, whose `time.time` a wrapper steps on a signal.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import ALL_SUBSCRIPTIONS, Daemon, gateway_config, new_http_port
from helpers.publisher import Publisher

from gateway.state import STATUS_ONLINE, STATUS_STALE, GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_000.0
DAY = 86400.0
SPEC = SensorSpec(id="s1", name="Hall", number=1, model=Model.VS121, region_count=4)


class Clocks:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def _state(clocks: Clocks, stale: float = 60.0) -> GatewayState:
    return GatewayState(
        [(SPEC, stale, 30.0)], clock=lambda: clocks.wall, monotonic=lambda: clocks.mono
    )


def _report(clocks: Clocks, data: dict[str, Any]) -> Report:
    return Report("s1", data, clocks.wall)


def test_values_keep_moving_after_the_wall_clock_steps_back() -> None:
    clocks = Clocks()
    state = _state(clocks)
    state.apply(_report(clocks, {"people_count_all": 1}))
    clocks.advance(10)
    clocks.wall -= DAY
    state.apply(_report(clocks, {"people_count_all": 2}))
    assert state.current("s1")["people_count_all"] == 2
    assert state.current("s1")["last_report"] == clocks.wall
    clocks.advance(10)
    state.apply(_report(clocks, {"people_count_all": 3}))
    assert state.current("s1")["people_count_all"] == 3


def test_silent_sensor_goes_stale_after_a_backward_step(caplog: pytest.LogCaptureFixture) -> None:
    clocks = Clocks()
    state = _state(clocks, stale=60)
    state.apply(_report(clocks, {"people_count_all": 1}))
    state.tick()
    clocks.wall -= DAY
    with caplog.at_level(logging.WARNING, logger="gateway.state"):
        for _ in range(70):
            clocks.advance(1)
            state.tick()
    values = state.current("s1")
    assert values["status"] == STATUS_STALE
    assert values["seconds_since_report"] == 70
    steps = [r for r in caplog.records if "wall clock stepped back" in r.getMessage()]
    assert len(steps) == 1


def test_forward_step_does_not_make_a_live_sensor_stale() -> None:
    clocks = Clocks()
    state = _state(clocks, stale=60)
    state.apply(_report(clocks, {"people_count_all": 1}))
    clocks.wall += DAY
    clocks.advance(5)
    state.tick()
    assert state.current("s1")["status"] == STATUS_ONLINE
    assert state.current("s1")["seconds_since_report"] == 5


def test_snapshot_restored_after_a_backward_step_goes_stale() -> None:
    clocks = Clocks()
    state = _state(clocks, stale=60)
    state.apply(_report(clocks, {"people_count_all": 4}))
    doc = json.loads(json.dumps(state.sensors["s1"].to_json()))
    # The gateway restarts after the clock was set back a day (its monotonic clock restarts too).
    later = Clocks()
    later.wall = T0 - DAY + 5
    restored = _state(later, stale=60)
    restored.restore("s1", doc)
    for _ in range(61):
        later.advance(1)
        restored.tick()
    assert restored.current("s1")["status"] == STATUS_STALE
    assert restored.current("s1")["people_count_all"] == 4
    restored.apply(_report(later, {"people_count_all": 5}))
    assert restored.current("s1")["people_count_all"] == 5
    assert restored.current("s1")["status"] == STATUS_ONLINE


class SteppedDaemon(Daemon):
    """The daemon with a wall clock the test steps (see helpers/stepped_clock.py)."""

    def __init__(self, workdir: Path, config_text: str, *, http_port: int) -> None:
        super().__init__(workdir, config_text, http_port=http_port)
        self.offset_file = workdir / "clock-offset"
        self.offset_file.write_text("0")
        self.command = [sys.executable, str(Path(__file__).parent / "helpers/stepped_clock.py")]

    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        super().start(timeout, {**(env or {}), "STEPPED_CLOCK_FILE": str(self.offset_file)})

    def step(self, seconds: float) -> None:
        self.offset_file.write_text(str(seconds))
        os.kill(self.pid, signal.SIGUSR1)


FOYER = """
[[sensors]]
id = "foyer"
name = "Foyer"
number = 3
model = "vs121-p"
serial = "369362028335"
region_count = 2
report_interval = 5
stale_after = 10
"""


def test_running_daemon_survives_a_backward_step(
    tmp_path: Path, mqtt_broker: MosquittoBroker
) -> None:
    port = new_http_port()
    cfg = gateway_config(
        tmp_path / "state",
        mqtt_port=mqtt_broker.port,
        http_port=port,
        subscriptions=ALL_SUBSCRIPTIONS,
        sensors=FOYER,
    )
    daemon = SteppedDaemon(tmp_path, cfg, http_port=port)
    daemon.start()
    pub = Publisher(mqtt_broker.port, "clock-step-pub")
    report = json.loads(
        (Path(__file__).parent / "data" / "vs121p" / "region_interval_counts.json").read_text()
    )
    try:
        daemon.wait_mqtt()

        def send(total: int, hour: int) -> None:
            times = dict(report["time_info"], end_time=f"2022/12/20 {hour}:15:52")
            doc = dict(report, current_total=total, time_info=times)
            pub.publish_json("vs121p/foyer", doc)

        send(3, 19)
        daemon.wait_until(lambda: daemon.values("foyer").get("people_count_all") == 3, what="3")
        daemon.step(-DAY)
        send(4, 20)
        daemon.wait_until(lambda: daemon.values("foyer").get("people_count_all") == 4, what="4")
        # Silence: the sensor must go offline after stale_after, not a day later.
        daemon.wait_until(
            lambda: daemon.status()["sensors"]["foyer"]["online"] is False,
            timeout=30,
            what="offline",
        )
        assert daemon.values("foyer")["seconds_since_report"] >= 10
        assert daemon.log_text().count("wall clock stepped back") == 1
    finally:
        pub.close()
        daemon.stop()
