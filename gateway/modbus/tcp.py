"""The Modbus TCP server: MBAP framing over asyncio, one request at a time per connection.

Reads are answered inside `data_received`, without a task switch, which keeps a round trip well
under a millisecond. A write waits for its command; the connection's later requests wait behind
it, so every connection sees its requests carried out in order. Every unit id is answered: the
TCP side is one device, not a gateway to others (unless `units` restricts the unit ids, as in
the one-unit-per-sensor addressing mode; other unit ids then answer exception 0B).

Connection slots cannot be locked up: a connection that completes no request within
`idle_timeout` is closed (idle clients and slowloris senders alike), every socket has its own
keepalive timers so a peer that vanished without FIN or RST is found within
`idle + interval * count` seconds, and when the table is full a newcomer takes the slot of the
connection idle longest (one whose write is still running is never taken).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable

from gateway.access import AllowList, admit_connection
from gateway.commands import REQUESTER
from gateway.modbus.pdu import PendingReply, Reply, RequestHandler
from gateway.modbus.pdu_codes import Outcome
from gateway.modbus.units import Router

log = logging.getLogger("gateway.modbus")

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MBAP_SIZE = _MBAP.size
MAX_PDU = 253
MAX_BUFFERED = 64 * 1024  # a client pipelining more than this while a write runs is paused


class TcpServer:
    """Listens on host:port; `start`, `stop`, `port` (the bound port) and `open_connections`."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: RequestHandler,
        on_outcome: Callable[[Outcome], None],
        *,
        max_connections: int,
        idle_timeout: float = 0.0,
        keepalive: tuple[int, int, int] | None = None,
        router: Router | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self.handler = handler
        self.router = router
        self.on_outcome = on_outcome
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.keepalive = keepalive  # (idle, interval, count) in seconds
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._full_logged = False
        self.allow: AllowList | None = None  # client networks allowed to connect (None: any)

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self._host, self._port, reuse_address=True
        )
        log.info("Modbus TCP: listening on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self.connections):
            conn.close()
        await server.wait_closed()

    def admit(self, conn: _Connection, peer: object) -> bool:
        """Take a slot for `conn`: a free one, else the one idle longest; False if none."""
        if len(self.connections) >= self.max_connections:
            idle = [c for c in self.connections if not c.busy]
            if not idle:
                self._log_full(f"connection from {peer} refused: every connection is writing")
                return False
            victim = min(idle, key=lambda c: c.last_request)
            self.connections.discard(victim)
            self._log_full(
                f"closed the connection from {victim.peer} (idle longest) to admit {peer}"
            )
            victim.abort()
        self.connections.add(conn)
        return True

    def _log_full(self, what: str) -> None:
        # Warned once per spell of a full table: a client stuck in a reconnect loop must not
        # flood the log.
        level = logging.DEBUG if self._full_logged else logging.WARNING
        log.log(
            level,
            "Modbus TCP: %d connections open (max_connections); %s",
            self.max_connections,
            what,
        )
        self._full_logged = True

    def released(self, conn: _Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self._full_logged = False  # a slot came free by itself: the next eviction is news


class _Connection(asyncio.Protocol):
    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self.busy = False
        self._paused = False
        self._write_task: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.last_request = self._loop.time()  # when a complete request last arrived
        self._idle_timer: asyncio.TimerHandle | None = None
        self.peer: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not admit_connection(self._server.allow, transport):
            return
        server = self._server
        self.peer = transport.get_extra_info("peername")
        if not server.admit(self, self.peer):
            transport.abort()
            return
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and server.keepalive is not None:
            _set_keepalive(sock, *server.keepalive)
        if server.idle_timeout > 0:
            self._idle_timer = self._loop.call_later(server.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        # Requests only stamp `last_request`; the timer re-arms itself for the time left, so
        # the request path pays no timer bookkeeping.
        self._idle_timer = None
        if self._transport is None:
            return
        timeout = self._server.idle_timeout
        left = self.last_request + timeout - self._loop.time()
        if self.busy or left > 0:
            self._idle_timer = self._loop.call_later(max(left, 0.05), self._check_idle)
            return
        log.info(
            "Modbus TCP: closed the connection from %s: no complete request for %gs "
            "(idle_timeout_s)",
            self.peer,
            timeout,
        )
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._transport is not None:
            self._server.released(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        # No goodbye for an idle or vanished peer: a FIN to a dead host would hold the socket.
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self.busy:
            self._process()
        elif len(self._buf) > MAX_BUFFERED and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def _process(self) -> None:
        buf = self._buf
        router = self._server.router
        while len(buf) >= MBAP_SIZE and self._transport is not None:
            tid, protocol, length, unit = _MBAP.unpack_from(buf)
            if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                # Framing is lost; nothing later in the stream can be trusted.
                self._server.on_outcome(Outcome.BAD_FRAME)
                log.debug("Modbus TCP: malformed MBAP header %s; closing", bytes(buf[:7]).hex())
                self._transport.close()
                return
            end = 6 + length
            if len(buf) < end:
                return
            pdu = bytes(buf[MBAP_SIZE:end])
            del buf[:end]
            self.last_request = self._loop.time()
            if pdu[0] & 0x80:
                # Function codes 128-255 are exception responses, never requests: any answer
                # (83 01 to an 83) would read as an exception to another function. Silence.
                self._server.on_outcome(Outcome.BAD_FRAME)
                continue
            peer = self._transport.get_extra_info("peername")
            REQUESTER.set(f"modbus-tcp:{peer[0]}:{peer[1]}" if peer else "modbus-tcp")
            if router is None:
                reply = self._server.handler.handle(pdu)
            else:
                reply = router.handle_tcp(unit, pdu)
            if isinstance(reply, tuple):
                self._send(tid, unit, reply)
                continue
            self.busy = True
            # Kept referenced: the loop holds tasks only weakly.
            self._write_task = asyncio.ensure_future(self._finish(tid, unit, reply))
            return

    async def _finish(self, tid: int, unit: int, pending: PendingReply) -> None:
        try:
            reply = await pending
        finally:
            self.busy = False
        self.last_request = self._loop.time()  # the idle time counts from our answer
        self._send(tid, unit, reply)
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        self._process()

    def _send(self, tid: int, unit: int, reply: Reply) -> None:
        pdu, outcome = reply
        self._server.on_outcome(outcome)
        if self._transport is not None:
            self._transport.write(_MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)


def _set_keepalive(sock: socket.socket, idle: int, interval: int, count: int) -> None:
    """Per-socket keepalive, so a vanished peer frees its slot in seconds, not the kernel's
    default two hours; the user timeout covers a peer that vanished with our answer unacked."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, (idle + interval * count) * 1000)
