"""The event loop's worker threads get the interpreter while they run.

Durable state is written in a worker thread (`asyncio.to_thread`: write, fdatasync), and every
acknowledgement waits for it. A worker thread needs the interpreter lock at each step (start,
after the write, after the sync, to hand back its result); while the loop thread is busy, as
when BMS clients poll back to back, each of those steps waits for the loop thread to give the
lock up, and on a loaded machine the loop thread is often preempted while it holds it. Measured
with a loop thread doing 50 µs steps of work: the 300-byte write + fdatasync took p99 100-160 ms
instead of 5-10 ms; with the busy work held back while the write runs, 5-10 ms again.

So the loop's default executor tells listeners (the BACnet link: stop reading requests) while
any of its jobs runs, for at most `max_hold_s` per stretch so a long job (a snapshot of many
sensors) never holds the listeners back for long. Requests wait in the socket's buffer meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger("gateway")

MAX_HOLD_S = 0.02  # longer than a journal write's usual p99, far below a BMS's timeouts

Listener = Callable[[bool], None]  # True: a job started, hold back; False: carry on

_installed: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GatedExecutor] = (
    weakref.WeakKeyDictionary()
)


class GatedExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor for one event loop that reports when jobs run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_hold_s: float = MAX_HOLD_S) -> None:
        super().__init__(thread_name_prefix="asyncio")
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._max_hold_s = max_hold_s
        self._listeners: list[Listener] = []
        self._running = 0
        self._holding = False
        self._limit: asyncio.TimerHandle | None = None

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(True)` when jobs start running, `listener(False)` when they are done
        or ran `max_hold_s`; returns a function that stops listening."""
        self._listeners.append(listener)

        def forget() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return forget

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        if threading.get_ident() == self._loop_thread:  # jobs from other threads are not held
            self._running += 1
            if self._running == 1 and not self._holding:
                self._set(True)
                self._limit = self._loop.call_later(self._max_hold_s, self._set, False)
            future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future[Any]) -> None:
        # In the worker thread: the count is the loop's.
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
            self._loop.call_soon_threadsafe(self._finished)

    def _finished(self) -> None:
        self._running -= 1
        if self._running == 0:
            if self._limit is not None:
                self._limit.cancel()
                self._limit = None
            if self._holding:
                self._set(False)

    def _set(self, holding: bool) -> None:
        self._holding = holding
        if not holding:
            self._limit = None
        for listener in list(self._listeners):
            try:
                listener(holding)
            except Exception:
                log.exception("worker-thread listener failed")


def install(loop: asyncio.AbstractEventLoop, *, max_hold_s: float = MAX_HOLD_S) -> GatedExecutor:
    """Make a `GatedExecutor` the loop's default executor (what `asyncio.to_thread` uses)."""
    executor = GatedExecutor(loop, max_hold_s=max_hold_s)
    loop.set_default_executor(executor)
    _installed[loop] = executor
    return executor


def listen(listener: Listener) -> Callable[[], None]:
    """Listen to the running loop's installed executor; without one, nothing is reported."""
    executor = _installed.get(asyncio.get_running_loop())
    if executor is None:
        return lambda: None
    return executor.listen(listener)
