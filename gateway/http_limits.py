"""A listening site for aiohttp that caps how many connections are open at once.

aiohttp 3.14 has no connection limit: every accepted TCP connection costs a file descriptor, and
anyone who can reach the port can open them without authenticating until the process has none
left for its journal, its state files or its other sinks. This site counts connections from
`connection_made` to `connection_lost`. When all slots are taken, a newcomer takes the slot of the
connection that has been quiet longest (nothing received for at least `EVICT_QUIET_S`: an idle
keep-alive, a client that vanished, a slowloris between its bytes), so whoever holds the slots
cannot keep a sensor's next push out; only when every open connection sent something within that
time is the newcomer closed at once (counted, and logged once per burst). Idle connections and
requests whose headers never complete are also closed by aiohttp's own keep-alive timer, which
starts when the connection opens (`keepalive_timeout` of the runner); `HttpServer` puts a deadline
on reading bodies.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Final, cast

from aiohttp import web

from gateway.logsummary import Summariser

log = logging.getLogger("gateway.http")

BACKLOG: Final = 64
# A connection that received nothing for this long may be closed to make room for a newcomer; a
# request being sent or answered has received bytes more recently than that.
EVICT_QUIET_S: Final = 1.0


class _Counted(asyncio.Protocol):
    """Passes every event to aiohttp's protocol, and tells the site when the connection ends."""

    def __init__(self, inner: asyncio.Protocol, site: LimitedSite) -> None:
        self._inner = inner
        self._site = site
        self._open = False
        self.transport: asyncio.Transport | None = None
        self.last_heard = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._site.admit(self):
            # Over the cap: reset at once, so the descriptor is free again.
            cast(asyncio.Transport, transport).abort()
            return
        self._open = True
        self.transport = cast(asyncio.Transport, transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open:
            self._open = False
            self._site.release(self)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._open:
            self.last_heard = time.monotonic()
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

    __slots__ = (
        "_connections",
        "_evicted",
        "_host",
        "_limit",
        "_log",
        "_on_refused",
        "_port",
        "_refused",
    )

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
        self._connections: dict[_Counted, None] = {}  # in opening order
        self._refused = 0
        self._evicted = 0
        self._log = Summariser(log)
        self._on_refused = on_refused

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def evicted(self) -> int:
        """Quiet connections closed to make room for a newcomer."""
        return self._evicted

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

    def admit(self, conn: _Counted) -> bool:
        if len(self._connections) >= self._limit and not self._evict_quietest():
            self._refused += 1
            self._log.warning(
                "cap",
                f"HTTP: {len(self._connections)} connections open (http.max_connections), all "
                "active: refusing more",
            )
            if self._on_refused is not None:
                self._on_refused()
            return False
        self._connections[conn] = None
        return True

    def release(self, conn: _Counted) -> None:
        self._connections.pop(conn, None)

    def _evict_quietest(self) -> bool:
        """Close the connection quiet longest, if one was quiet long enough; True if one was."""
        cutoff = time.monotonic() - EVICT_QUIET_S
        quietest = min(self._connections, key=lambda c: c.last_heard, default=None)
        if quietest is None or quietest.last_heard > cutoff or quietest.transport is None:
            return False
        self._connections.pop(quietest)  # its slot is the newcomer's from now on
        quietest.transport.abort()
        self._evicted += 1
        self._log.warning(
            "evict", "HTTP: connection slots full: closing the connection quiet longest"
        )
        return True
