"""kill -9 while snapshot files are being written: nothing acknowledged is lost or doubled.

Real daemon with a snapshot every second, real mosquitto with persistence, forty sensors
reporting line crossings at QoS 1. Each kill follows the kernel's report (inotify) that a
snapshot's temporary file was created, so it lands inside the write of the snapshot files (while
the fresh journal takes the batches acknowledged meanwhile), not merely near it.
"""

from __future__ import annotations

import ctypes
import os
import random
import select
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import ALL_SUBSCRIPTIONS, Daemon, gateway_config, new_http_port
from helpers.line_stream import LineStream

SENSORS = 40
KILLS = 5


def dev_eui(n: int) -> str:
    return f"24e124538c{n:06x}"


def sensors_toml() -> str:
    return "".join(
        f'[[sensors]]\nid = "s{n}"\nname = "S{n}"\nnumber = {n}\nmodel = "vs121"\n'
        f'dev_eui = "{dev_eui(n)}"\nregion_count = 4\nreport_interval = 60\n\n'
        for n in range(1, SENSORS + 1)
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker", persistence=True) as b:
        yield b


class DirectoryWatch:
    """Files created in a directory, as the kernel reports them (inotify, through libc)."""

    IN_CREATE = 0x100
    _EVENT = struct.Struct("iIII")

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self.fd, str(directory).encode(), self.IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")

    def created(self, timeout: float) -> list[str]:
        """Names created since the last call, waiting up to `timeout` for the first."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, 65536)
        names = []
        while data:
            _wd, _mask, _cookie, size = self._EVENT.unpack_from(data)
            end = self._EVENT.size + size
            names.append(data[self._EVENT.size : end].rstrip(b"\0").decode())
            data = data[end:]
        return names

    def close(self) -> None:
        os.close(self.fd)


def wait_for_snapshot_write(
    watch: DirectoryWatch, stream: LineStream, files: int, timeout: float = 60
) -> bool:
    """Keep reports flowing until the `files`-th snapshot file since the start is being
    written (so the kill lands in a start's first snapshot or a later one, which drops the
    previous journal generation); True if it was."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        stream.publish(4)
        seen += sum(name.endswith(".tmp") for name in watch.created(0.02))
        if seen >= files:
            return True
    return False


def totals(daemon: Daemon) -> dict[str, list[int]]:
    """Each sensor's totals in and out, by DevEUI."""
    out = {}
    for n in range(1, SENSORS + 1):
        values = daemon.values(f"s{n}")
        out[dev_eui(n)] = [
            int(values.get("gateway_total_in", 0)),
            int(values.get("gateway_total_out", 0)),
        ]
    return out


def test_kill_9_inside_snapshot_writes_loses_and_doubles_nothing(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    port = new_http_port()
    cfg = gateway_config(
        tmp_path / "state",
        mqtt_port=broker.port,
        http_port=port,
        subscriptions=ALL_SUBSCRIPTIONS,
        sensors=sensors_toml(),
    ).replace('log_level = "info"\n', 'log_level = "info"\nsnapshot_interval = 1\n')
    daemon = Daemon(tmp_path, cfg, http_port=port)
    daemon.start()
    watch = DirectoryWatch(tmp_path / "state" / "sensors")
    daemon.wait_until(lambda: daemon.metric("vs121gw_mqtt_connected") == 1, what="MQTT")
    euis = [dev_eui(n) for n in range(1, SENSORS + 1)]
    stream = LineStream(broker.port, euis, seed=9, client_id="snapshot-kill")
    rng = random.Random(3)
    hits = 0
    try:
        stream.wait_accepted(stream.publish(200))
        for _ in range(KILLS):
            hits += wait_for_snapshot_write(watch, stream, files=rng.randint(1, 3 * SENSORS))
            daemon.kill()
            daemon.start()
            daemon.wait_until(lambda: daemon.metric("vs121gw_mqtt_connected") == 1, what="MQTT")
        stream.wait_accepted(stream.publish(100))
        expected = {eui: list(v) for eui, v in stream.sent.items()}
        daemon.wait_until(lambda: totals(daemon) == expected, timeout=60, what="exact totals")
        assert daemon.stop() == 0
        daemon.start()
        assert totals(daemon) == expected
    finally:
        watch.close()
        stream.close()
        if daemon.running():
            daemon.stop()
    # Most kills must have landed inside a snapshot write, or this test proves little.
    assert hits >= KILLS - 1, f"only {hits} of {KILLS} kills hit a snapshot write"
