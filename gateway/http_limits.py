"""A listening site for aiohttp that caps how many connections are open at once.

aiohttp 3.14 has no connection limit: every accepted TCP connection costs a file descriptor, and
anyone who can reach the port can open them without authenticating until the process has none
left for its journal, its state files or its other sinks. This site counts connections from
`connection_made` to `connection_lost` and closes any new one over the cap at once (counted, and
logged once per burst). Idle connections and requests whose headers never complete are closed by
aiohttp's own keep-alive timer, which starts when the connection opens (`keepalive_timeout` of the
runner); `HttpServer` puts a deadline on reading bodies.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Final, cast

from aiohttp import web

from gateway.logsummary import Summariser

log = logging.getLogger("gateway.http")

BACKLOG: Final = 64


class _Counted(asyncio.Protocol):
    """Passes every event to aiohttp's protocol, and tells the site when the connection ends."""

    def __init__(self, inner: asyncio.Protocol, site: LimitedSite) -> None:
        self._inner = inner
        self._site = site
        self._open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._site.admit():
            # Over the cap: reset at once, so the descriptor is free again.
            cast(asyncio.Transport, transport).abort()
            return
        self._open = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open:
            self._open = False
            self._site.release()
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._open:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._open else None

    def pause_writing(self) -> None:
        if self._open:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._open:
            self._inner.resume_writing()


class LimitedSite(web.BaseSite):
    """Like `web.TCPSite`, with at most `max_connections` open connections."""

    __slots__ = ("_host", "_limit", "_log", "_on_refused", "_open", "_port", "_refused")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._host = host
        self._port = port
        self._limit = max_connections
        self._open = 0
        self._refused = 0
        self._log = Summariser(log)
        self._on_refused = on_refused

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def refused(self) -> int:
        return self._refused

    async def start(self) -> None:
        await super().start()
        handler_factory = self._runner.server
        assert handler_factory is not None

        def factory() -> asyncio.Protocol:
            return _Counted(handler_factory(), self)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog
        )

    def admit(self) -> bool:
        if self._open >= self._limit:
            self._refused += 1
            self._log.warning(
                "cap", f"HTTP: {self._open} connections open (http.max_connections): refusing more"
            )
            if self._on_refused is not None:
                self._on_refused()
            return False
        self._open += 1
        return True

    def release(self) -> None:
        self._open -= 1
