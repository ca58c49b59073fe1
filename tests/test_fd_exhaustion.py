"""Out of file descriptors, under idle and slow HTTP connections: nothing acknowledged is lost.

The real daemon, a real mosquitto and real sockets. The descriptor limit of the running daemon is
lowered with prlimit(1) to exactly what it has open, so the next open() anywhere in it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import Daemon, start_daemon
from helpers.publisher import Publisher
from helpers.wait import TextFile, wait_closed_by_peer

DATA = Path(__file__).parent / "data" / "vs121p"


def _soft_limit(pid: int, limit: int | None) -> None:
    """Set the soft descriptor limit of `pid` (None: back to the hard limit)."""
    if limit is None:
        hard = subprocess.run(
            ["prlimit", f"--pid={pid}", "--nofile", "--raw", "--noheadings", "-o", "HARD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        limit = int(hard)
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:"], check=True)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _publish(port: int, topic: str, body: bytes) -> None:
    publisher = Publisher(port, "fd-publisher")
    try:
        publisher.publish(topic, body)
    finally:
        publisher.close()


def _start(tmp_path: Path, broker: MosquittoBroker | None, extra: str = "") -> Daemon:
    return start_daemon(tmp_path, broker_port=None if broker is None else broker.port, extra=extra)


@pytest.fixture
def gateway(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[Daemon]:
    daemon = _start(tmp_path, mqtt_broker)
    yield daemon
    if daemon.running():
        daemon.stop()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_vs121p_report_counted_while_out_of_descriptors(
    gateway: Daemon, mqtt_broker: MosquittoBroker
) -> None:
    report = json.loads((DATA / "region_interval_counts.json").read_text())
    _soft_limit(gateway.pid, _open_fds(gateway.pid))
    # Idle connections take whatever free numbers are left below the limit (holes in the table),
    # as an attacker's would: after them nothing new can be opened.
    crowd = Attacker(gateway.http_port, 30, dribble=False)
    try:
        _publish(mqtt_broker.port, "vs121p/foyer", json.dumps(report).encode())
        # Observed from outside without a new connection to the daemon: its journal grows.
        TextFile(gateway.workdir / "state" / "journal.jsonl").wait_for('"foyer"', 20)
    finally:
        _soft_limit(gateway.pid, None)
        crowd.close()
    gateway.wait_until(
        lambda: gateway.values("foyer").get("people_count_all") == report["current_total"],
        what="the report applied",
    )
    assert (
        0 < gateway.metric("vs121gw_open_descriptors") <= gateway.metric("vs121gw_descriptor_limit")
    )
    # Every failed accept used to log a whole traceback, many times a second.
    log = gateway.log_text()
    assert "Traceback" not in log
    assert log.count("out of system resource") <= 2
    assert gateway.stop() == 0
    restarted = Daemon(gateway.workdir, gateway.config.read_text(), http_port=gateway.http_port)
    restarted.start()
    try:
        assert restarted.values("foyer")["people_count_all"] == report["current_total"]
    finally:
        restarted.stop()


class Attacker:
    """Opens connections and keeps them idle, or dribbles a request header forever."""

    def __init__(self, port: int, count: int, *, dribble: bool) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if dribble:
                s.sendall(b"POST /vs121p HTTP/1.1\r\nHost: x\r\n")
            self.socks.append(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True) if dribble else None
        if self._thread is not None:
            self._thread.start()

    def _dribble(self) -> None:
        n = 0
        while not self._stop.wait(0.2):
            n += 1
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.sendall(f"X-{n}: y\r\n".encode())

    def closed_by_peer(self) -> int:
        """How many of the sockets the server has closed (EOF or reset)."""
        closed = 0
        for s in self.socks:
            s.setblocking(False)
            try:
                if s.recv(4096) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self.socks:
            s.close()


def test_idle_and_slowloris_connections_are_closed(tmp_path: Path) -> None:
    daemon = _start(tmp_path, None, extra="idle_timeout = 1.0\n")
    idle = Attacker(daemon.http_port, 100, dribble=False)
    slow = Attacker(daemon.http_port, 100, dribble=True)
    try:
        wait_closed_by_peer(idle.socks + slow.socks, 200, 15)
        # The counts are sticky: a socket that saw EOF reports it again.
        assert idle.closed_by_peer() == 100
        assert slow.closed_by_peer() == 100
        assert daemon.get("/healthz").startswith("ok")
    finally:
        idle.close()
        slow.close()
        daemon.stop()


def test_connections_over_the_cap_are_refused_and_counted(tmp_path: Path) -> None:
    daemon = _start(tmp_path, None, extra="max_connections = 20\nidle_timeout = 30.0\n")
    before = _open_fds(daemon.pid)
    crowd = Attacker(daemon.http_port, 60, dribble=False)
    try:
        wait_closed_by_peer(crowd.socks, 40, 10)
        assert crowd.closed_by_peer() == 40
        assert _open_fds(daemon.pid) <= before + 20
    finally:
        crowd.close()
    daemon.wait_until(
        lambda: (
            daemon.metric("vs121gw_connections_refused_total", listener="http", reason="limit")
            == 40
        ),
        what="refusals counted",
    )
    daemon.stop()
