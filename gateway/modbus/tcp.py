"""The Modbus TCP server: MBAP framing over asyncio, one request at a time per connection.

Reads are answered inside `data_received`, without a task switch, which keeps a round trip well
under a millisecond. A write waits for its command; the connection's later requests wait behind
it, so every connection sees its requests carried out in order. Every unit id is answered: the
TCP side is one device, not a gateway to others.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable

from gateway.access import AllowList, admit_connection
from gateway.modbus.pdu import PendingReply, Reply, RequestHandler
from gateway.modbus.pdu_codes import Outcome

log = logging.getLogger("gateway.modbus")

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MBAP_SIZE = _MBAP.size
MAX_PDU = 253
MAX_BUFFERED = 64 * 1024  # a client pipelining more than this while a write runs is paused


class TcpServer:
    """Listens on host:port; `start`, `stop`, and `port` (the bound port)."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: RequestHandler,
        on_outcome: Callable[[Outcome], None],
        *,
        max_connections: int,
    ) -> None:
        self._host = host
        self._port = port
        self.handler = handler
        self.on_outcome = on_outcome
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._refused_logged = False
        self.allow: AllowList | None = None  # client networks allowed to connect (None: any)

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

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

    def released(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        self._refused_logged = False  # a slot is free: the next refusal is news again

    def refuse(self, peer: object) -> None:
        # Logged once while the server is full: a client stuck in a reconnect loop must not
        # flood the log.
        if not self._refused_logged:
            log.warning(
                "Modbus TCP: connection from %s refused: %d connections open (max_connections)",
                peer,
                self.max_connections,
            )
            self._refused_logged = True


class _Connection(asyncio.Protocol):
    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False
        self._paused = False
        self._write_task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not admit_connection(self._server.allow, transport):
            return
        if len(self._server.connections) >= self._server.max_connections:
            self._server.refuse(transport.get_extra_info("peername"))
            transport.abort()
            return
        self._transport = transport
        self._server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A PLC that vanished without closing must not hold a connection slot forever.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server.released(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._process()
        elif len(self._buf) > MAX_BUFFERED and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def _process(self) -> None:
        buf = self._buf
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
            reply = self._server.handler.handle(pdu)
            if isinstance(reply, tuple):
                self._send(tid, unit, reply)
                continue
            self._busy = True
            # Kept referenced: the loop holds tasks only weakly.
            self._write_task = asyncio.ensure_future(self._finish(tid, unit, reply))
            return

    async def _finish(self, tid: int, unit: int, pending: PendingReply) -> None:
        try:
            reply = await pending
        finally:
            self._busy = False
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
