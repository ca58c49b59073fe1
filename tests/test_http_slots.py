"""HTTP connection slots: whoever holds them quietly cannot keep a sensor's push out.

The real daemon and real sockets. With every slot taken by connections that send nothing, a
VS121-P push still gets in (the connection quiet longest is closed for it); while every slot is
busy sending, a newcomer is refused and counted instead.
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from helpers.daemon import Daemon, gateway_config, new_http_port

DATA = Path(__file__).parent / "data" / "vs121p"
SLOTS = 4


def start(tmp_path: Path) -> Daemon:
    port = new_http_port()
    cfg = gateway_config(
        tmp_path / "state",
        mqtt_port=None,
        http_port=port,
        extra=f"max_connections = {SLOTS}\nidle_timeout = 60.0\n",
    )
    daemon = Daemon(tmp_path, cfg, http_port=port)
    daemon.start()
    return daemon


def push(port: int, body: bytes) -> int:
    """POST a report; the status, or 0 when the connection was closed on us."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/vs121p", data=body)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return 0


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_quiet_connections_give_their_slot_to_a_push(tmp_path: Path) -> None:
    daemon = start(tmp_path)
    holders = [socket.create_connection(("127.0.0.1", daemon.http_port)) for _ in range(SLOTS)]
    body = (DATA / "line_interval.json").read_bytes()
    try:
        # (Reading the daemon over HTTP here would take a slot itself: the push is the probe.)
        # Refused while the holders are fresh; once they have been quiet a second, one of
        # them is closed and the push is answered.
        daemon.wait_until(lambda: push(daemon.http_port, body) == 200, what="push accepted")
        assert sum(closed_by_peer(s) for s in holders) >= 1
        report = json.loads(body)
        assert daemon.values("foyer")["gateway_total_in"] == report["in_counted"]
        assert "closing the connection quiet longest" in daemon.log_text()
    finally:
        for s in holders:
            s.close()
        daemon.stop()


def test_busy_slots_refuse_a_newcomer(tmp_path: Path) -> None:
    daemon = start(tmp_path)
    holders = [socket.create_connection(("127.0.0.1", daemon.http_port)) for _ in range(SLOTS)]
    try:
        for n, s in enumerate(holders):  # each is in the middle of sending a request
            s.sendall(f"POST /vs121p HTTP/1.1\r\nHost: h\r\nX-{n}: y\r\n".encode())
        newcomer = socket.create_connection(("127.0.0.1", daemon.http_port))
        with contextlib.closing(newcomer):
            newcomer.settimeout(5)
            try:
                got = newcomer.recv(1)
            except ConnectionResetError:
                got = b""
            assert got == b""  # closed at once
        assert not any(closed_by_peer(s) for s in holders)
    finally:
        for s in holders:
            s.close()
    try:
        daemon.wait_until(
            lambda: (
                daemon.metric("vs121gw_connections_refused_total", listener="http", reason="limit")
                == 1
            ),
            what="refusal counted",
        )
    finally:
        daemon.stop()
