"""Bounded waits on observable state, for tests: the one place that polls.

Use these only where nothing can be awaited (another process's HTTP API, a file some other
process writes, a register's value). Where an event exists — a socket turning readable, a
process exiting, a notification — wait for that instead.
"""

from __future__ import annotations

import asyncio
import inspect
import selectors
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

# How often a predicate is tried again, in every bounded wait of the tests. Not shorter: most
# predicates scrape the daemon's /metrics (about 8 ms of its CPU each), on a two-core machine.
POLL_S = 0.05


def wait_until(
    predicate: Callable[[], bool],
    within_s: float,
    what: str,
    *,
    detail: Callable[[], str] | None = None,
) -> None:
    """Return once `predicate()` holds; AssertionError naming `what` after `within_s` seconds.

    `detail` (e.g. a log tail) is called only on failure and appended to the message."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, within_s, detail))
        time.sleep(POLL_S)  # the poll interval of a bounded wait on observable state


async def async_wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    within_s: float,
    what: str,
    *,
    detail: Callable[[], str] | None = None,
) -> None:
    """`wait_until` for a running event loop; `predicate` may be a coroutine function."""
    deadline = time.monotonic() + within_s
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(what, within_s, detail))
        await asyncio.sleep(POLL_S)  # the poll interval of a bounded wait on observable state


def _timed_out(what: str, within_s: float, detail: Callable[[], str] | None) -> str:
    message = f"timed out after {within_s:g} s waiting for {what}"
    return message if detail is None else f"{message}:\n{detail()}"


class TextFile:
    """A file another process appends to (a log), read again only when it has grown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = -1
        self._text = ""

    def text(self) -> str:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return ""
        if size != self._size:
            self._size = size
            self._text = self.path.read_text(errors="replace")
        return self._text

    def wait_for(self, needle: str, within_s: float) -> None:
        """Until `needle` appears in the file."""
        what = f"{needle!r} in {self.path.name}"
        wait_until(lambda: needle in self.text(), within_s, what, detail=self.text)


def wait_closed_by_peer(socks: Iterable[socket.socket], count: int, within_s: float) -> int:
    """Block until `count` of `socks` have been closed by their peer (EOF or reset), reading
    and discarding whatever else they receive; returns how many were. Event-driven: it sleeps
    in select() until a socket turns readable. A closed socket stays readable (EOF is sticky)."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for s in socks:
            selector.register(s, selectors.EVENT_READ, s)
        deadline = time.monotonic() + within_s
        while closed < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"after {within_s:g} s only {closed} of {count} sockets were closed by the peer"
                )
            for key, _ in selector.select(left):
                s = key.data
                try:
                    ended = s.recv(4096, socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    ended = False
                except OSError:
                    ended = True
                if ended:
                    selector.unregister(s)
                    closed += 1
    return closed
