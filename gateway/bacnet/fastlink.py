"""The datagram-level shortcut: a plain ReadProperty or ReadPropertyMultiple answered straight
from the UDP socket.

fastread.py builds a read's reply from pre-encoded bytes, but each request still travelled
bacpypes3's whole stack: a task per datagram, the BVLL and NPDU decoders, the network and
application service access points, a server transaction object, and the same layers down for
the reply. That was about 0.2 ms of a 0.27 ms ReadProperty round trip (7x bacnet-stack's C
server). Here the link layer's datagram protocol recognises the common shape from the first
ten bytes and, when `FastReader` can answer, sends the Complex-ACK itself.

Taken, and only taken, when every one of these holds:

- it arrived on the unicast socket (not the one bound to the broadcast address, whose
  datagrams bacpypes3 marks as local broadcasts) and not from our own address or a loopback
  address on our own port (bacpypes3 loops replies to those back into itself);
- BVLC Original-Unicast-NPDU (0x81 0x0a) whose length field matches the datagram (never an
  Original-Broadcast-NPDU, nor a Forwarded-NPDU relayed by a BBMD to a foreign device);
- NPDU version 1, control 0x00 or 0x04: no network-layer message, no DNET, no SNET (routed
  requests go the slow way), normal priority;
- a confirmed request that is not segmented (0x00, or 0x02 with segmented-response-accepted),
  max-APDU code 0-5, service ReadProperty (12) or ReadPropertyMultiple (14);
- communication is enabled (DeviceCommunicationControl "disable" or "disable-initiation" go
  the slow way, where GatewayAccessPoint keeps the rules), fast reads are on, and no server
  transaction with the same invoke id is in progress (a retransmission belongs to it);
- `FastReader` answers, and the whole reply APDU fits both the requester's max-APDU (the
  request's, or a larger one it announced in an I-Am, as bacpypes3's transaction takes it,
  capped by a known max NPDU length) and ours; a request that would make that transaction
  update the requester's cached segmentation support goes the slow way too.

Everything else, and any case of doubt, goes up bacpypes3's stack exactly as before: it owns
every other datagram, segmentation and transactions; the reply bytes are the same (the tests
compare both paths datagram by datagram). Reads are open to every station (the write allow
list guards writes and device management only), and no metric counts served reads, so
neither is skipped here (`BacnetServer.socket_reads` counts the reads answered here).

Both link layers have the shortcut: the normal one and the foreign device's (foreign.py), whose
BMS, on another subnet, polls it directly. bacpypes3's foreign link passes an
Original-Unicast-NPDU up in every registration state (never registered, registered, lapsed,
refused), exactly as the normal link does, so the shortcut answers in every state too. What
depends on the registration, broadcasts and the Forwarded-NPDUs the BBMD relays (BVLC 0x04,
which the shortcut never takes), stays on bacpypes3's path, as do BVLC Results.

Measured with bench/bench_bacnet_floor.py on a shared 2-core machine (medians, raw client,
ratio to bacnet-stack's bacserv in the same run, interleaved): ReadProperty 0.265 ms (7.3x)
before, 0.046 ms (1.8x) with this; ReadPropertyMultiple of 50 present values 0.331 ms (5.4x)
before, 0.070 ms (1.8x). The server's own share of a ReadProperty is now mostly the kernel's
sendto and recvfrom and asyncio's loop; of an RPM-50, the values' encoders (fastread.py).
Two clients polling RPM-50 back to back used to push the HTTP ingest ack p99 to 30 ms (the
loop had no time left); with this, 12-14 ms at twice the poll rate, on a quiet machine.
As a foreign device (`--foreign`: registered with a second bacserv acting as BBMD), three runs
each: ReadProperty 5.2-11.9x bacserv before, 1.5-2.2x with this; ReadPropertyMultiple of 50
present values 4.1-7.0x before, 1.3-2.8x, as on the normal link in the same conditions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from bacpypes3.basetypes import Segmentation
from bacpypes3.comm import bind
from bacpypes3.ipv4 import IPv4DatagramProtocol, IPv4DatagramServer
from bacpypes3.ipv4.bvll import BVLLCodec
from bacpypes3.ipv4.link import ForeignLinkLayer, NormalLinkLayer
from bacpypes3.ipv4.service import BIPForeign, BIPNormal, UDPMultiplexer
from bacpypes3.pdu import IPv4Address, LocalBroadcast

from gateway.bacnet.fastread import READ_PROPERTY, READ_PROPERTY_MULTIPLE, FastReader

log = logging.getLogger("gateway.bacnet")

BIND_RETRY_S = 1.0  # as bacpypes3: at boot the interface may not be up yet
# Max-APDU codes (ASHRAE 135 clause 20.1.2.5); 6-15 are reserved.
MAX_APDU = (50, 128, 206, 480, 1024, 1476)
MAX_ADDRESSES = 1024  # remembered requester addresses (for the device information lookup)
_ASKS_FOR_SEGMENTS = (Segmentation.noSegmentation, Segmentation.segmentedTransmit)


class FastResponder:
    """The Complex-ACK datagram for a request the shortcut takes, else None.

    `asap` is the application's GatewayAccessPoint: its communication state, fast reader,
    server transactions and device information cache are read on every request, so switching
    fast reads off or disabling communication takes effect at once."""

    def __init__(self, asap: Any) -> None:
        self._asap = asap
        self._ours = int(asap.device_object.maxApduLengthAccepted)
        self._addresses: dict[tuple[str, int], Any] = {}
        self.served = 0  # requests answered here

    def __call__(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        if (
            len(data) < 11
            or data[0] != 0x81
            or data[1] != 0x0A
            or data[4] != 0x01
            or data[5] & 0xFB
            or data[6] & 0xFD
            or (data[2] << 8 | data[3]) != len(data)
        ):
            return None
        service = data[9]
        asap = self._asap
        fast: FastReader | None = asap.fast
        if fast is None or asap.communication != "enable":
            return None
        if service == READ_PROPERTY:
            body = fast.read_property(data[10:])
        elif service == READ_PROPERTY_MULTIPLE:
            body = fast.read_property_multiple(data[10:])
        else:
            return None
        if body is None:
            return None
        code = data[7] & 0x0F
        if code >= len(MAX_APDU):
            return None
        invoke = data[8]
        if asap.serverTransactions and any(tr.invokeID == invoke for tr in asap.serverTransactions):
            return None
        limit = MAX_APDU[code]
        if asap.device_info_cache.address_cache:
            known = self._known_limit(addr, limit, accepts_segments=bool(data[6] & 0x02))
            if known is None:
                return None
            limit = known
        size = 3 + len(body)
        if size > limit or size > self._ours:
            return None  # bacpypes3 segments or aborts
        self.served += 1
        return (
            b"\x81\x0a"
            + (size + 6).to_bytes(2, "big")
            + bytes((0x01, 0x00, 0x30, invoke, service))
            + body
        )

    def _known_limit(
        self, addr: tuple[str, int], limit: int, *, accepts_segments: bool
    ) -> int | None:
        """The requester's limit as bacpypes3's server transaction works it out when the
        requester is in the device information cache (it answered a Who-Is); None where the
        transaction would also update the cache, which only the slow path does."""
        address = self._addresses.get(addr)
        if address is None:
            if len(self._addresses) >= MAX_ADDRESSES:
                self._addresses.clear()
            address = self._addresses[addr] = IPv4Address(addr)
        info = self._asap.device_info_cache.address_cache.get(address)
        if info is None:
            return limit
        if accepts_segments and info.segmentation_supported in _ASKS_FOR_SEGMENTS:
            return None
        if info.max_apdu_length_accepted is not None and info.max_apdu_length_accepted >= limit:
            limit = int(info.max_apdu_length_accepted)
        if info.max_npdu_length is not None:
            limit = min(limit, int(info.max_npdu_length))
        return limit


class FastDatagramProtocol(IPv4DatagramProtocol):  # type: ignore[misc]  # bacpypes3 is untyped
    """bacpypes3's datagram protocol, answering what the server's responder answers."""

    server: FastDatagramServer
    _transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        responder = self.server.responder
        if (
            responder is not None
            and self._transport is not None
            and self.destination.__class__ is not LocalBroadcast
            and not self.server.is_own(addr)
        ):
            try:
                reply = responder(data, addr)
            except Exception:  # never lose a request to the shortcut: bacpypes3 answers it
                if not self.server.failed:  # once: a poll repeats many times a second
                    self.server.failed = True
                    log.exception("BACnet: fast reply to %s:%d failed; bacpypes3 answers", *addr)
                reply = None
            if reply is not None:
                self._transport.sendto(reply, addr)
                return
        super().datagram_received(data, addr)


class FastDatagramServer(IPv4DatagramServer):  # type: ignore[misc]  # bacpypes3 is untyped
    """bacpypes3's UDP endpoint with our protocol on its sockets; `responder` is set once the
    application exists (None: every datagram to bacpypes3)."""

    responder: FastResponder | None = None
    failed = False  # the responder raised (logged once)

    def is_own(self, addr: tuple[str, int]) -> bool:
        # bacpypes3 drops datagrams from its own address and loops replies to any 127.x.x.x
        # on its own port back into itself: both stay on its path.
        local = self.local_address
        return addr[1] == local[1] and (addr[0] == local[0] or addr[0].startswith("127."))

    async def retrying_create_datagram_endpoint(
        self,
        loop: asyncio.AbstractEventLoop,
        addrTuple: tuple[str, int],  # noqa: N803  (bacpypes3's keyword)
        bind_socket: socket.socket | None = None,
    ) -> Any:
        # The stock method builds a stock protocol; ours differs only in the protocol class.
        def protocol() -> FastDatagramProtocol:
            made = FastDatagramProtocol()
            made.server = self  # before the first datagram can arrive
            return made

        while True:
            try:
                if bind_socket is not None:
                    return await loop.create_datagram_endpoint(protocol, sock=bind_socket)
                return await loop.create_datagram_endpoint(
                    protocol,
                    local_addr=addrTuple,
                    allow_broadcast=True,
                    reuse_port=os.name != "nt",
                )
            except OSError:
                await asyncio.sleep(BIND_RETRY_S)


class SocketReads:
    """What a link layer over a `FastDatagramServer` offers: reads answered at the socket."""

    server: FastDatagramServer

    def _wire(self, local_address: IPv4Address) -> None:
        # bacpypes3's link constructors build (and bind) a stock server; ours wire the same
        # pieces around a `FastDatagramServer` instead.
        self.codec = BVLLCodec()
        self.multiplexer = UDPMultiplexer()
        self.server = FastDatagramServer(local_address)
        bind(self, self.codec, self.multiplexer.annexJ)
        bind(self.multiplexer, self.server)

    def answer_reads(self, asap: Any | None) -> None:
        """Serve plain reads from the socket through `asap` (None: never)."""
        self.server.responder = None if asap is None else FastResponder(asap)

    @property
    def reads_served(self) -> int:
        """Reads answered at the socket so far."""
        responder = self.server.responder
        return 0 if responder is None else responder.served


class FastNormalLinkLayer(SocketReads, NormalLinkLayer):  # type: ignore[misc]  # untyped base
    """bacpypes3's normal BACnet/IP link layer over a `FastDatagramServer`."""

    def __init__(self, local_address: IPv4Address) -> None:
        BIPNormal.__init__(self)
        self._wire(local_address)


class FastForeignLinkLayer(SocketReads, ForeignLinkLayer):  # type: ignore[misc]  # untyped base
    """bacpypes3's foreign-device link layer over a `FastDatagramServer`.

    BIPForeign passes every Original-Unicast-NPDU up whatever the registration state (only
    broadcasts and Forwarded-NPDUs depend on it), so the shortcut, which takes only those,
    answers in every state as bacpypes3 would."""

    def __init__(self, local_address: IPv4Address) -> None:
        BIPForeign.__init__(self)
        self._wire(local_address)
