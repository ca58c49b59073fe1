"""No count lost or doubled: kill -9 during a stream, and a broker restart mid-stream."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import Daemon, start_mqtt_daemon
from helpers.line_stream import LineStream

HALL = "24e124538c000001"
CHUNK = 80
KILLS = 4


def sent(stream: LineStream) -> tuple[int, int]:
    n_in, n_out = stream.sent[HALL]
    return n_in, n_out


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
    stream = LineStream(broker.port, [HALL], seed=1, client_id="stream-1")
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
        expected = sent(stream)
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
    stream = LineStream(broker.port, [HALL], seed=2, client_id="stream-2")
    try:
        first = stream.publish(CHUNK)
        stream.wait_accepted(first[: CHUNK // 2])
        broker.restart()
        # Published while the broker may still be down: paho resends once it is back.
        second = stream.publish(CHUNK)
        stream.wait_accepted(first + second)
        expected = sent(stream)
        daemon.wait_until(lambda: _totals(daemon) == expected, timeout=60, what=f"{expected}")
        log = daemon.log_text()
        assert "MQTT connection lost" in log
        assert "Traceback" not in log
    finally:
        stream.close()
        if daemon.running():
            assert daemon.stop() == 0
