"""Durable state: atomic JSON files, written in batches, with callbacks once a batch is on disk.

A message is acknowledged to its source (MQTT manual ack, HTTP 2xx) only from a callback that runs
after the batch holding its effect was written, so `kill -9` at any moment loses nothing the source
considers delivered. Batching (one write per dirty sensor per batch, not one per message) keeps
fsync from capping throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.state import GatewayState

log = logging.getLogger("gateway.store")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file, fsync it, rename over the target, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class StateStore:
    """One JSON file per sensor under ``<state_dir>/sensors``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sensor_dir = directory / "sensors"

    def prepare(self) -> None:
        self.sensor_dir.mkdir(parents=True, exist_ok=True, mode=0o750)

    def path_for(self, sensor_id: str) -> Path:
        return self.sensor_dir / f"{_SAFE.sub('_', sensor_id)}.json"

    def load_into(self, state: GatewayState) -> int:
        """Restore every sensor that has a file; a damaged file is set aside, never fatal."""
        restored = 0
        for sensor_id in state.ids():
            path = self.path_for(sensor_id)
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("state of sensor %s unreadable (%s); starting empty", sensor_id, exc)
                continue
            try:
                state.restore(sensor_id, json.loads(raw))
                restored += 1
            except (ValueError, TypeError, KeyError) as exc:
                aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
                with contextlib.suppress(OSError):
                    path.rename(aside)
                log.error(
                    "state of sensor %s damaged (%s); kept as %s, starting empty",
                    sensor_id,
                    exc,
                    aside.name,
                )
        return restored

    def write_docs(self, docs: dict[str, bytes]) -> None:
        for sensor_id, data in docs.items():
            atomic_write(self.path_for(sensor_id), data)


class Committer:
    """Flushes dirty sensors in batches and then runs the callbacks waiting on that batch."""

    def __init__(
        self,
        state: GatewayState,
        store: StateStore,
        *,
        batch_window: float = 0.02,
        on_write: Callable[[float], None] | None = None,
    ) -> None:
        self._state = state
        self._store = store
        self._window = batch_window
        self._on_write = on_write
        self._callbacks: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def after_durable(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything applied so far is on disk."""
        self._callbacks.append(callback)
        self._idle.clear()
        self._wake.set()

    async def durable(self) -> None:
        """Wait until everything applied so far is on disk."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def _release() -> None:
            if not done.done():
                done.set_result(None)

        self.after_durable(_release)
        await done

    def request_flush(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            # Let a burst accumulate so one fsync covers many messages.
            await asyncio.sleep(self._window)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        docs = self._snapshot()
        if docs:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._store.write_docs, docs)
            except OSError as exc:
                # Nothing is acknowledged: sources redeliver, and the next batch retries.
                log.error("cannot write state: %s; will retry", exc)
                self._state.dirty.update(docs)
                self._callbacks[:0] = callbacks
                self._wake.set()
                await asyncio.sleep(1.0)
                return
            if self._on_write is not None:
                self._on_write(time.perf_counter() - started)
        for cb in callbacks:
            cb()
        if not self._callbacks and not self._state.dirty:
            self._idle.set()

    def _snapshot(self) -> dict[str, bytes]:
        dirty, self._state.dirty = self._state.dirty, set()
        return {sid: _dumps(self._state.sensors[sid].to_json()) for sid in dirty}


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
