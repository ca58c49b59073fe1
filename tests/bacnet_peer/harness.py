"""Drives the peer scripts of this folder from tests: start, call, wait for events, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 15.0


class PeerError(Exception):
    """The peer answered a command with a BACnet error, reject or abort."""

    def __init__(self, op: str, detail: dict[str, Any]) -> None:
        super().__init__(f"{op}: {detail}")
        self.detail = detail

    @property
    def code(self) -> str | None:
        return self.detail.get("errorCode")

    @property
    def error_class(self) -> str | None:
        return self.detail.get("errorClass")


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (each BACnet instance needs its own:
    bacpypes3 shares ports through SO_REUSEPORT and would split the traffic)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Peer:
    """One peer process speaking JSON lines (see client.py and bbmd.py)."""

    def __init__(
        self, proc: asyncio.subprocess.Process, port: int, host: str = "127.0.0.1"
    ) -> None:
        self.proc = proc
        self.port = port
        self.address = f"{host}:{port}"
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(
        cls,
        script: str,
        port: int | None = None,
        *args: str,
        wrap: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> Peer:
        """Start `script` with `--port` and `args`. `wrap` is a command prefix (e.g.
        `ip netns exec NAME`); `host` is the address the script binds, for `address`."""
        port = port or free_udp_port()
        proc = await asyncio.create_subprocess_exec(
            *wrap,
            sys.executable,
            str(HERE / script),
            "--port",
            str(port),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            limit=16 * 1024 * 1024,  # one answer is one line, and some are long
        )
        peer = cls(proc, port, host)
        try:
            await asyncio.wait_for(asyncio.shield(peer._ready), START_TIMEOUT_S)
        except BaseException:
            await peer.stop()
            raise
        return peer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            doc = json.loads(line)
            if doc.get("event") == "ready":
                if not self._ready.done():
                    self._ready.set_result(None)
            elif "id" in doc:
                future = self._waiting.pop(doc["id"], None)
                if future is not None and not future.done():
                    future.set_result(doc)
            else:
                self.events.append(doc)
                self._arrived.set()
        if not self._ready.done():
            self._ready.set_exception(RuntimeError("peer exited before it was ready"))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("peer exited"))

    async def answer(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """The raw answer: {"result": ...} or {"error": {...}}."""
        assert self.proc.stdin is not None
        self._next_id += 1
        ident = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self.proc.stdin.write((json.dumps({"id": ident, "op": op, **kwargs}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, CALL_TIMEOUT_S)

    async def call(self, op: str, **kwargs: Any) -> Any:
        doc = await self.answer(op, **kwargs)
        if "error" in doc:
            raise PeerError(op, doc["error"])
        return doc["result"]

    async def next_event(
        self,
        predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
        within: float = 5.0,
    ) -> dict[str, Any]:
        """The oldest event matching `predicate`, waiting for it if need be; others stay."""
        async with asyncio.timeout(within):
            while True:
                for i, event in enumerate(self.events):
                    if predicate(event):
                        return self.events.pop(i)
                self._arrived.clear()
                await self._arrived.wait()

    def drain_events(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out

    async def stop(self) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
