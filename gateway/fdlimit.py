"""File descriptors: a budget for the listeners, and a reserve for the state writes.

Every accepted connection costs a descriptor. Out of descriptors, a process cannot open its state
files, load a lazily imported module or accept a connection, and asyncio logs a traceback for
every failed accept. So at start-up the soft limit is raised to the hard one, listeners are
capped to a share of it, and a few descriptors are held in reserve: when a state write finds
none left, the reserve is given back for that write and taken again afterwards.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from gateway.logsummary import Summariser

log = logging.getLogger("gateway.fd")

RESERVE: Final = 16
# Descriptors the process needs besides client connections: journal, state files, the MQTT
# socket, BACnet and Modbus listeners, serial ports, GPIO, log files, imports.
BASE_NEED: Final = 64
_EXHAUSTED: Final = (errno.EMFILE, errno.ENFILE)

T = TypeVar("T")


def raise_soft_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return int(hard if soft == resource.RLIM_INFINITY else soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return int(soft)
    return int(hard)


def connection_budget(limit: int, wanted: int, *, what: str) -> int:
    """At most `wanted` connections, and no more than half of what the limit leaves free."""
    room = max(1, (limit - BASE_NEED - RESERVE) // 2)
    if wanted > room:
        log.warning(
            "%s = %d is more than the descriptor limit leaves room for (%d of %d); using %d "
            "(raise LimitNOFILE to allow more)",
            what,
            wanted,
            room,
            limit,
            room,
        )
        return room
    return wanted


def open_descriptors() -> int:
    """Descriptors open in this process now (Linux)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself holds
    except OSError:
        return -1


class FdReserve:
    """A few descriptors (of /dev/null) held so that state writes can run when none are left."""

    def __init__(self, count: int = RESERVE) -> None:
        self._count = count
        self._held: list[int] = []
        self._lock = threading.Lock()
        self.refill()

    @property
    def held(self) -> int:
        return len(self._held)

    def refill(self) -> None:
        with self._lock:
            while len(self._held) < self._count:
                try:
                    self._held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
                except OSError:
                    return

    def release(self) -> None:
        with self._lock:
            while self._held:
                os.close(self._held.pop())

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`; if it finds no descriptor free, again with the reserve given back."""
        try:
            return fn(*args)
        except OSError as exc:
            if exc.errno not in _EXHAUSTED or not self._held:
                raise
            log.warning("out of file descriptors: using the reserve for a state write")
        self.release()
        try:
            return fn(*args)
        finally:
            self.refill()


RESERVED = FdReserve(0)  # replaced by `install()` in the daemon; tests and tools hold none


def install(count: int = RESERVE) -> FdReserve:
    global RESERVED  # noqa: PLW0603  one process-wide reserve: descriptors are per process
    RESERVED.release()
    RESERVED = FdReserve(count)
    return RESERVED


_quiet = Summariser(logging.getLogger("gateway.loop"))


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's unhandled errors in one line each, repeats summarised.

    asyncio logs a whole traceback for every accept that fails for want of descriptors, many
    times a second; the cap above prevents it, this keeps any remaining storm small."""

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        exc = context.get("exception")
        detail = f": {exc!r}" if exc is not None else ""
        _quiet.error(f"{message}:{type(exc).__name__}", f"{message}{detail}")

    loop.set_exception_handler(handler)
