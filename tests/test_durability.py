"""No count lost or doubled: kill -9 during a stream, and a broker restart mid-stream."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import Daemon, start_mqtt_daemon
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sim_publish import uplink_body, uplink_topic

HALL = "24e124538c000001"
T0 = 1_700_000_000
CHUNK = 80
KILLS = 4


def line_report(i: int, n_in: int, n_out: int) -> bytes:
    """A periodic line-crossing uplink with the sensor's own time, one per 60 s period."""
    ts = (T0 + 60 * i).to_bytes(4, "little")
    return b"\x0f\x85" + ts + b"\x05\xcc" + n_in.to_bytes(2, "little") + n_out.to_bytes(2, "little")


class Stream:
    """Publishes reports at QoS 1 in chunks; remembers what it sent and what the broker took."""

    def __init__(self, port: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sent_in = 0
        self.sent_out = 0
        self.next = 0
        self._acked: set[int] = set()
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"stream-{seed}", clean_session=False
        )
        self.client.max_queued_messages_set(0)  # keep everything while the broker is away
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    def publish(self, count: int) -> list[int]:
        """Queue `count` reports; paho sends them (again after a reconnect) in the background."""
        mids = []
        for _ in range(count):
            i = self.next
            self.next += 1
            n_in, n_out = self.rng.randint(0, 5), self.rng.randint(0, 5)
            body = uplink_body("chirpstack", HALL, i + 1, line_report(i, n_in, n_out), 0)
            mids.append(self.client.publish(uplink_topic("chirpstack", HALL), body, qos=1).mid)
            self.sent_in += n_in
            self.sent_out += n_out
        return mids

    def wait_accepted(self, mids: list[int], timeout: float = 60) -> None:
        """Until the broker has acknowledged every one of `mids`."""
        with self._cond:
            assert self._cond.wait_for(lambda: self._acked.issuperset(mids), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker", persistence=True) as b:
        yield b


def _totals(daemon: Daemon) -> tuple[int, int]:
    values = daemon.values("hall")
    return int(values.get("gateway_total_in", -1)), int(values.get("gateway_total_out", -1))


def test_kill_9_repeatedly_loses_and_doubles_nothing(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    daemon = start_mqtt_daemon(tmp_path, broker.port)
    stream = Stream(broker.port, seed=1)
    rng = random.Random(5)
    try:
        for _ in range(KILLS):
            mids = stream.publish(CHUNK)
            # Kill while the gateway is still busy with this chunk, at a random point of it.
            stream.wait_accepted(mids[: rng.randint(1, CHUNK)])
            daemon.kill()
            daemon.start()
            daemon.wait_mqtt()
        stream.wait_accepted(stream.publish(CHUNK))
        expected = (stream.sent_in, stream.sent_out)
        daemon.wait_until(lambda: _totals(daemon) == expected, timeout=60, what=f"{expected}")
        # And it stays there: nothing is counted again after a clean restart either.
        assert daemon.stop() == 0
        daemon.start()
        assert _totals(daemon) == expected
        assert daemon.log_text().count("starting") == KILLS + 2
    finally:
        stream.close()
        if daemon.running():
            daemon.stop()


def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, broker: MosquittoBroker) -> None:
    daemon = start_mqtt_daemon(tmp_path, broker.port)
    stream = Stream(broker.port, seed=2)
    try:
        first = stream.publish(CHUNK)
        stream.wait_accepted(first[: CHUNK // 2])
        broker.restart()
        # Published while the broker may still be down: paho resends once it is back.
        second = stream.publish(CHUNK)
        stream.wait_accepted(first + second)
        expected = (stream.sent_in, stream.sent_out)
        daemon.wait_until(lambda: _totals(daemon) == expected, timeout=60, what=f"{expected}")
        log = daemon.log_text()
        assert "MQTT connection lost" in log
        assert "Traceback" not in log
    finally:
        stream.close()
        if daemon.running():
            assert daemon.stop() == 0
