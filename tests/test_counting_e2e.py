"""Line totals through the real daemon: MQTT (mosquitto) or HTTP in, `/api/sensors` and Modbus out.

The network server's receive time (ChirpStack `time`) is what the gateway places a report by, so
the tests set it to lay out reports on a timeline without waiting for it.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers.broker import MosquittoBroker, free_port
from helpers.daemon import Daemon, start_mqtt_daemon
from helpers.publisher import Publisher

from gateway.sim_publish import uplink_body, uplink_topic

HALL = "24e124538c000001"
FOYER_SN = "369362028335"
DAY = 86400


class Rig:
    def __init__(self, daemon: Daemon, modbus_port: int, broker_port: int) -> None:
        self.daemon = daemon
        self.modbus_port = modbus_port
        self.publisher = Publisher(broker_port, "count-publisher")
        self.fcnt = 0
        self.sent = 0

    def uplink(self, at: float, payload_hex: str) -> None:
        """A VS121 uplink the network server received at `at`."""
        self.fcnt += 1
        body = uplink_body("chirpstack", HALL, self.fcnt, bytes.fromhex(payload_hex), at)
        self.publisher.publish(uplink_topic("chirpstack", HALL), body)
        self.sent += 1

    def settled(self) -> None:
        """Wait until every uplink sent has been applied."""
        self.daemon.wait_until(
            lambda: (
                self.daemon.metric(
                    "vs121gw_messages_total", source="mqtt:chirpstack", outcome="accepted"
                )
                >= self.sent
            ),
            what="uplinks applied",
        )

    def totals(self, sensor: str = "hall") -> tuple[int, int]:
        v = self.daemon.values(sensor)
        return int(v["gateway_total_in"]), int(v["gateway_total_out"])

    def modbus_totals(self, number: int = 1) -> tuple[int, int]:
        """Total In/Out as a PLC reads them (input registers, 32-bit high word first)."""
        base = number * 200 + 19
        regs = input_registers(self.modbus_port, base, 4)
        words = [regs[base + i] for i in range(4)]
        raw = struct.pack(">4H", *words)
        total_in, total_out = struct.unpack(">2I", raw)
        return total_in, total_out

    def close(self) -> None:
        self.publisher.close()


@pytest.fixture
def rig(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[Rig]:
    modbus_port = free_port()
    env = {"VS121GW_MODBUS__TCP__ENABLED": "true", "VS121GW_MODBUS__TCP__PORT": str(modbus_port)}
    daemon = start_mqtt_daemon(tmp_path, mqtt_broker.port, env=env)
    r = Rig(daemon, modbus_port, mqtt_broker.port)
    yield r
    r.close()
    if daemon.running():
        assert daemon.stop() == 0


def base_time() -> float:
    """A period boundary (the hall reports every 60 s) an hour ago: plausible NS times."""
    return float(int(time.time() - 3600) // 60 * 60)


def trigger(n_in: int, n_out: int) -> str:
    return "10f7" + struct.pack("<HH", n_in, n_out).hex()


def periodic(
    n_in: int, n_out: int, stamp: int | None = None, acc: tuple[int, int] | None = None
) -> str:
    out = "" if stamp is None else "0f85" + struct.pack("<I", stamp).hex()
    out += "05cc" + struct.pack("<HH", n_in, n_out).hex()
    if acc is not None:
        out += "0dcc" + struct.pack("<HH", *acc).hex()
    return out


def test_boundary_example_counts_two_crossings_not_three(rig: Rig) -> None:
    # Trigger A at 1196 s (in=1), the periodic report for (1140, 1200] at 1200 (A and B),
    # trigger B at 1210: the crossing at 1198, batched to the end of its 15 s window.
    t0 = base_time() + 1200
    rig.uplink(t0 - 4, trigger(1, 0))
    rig.uplink(t0, periodic(2, 0))
    rig.uplink(t0 + 10, trigger(1, 0))
    rig.settled()
    assert rig.totals() == (2, 0)
    rig.uplink(t0 + 60, periodic(0, 0))  # the next period was quiet
    rig.settled()
    assert rig.totals() == (2, 0)
    assert rig.modbus_totals() == (2, 0)


@pytest.mark.parametrize("skew", [-DAY, DAY, -7200])
def test_sensor_clock_a_day_off_counts_each_crossing_once(rig: Rig, skew: int) -> None:
    t0 = base_time()
    true_in = true_out = 0
    for k in range(1, 5):
        end = t0 + 60 * k
        rig.uplink(end - 50, trigger(1, 0))
        rig.uplink(end - 5, trigger(0, 1))  # close to the boundary
        rig.uplink(end + 1, periodic(1, 1, stamp=int(end + skew)))
        true_in += 1
        true_out += 1
    rig.settled()
    assert rig.totals() == (true_in, true_out)
    assert rig.modbus_totals() == (true_in, true_out)


def test_accumulated_counter_repairs_a_lost_periodic_report(rig: Rig) -> None:
    t0 = base_time()
    rig.uplink(t0 + 60, periodic(1, 0, stamp=int(t0 + 60), acc=(100, 50)))
    # The uplink for t0 + 120 never arrived; the next one's accumulated counters tell.
    rig.uplink(t0 + 180, periodic(2, 1, stamp=int(t0 + 180), acc=(105, 52)))
    rig.settled()
    assert rig.totals() == (1 + 5, 0 + 2)
    # The lost period comes back as history (0x20ce, periodic type 02): not counted again.
    hist = "20ce" + struct.pack("<IB", int(t0 + 120), 2).hex() + struct.pack("<HH", 3, 1).hex()
    rig.uplink(t0 + 190, hist)
    rig.settled()
    assert rig.totals() == (6, 2)
    assert rig.modbus_totals() == (6, 2)


def _local(ts: float) -> str:
    """A VS121-P local time in its zone UTC+8."""
    return datetime.fromtimestamp(ts, timezone(timedelta(hours=8))).strftime("%Y/%m/%d %H:%M:%S")


def _post(rig: Rig, doc: dict[str, object]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{rig.daemon.http_port}/vs121p",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_vs121p_trigger_overtaken_by_its_interval_report_over_http(rig: Rig) -> None:
    t0 = base_time()
    device = {"device_sn": FOYER_SN}
    interval = {
        "event": "Line Crossing Counting",
        "report_type": "interval",
        "device_info": device,
        "time_info": {
            "timezone": "UTC+8:00",
            "dst_status": False,
            "start_time": _local(t0),
            "end_time": _local(t0 + 60),
        },
        "in_counted": 2,
        "out_counted": 0,
        "total_data": {"in_cumulative_counted": 7, "out_cumulative_counted": 3},
    }

    def trig(at: float) -> dict[str, object]:
        return {
            "event": "Line Crossing Counting",
            "report_type": "trigger",
            "device_info": device,
            "time_info": {"time": _local(at), "timezone": "UTC+8:00", "dst_status": False},
            "line_trigger_data": {"in": 1, "out": 0},
        }

    _post(rig, trig(t0 + 40))
    _post(rig, interval)  # overtakes the trigger sent at t0 + 58
    _post(rig, trig(t0 + 58))
    _post(rig, trig(t0 + 58))  # an HTTP retry of the same trigger
    rig.daemon.wait_until(
        lambda: (
            rig.daemon.metric("vs121gw_messages_total", source="http", outcome="duplicate") >= 1
        ),
        what="the retry",
    )
    assert rig.totals("foyer") == (2, 0)
    assert rig.modbus_totals(3) == (2, 0)


def input_registers(port: int, address: int, count: int) -> dict[int, int]:
    """Input registers as a PLC reads them (mbpoll over Modbus TCP, 0-based addresses)."""
    exe = shutil.which("mbpoll")
    if exe is None:
        pytest.skip("mbpoll is not installed")
    command = [exe, "-m", "tcp", "-p", str(port), "-0", "-1", "-t", "3", "-r", str(address)]
    out = subprocess.run(
        [*command, "-c", str(count), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return {
        int(a): int(v) & 0xFFFF
        for a, v in (line[1:].split("]:") for line in out.splitlines() if line.startswith("["))
    }


def _register(rig: Rig, address: int) -> int:
    return input_registers(rig.modbus_port, address, 1)[address]


def test_region_only_sensor_and_a_change_of_reporting_type(rig: Rig) -> None:
    t0 = time.time() - 130  # recent: the sensor is online
    # The guide's Region People Counting example: region 2 has 1 person, region 8 has 3; no 04c9.
    rig.uplink(t0 + 60, "07d50001000000000003" + "06cd05" + "0ee40004000b00")
    rig.settled()
    hall = rig.daemon.status()["sensors"]["hall"]
    assert hall["values"]["people_count_all"] == 4  # the sum of the region counts
    assert hall["points"]["people_count_all"] == "current"
    assert hall["points"]["region_2_count"] == "current"
    assert hall["points"]["region_1"] == "never-reported"
    assert _register(rig, 204) == 4  # People Count on Modbus
    assert _register(rig, 200) & 0x8 == 0  # nothing left over from another reporting type

    # Switched to Occupancy: total 2, regions 1 and 6 occupied, no region counts any more.
    rig.uplink(t0 + 120, "04c9020800a1" + "06cd02")
    rig.settled()
    hall = rig.daemon.status()["sensors"]["hall"]
    assert hall["values"]["people_count_all"] == 2
    assert hall["values"]["region_2_count"] == 1  # the last number is kept, but
    assert hall["points"]["region_2_count"] == "not-reported"
    assert hall["points"]["region_1"] == "current"
    status = _register(rig, 200)
    assert status & 0x1  # online
    assert status & 0x8  # some values are no longer reported


def test_daily_totals_roll_at_the_reset_time_and_survive_kill_9(
    tmp_path: Path, mqtt_broker: MosquittoBroker
) -> None:
    now = time.time()
    # "Today" began two hours ago: the reset time is set to that moment (UTC, whole minutes).
    start = datetime.fromtimestamp(now - 7200, UTC)
    reset = f"{start.hour:02d}:{start.minute:02d}"
    modbus_port = free_port()
    env = {"VS121GW_MODBUS__TCP__ENABLED": "true", "VS121GW_MODBUS__TCP__PORT": str(modbus_port)}
    daily = f'[daily]\ntimezone = "UTC"\nreset_time = "{reset}"\n'
    daemon = start_mqtt_daemon(tmp_path, mqtt_broker.port, extra=daily, env=env)
    rig = Rig(daemon, modbus_port, mqtt_broker.port)
    try:
        rig.uplink(now - 3 * 3600, periodic(7, 3))  # yesterday (before today's reset)
        rig.uplink(now - 600, periodic(2, 1))  # today
        rig.settled()
        values = daemon.values("hall")
        expected = {"today_in": 2, "today_out": 1, "yesterday_in": 7, "yesterday_out": 3}
        assert {k: values[k] for k in expected} == expected
        assert [_register(rig, 200 + 125 + i) for i in range(4)] == [2, 1, 7, 3]
        daemon.kill()  # nothing is saved on the way out
        daemon.start(env=env)
        values = daemon.values("hall")
        assert {k: values[k] for k in expected} == expected
        assert values["gateway_total_in"] == 9
    finally:
        rig.close()
        if daemon.running():
            assert daemon.stop() == 0


def test_boundary_example_holds_across_kill_9(tmp_path: Path, mqtt_broker: MosquittoBroker) -> None:
    # The credit left by the periodic report must survive a crash between it and trigger B.
    daemon = start_mqtt_daemon(tmp_path, mqtt_broker.port)
    rig = Rig(daemon, free_port(), mqtt_broker.port)
    try:
        t0 = base_time() + 1200
        rig.uplink(t0 - 4, trigger(1, 0))
        rig.uplink(t0, periodic(2, 0))
        rig.settled()
        daemon.kill()
        daemon.start()
        daemon.wait_mqtt()
        assert rig.totals() == (2, 0)
        rig.uplink(t0 + 10, trigger(1, 0))
        rig.uplink(t0 + 60, periodic(0, 0))  # after B (one publisher, in order): a marker
        daemon.wait_until(lambda: daemon.values("hall").get("people_in") == 0, what="marker")
        assert rig.totals() == (2, 0)
    finally:
        rig.close()
        if daemon.running():
            assert daemon.stop() == 0
