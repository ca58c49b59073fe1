"""Live updates over server-sent events: what changed is collected as it happens and sent at most
once a second, as server-rendered fragments (each shared by every page that shows it).

An event is JSON: {"now": unix time, "replace": {element id: html}, "prepend": {list id: [html]}}.
A client that falls behind is dropped; its browser reconnects and receives a full refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.state import Change
from gateway.web.records import Fault, MessageRecord

log = logging.getLogger("gateway.web")

FLUSH_S = 1.0
PING_S = 15.0
CLIENT_QUEUE = 8
MAX_CLIENTS = 64
# Values a freshness tick changes every second for every sensor: the page counts the age itself.
_TICK_KEYS = frozenset({"seconds_since_report"})


@dataclass
class Dirty:
    """What changed since the last flush (or everything, for a fresh client)."""

    sensors: set[str] = field(default_factory=set)
    messages: dict[str, list[MessageRecord]] = field(default_factory=dict)
    alarms: bool = False
    faults: list[Fault] = field(default_factory=list)
    full: bool = False

    def __bool__(self) -> bool:
        return bool(self.sensors or self.messages or self.alarms or self.faults or self.full)


Topic = tuple[str, str]  # (page, sensor id or "")
Builder = Callable[[Topic, Dirty], dict[str, Any]]


class _Client:
    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)

    def offer(self, data: bytes | None) -> bool:
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True


class LiveHub:
    def __init__(self, build: Builder, *, flush_s: float = FLUSH_S) -> None:
        self._build = build
        self._flush_s = flush_s
        self._clients: set[_Client] = set()
        self._dirty = Dirty()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.events_sent = 0

    # -- what changed -----------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        if not self._clients:
            return
        if not change.sensor_id:
            if any(k.startswith("rule_") for k in change.values):
                self._dirty.alarms = True
            return
        if change.online is None and _TICK_KEYS.issuperset(change.values):
            return
        self._dirty.sensors.add(change.sensor_id)

    def on_message(self, sensor_id: str | None, record: MessageRecord) -> None:
        if self._clients and sensor_id is not None:
            self._dirty.messages.setdefault(sensor_id, []).append(record)
            self._dirty.sensors.add(sensor_id)  # its decode-error and duplicate counts

    def on_fault(self, fault: Fault) -> None:
        if self._clients:
            self._dirty.faults.append(fault)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
            self._task.set_name("web live")

    async def close(self) -> None:
        for client in list(self._clients):
            # A full queue is emptied first, so the end-of-stream mark always fits.
            while not client.offer(None):
                client.queue.get_nowait()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                self.flush()
            except Exception:  # a rendering bug must not stop live updates for good
                log.exception("web: live update failed")

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, Dirty()
        gateway_page = any(c.topic[0] == "gateway" for c in self._clients)
        if not dirty and not gateway_page:
            return
        encoded: dict[Topic, bytes | None] = {}
        for client in list(self._clients):
            if client.topic not in encoded:
                event = self._build(client.topic, dirty)
                encoded[client.topic] = _encode(event) if event else None
            data = encoded[client.topic]
            if data is not None and not client.offer(data):
                log.info("web: a live client fell behind; dropped (it reconnects)")
                self._clients.discard(client)
                client.queue.get_nowait()
                client.offer(None)
            elif data is not None:
                self.events_sent += 1

    # -- the stream -------------------------------------------------------------------------

    async def stream(self, request: web.Request, topic: Topic) -> web.StreamResponse:
        if len(self._clients) >= MAX_CLIENTS:
            return web.Response(status=503, text="too many live clients\n")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        client = _Client(topic)
        self._clients.add(client)
        try:
            await response.write(b"retry: 3000\n\n")
            first = self._build(topic, Dirty(full=True))
            if first:
                await response.write(_encode(first))
            while True:
                try:
                    data = await asyncio.wait_for(client.queue.get(), PING_S)
                except TimeoutError:
                    data = b": ping\n\n"
                if data is None:
                    break
                await response.write(data)
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self._clients.discard(client)
        return response


def _encode(event: dict[str, Any]) -> bytes:
    event.setdefault("now", time.time())
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
