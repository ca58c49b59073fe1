"""The sd_notify client against real AF_UNIX datagram sockets, as systemd would receive them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import Notifier, watchdog_loop

REPO = Path(__file__).resolve().parents[1]
RECV_TIMEOUT_S = 10.0


@pytest.fixture
def socket_path() -> Iterator[str]:
    # A short directory of our own: AF_UNIX paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        yield os.path.join(tmp, "notify")


@pytest.fixture
def listener(socket_path: str) -> Iterator[socket.socket]:
    """Plays systemd: a datagram socket bound where NOTIFY_SOCKET points."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(socket_path)
        sock.settimeout(RECV_TIMEOUT_S)
        yield sock


@pytest.fixture
def notifier(socket_path: str, listener: socket.socket) -> Iterator[Notifier]:
    n = Notifier.from_env({"NOTIFY_SOCKET": socket_path})
    yield n
    n.close()


def _nothing_queued(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_ready_with_status_is_one_datagram(notifier: Notifier, listener: socket.socket) -> None:
    assert notifier.ready("serving 2 sensors")
    assert listener.recv(4096) == b"READY=1\nSTATUS=serving 2 sensors"


def test_ready_without_status(notifier: Notifier, listener: socket.socket) -> None:
    assert notifier.ready()
    assert listener.recv(4096) == b"READY=1"


def test_status_watchdog_stopping(notifier: Notifier, listener: socket.socket) -> None:
    assert notifier.status("mqtt connected")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notifier.stopping("saving state")
    assert [listener.recv(4096) for _ in range(4)] == [
        b"STATUS=mqtt connected",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"STOPPING=1\nSTATUS=saving state",
    ]


def test_status_newlines_cannot_inject_fields(notifier: Notifier, listener: socket.socket) -> None:
    assert notifier.status("line one\nREADY=1")
    assert listener.recv(4096) == b"STATUS=line one READY=1"


def test_status_text_is_utf8(notifier: Notifier, listener: socket.socket) -> None:
    assert notifier.status("Empfang läuft")
    assert listener.recv(4096) == "STATUS=Empfang läuft".encode()


def test_abstract_socket() -> None:
    name = f"vs121gw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT_S)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        try:
            assert n.ready("abstract")
            assert n.watchdog()
        finally:
            n.close()
        assert sock.recv(4096) == b"READY=1\nSTATUS=abstract"
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_reopens_after_close(notifier: Notifier, listener: socket.socket) -> None:
    notifier.close()
    assert notifier.watchdog()
    assert listener.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier.from_env()
    assert not n.enabled
    assert not n.ready("x")
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.stopping()
    # Nobody to ping, so no watchdog even though an interval is set.
    assert n.watchdog_interval() is None


def test_relative_socket_path_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        n = Notifier.from_env({"NOTIFY_SOCKET": "relative/notify"})
    assert not n.enabled
    assert not n.ready()
    assert "only absolute paths" in caplog.text


def test_send_failure_does_not_raise_and_warns_once(
    socket_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": socket_path})  # nobody bound there
    with caplog.at_level(logging.DEBUG, logger="gateway.sdnotify"):
        assert not n.ready()
        assert not n.watchdog()
        assert not n.stopping()
    n.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert socket_path in warnings[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 2


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("1000000", None, 0.5),
        ("30000000", "other", None),
        ("0", None, None),
        ("-5", None, None),
        ("thirty", None, None),
        ("30000000", "not-a-pid", None),
        (None, None, None),
        (None, "self", None),
    ],
)
def test_watchdog_interval(
    socket_path: str, usec: str | None, pid: str | None, expected: float | None
) -> None:
    env = {"NOTIFY_SOCKET": socket_path}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    elif pid is not None:
        env["WATCHDOG_PID"] = pid
    assert Notifier.from_env(env).watchdog_interval() == expected


def test_a_separate_process_reports_ready(socket_path: str, listener: socket.socket) -> None:
    program = (
        "import sys\n"
        "from gateway.sdnotify import Notifier\n"
        "n = Notifier.from_env()\n"
        "sys.exit(0 if n.ready('child up') else 3)\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": socket_path}
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert listener.recv(4096) == b"READY=1\nSTATUS=child up"


def _fast_watchdog(socket_path: str) -> Notifier:
    # WATCHDOG_USEC=20 ms: pings every 10 ms.
    return Notifier.from_env({"NOTIFY_SOCKET": socket_path, "WATCHDOG_USEC": "20000"})


async def _recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), RECV_TIMEOUT_S)


@pytest.mark.asyncio
async def test_watchdog_loop_pings_while_healthy(socket_path: str, listener: socket.socket) -> None:
    listener.setblocking(False)
    n = _fast_watchdog(socket_path)
    task = asyncio.create_task(watchdog_loop(n, lambda: True))
    try:
        assert await _recv(listener) == b"WATCHDOG=1"
        assert await _recv(listener) == b"WATCHDOG=1"
    finally:
        task.cancel()
        n.close()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_watchdog_loop_withholds_pings_until_healthy_again(
    socket_path: str, listener: socket.socket
) -> None:
    listener.setblocking(False)
    n = _fast_watchdog(socket_path)
    checks: list[bool] = []

    def healthy() -> bool:
        # Unhealthy for the first three checks; on the fourth, record whether any ping got out.
        if len(checks) < 3:
            checks.append(False)
            return False
        checks.append(_nothing_queued(listener))
        return True

    task = asyncio.create_task(watchdog_loop(n, healthy))
    try:
        assert await _recv(listener) == b"WATCHDOG=1"
    finally:
        task.cancel()
        n.close()
    assert len(checks) >= 4
    assert checks[3] is True, "a ping was sent while unhealthy"


@pytest.mark.asyncio
async def test_watchdog_loop_treats_a_raising_check_as_unhealthy(
    socket_path: str, listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    n = _fast_watchdog(socket_path)
    calls = 0
    enough = asyncio.Event()

    def healthy() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            enough.set()
        raise RuntimeError("state store wedged")

    with caplog.at_level(logging.ERROR, logger="gateway.sdnotify"):
        task = asyncio.create_task(watchdog_loop(n, healthy))
        try:
            await asyncio.wait_for(enough.wait(), RECV_TIMEOUT_S)
            assert not task.done()
        finally:
            task.cancel()
            n.close()
    assert _nothing_queued(listener)
    # Logged with its traceback once per unhealthy spell, not on every check.
    tracebacks = [r.exc_info for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert "state store wedged" in str(tracebacks[0][1])


@pytest.mark.asyncio
async def test_watchdog_loop_returns_when_no_watchdog_is_wanted() -> None:
    task = asyncio.create_task(watchdog_loop(Notifier.from_env({}), lambda: True))
    await asyncio.wait_for(task, RECV_TIMEOUT_S)
    assert task.done()
    assert task.exception() is None
