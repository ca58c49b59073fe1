"""A Who-Is that a BBMD distributes reaches the gateway (one of its foreign devices), and the
gateway's I-Am reaches the device that asked; with the BBMD stopped the same Who-Is gets none.

The asker never addresses the gateway, so the Who-Is can only arrive through the BBMD. Two ways
a BMS meets this:
- the asker is itself a foreign device of the BBMD and sends Distribute-Broadcast-To-Network
  (on loopback; the asker is a bare UDP socket speaking hand-encoded BVLL, independent of
  bacpypes3 on that side);
- the asker sits on the BBMD's own subnet and broadcasts there, and the BBMD hands the broadcast
  to its foreign devices as Forwarded-NPDU. Loopback has no such subnet that two stacks could
  share (bacpypes3 treats every 127.x address on its own port as itself), so this one builds
  network namespaces: the BMS subnet 10.200.0.0/24 with the BBMD and the asker, and the gateway
  on 10.201.0.0/24 behind the BBMD's namespace acting as router.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import pytest_asyncio
from bacnet_peer.harness import Peer, free_udp_port
from bacnet_peer.netns import Lab, Namespace, NetnsUnavailableError
from bacnet_peer.rig import DEVICE_INSTANCE, Rig

from gateway.settings import BbmdSection

pytestmark = pytest.mark.asyncio

TTL = 60  # seconds; longer than the test, so no renewal falls inside it
ANSWER_WITHIN_S = 5.0
SILENCE_S = 2.0  # how long "no answer" is watched for

# BVLL functions (Annex J.2).
RESULT = 0x00
FORWARDED_NPDU = 0x04
REGISTER_FOREIGN_DEVICE = 0x05
DISTRIBUTE_BROADCAST_TO_NETWORK = 0x09
ORIGINAL_UNICAST_NPDU = 0x0A
ORIGINAL_BROADCAST_NPDU = 0x0B

# NPDU version 1, no routing information, no reply expected; then the APDU: unconfirmed request,
# service Who-Is, no range (as a BMS discovering every device sends it).
WHO_IS = bytes([0x01, 0x00, 0x10, 0x08])


def bvll(function: int, payload: bytes = b"") -> bytes:
    return struct.pack("!BBH", 0x81, function, 4 + len(payload)) + payload


@dataclass(frozen=True)
class Frame:
    """One BVLL message the asker received."""

    function: int
    sender: str  # UDP source, host:port
    origin: str  # the BACnet source: a Forwarded-NPDU's originating address, else the sender
    body: bytes  # what follows the BVLL header (and a Forwarded-NPDU's originating address)


def parse(data: bytes, addr: tuple[str, int]) -> Frame:
    sender = f"{addr[0]}:{addr[1]}"
    if len(data) < 4 or data[0] != 0x81 or struct.unpack("!H", data[2:4])[0] != len(data):
        return Frame(-1, sender, sender, data)  # not BVLL: kept, so that it shows in failures
    if data[1] == FORWARDED_NPDU and len(data) >= 10:
        host = ".".join(str(b) for b in data[4:8])
        (port,) = struct.unpack("!H", data[8:10])
        return Frame(data[1], sender, f"{host}:{port}", data[10:])
    return Frame(data[1], sender, sender, data[4:])


def i_am_instance(frame: Frame) -> int | None:
    """The device instance of an I-Am carried by `frame`; None for anything else."""
    if frame.function not in (ORIGINAL_UNICAST_NPDU, FORWARDED_NPDU, ORIGINAL_BROADCAST_NPDU):
        return None
    npdu = frame.body
    if len(npdu) < 2 or npdu[0] != 0x01 or npdu[1] & 0x80:  # not version 1, or a network message
        return None
    control, at = npdu[1], 2
    if control & 0x20:  # destination network, length, address
        at += 3 + npdu[at + 2]
    if control & 0x08:  # source network, length, address
        at += 3 + npdu[at + 2]
    if control & 0x20:  # hop count
        at += 1
    apdu = npdu[at:]
    # Unconfirmed request, service I-Am, then the application-tagged object identifier.
    if len(apdu) < 7 or apdu[:3] != b"\x10\x00\xc4":
        return None
    (objid,) = struct.unpack("!I", apdu[3:7])
    if objid >> 22 != 8:  # object type device
        return None
    return int(objid & 0x3FFFFF)


class Asker(asyncio.DatagramProtocol):
    """A bare BACnet/IP node: sends BVLL messages, keeps everything it receives."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.frames: list[Frame] = []
        self._arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The loop's datagram transports do not derive from asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.frames.append(parse(data, addr))
        self._arrived.set()

    def send(self, message: bytes, to: str) -> None:
        assert self.transport is not None
        host, port = to.rsplit(":", 1)
        self.transport.sendto(message, (host, int(port)))

    async def expect(self, wanted: Callable[[Frame], bool], within: float) -> Frame:
        """The oldest received frame that is `wanted` (taken out), waiting up to `within` s."""
        async with asyncio.timeout(within):
            while True:
                for i, frame in enumerate(self.frames):
                    if wanted(frame):
                        return self.frames.pop(i)
                self._arrived.clear()
                await self._arrived.wait()


@pytest_asyncio.fixture
async def asker() -> AsyncIterator[Asker]:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Asker, local_addr=("127.0.0.1", 0))
    yield protocol
    assert protocol.transport is not None
    protocol.transport.close()


def unicast_i_am_from(address: str) -> Callable[[Frame], bool]:
    """An I-Am of the gateway's device sent straight from `address` to the asker."""

    def wanted(frame: Frame) -> bool:
        return (
            frame.function == ORIGINAL_UNICAST_NPDU
            and frame.sender == address
            and i_am_instance(frame) == DEVICE_INSTANCE
        )

    return wanted


def any_i_am(frame: Frame) -> bool:
    return i_am_instance(frame) is not None


async def test_who_is_distributed_by_the_bbmd_from_a_foreign_device_reaches_the_gateway(
    tmp_path: Path, asker: Asker
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        bbmd = await Peer.start("bbmd.py")
        stack.push_async_callback(bbmd.stop)
        # The asker joins the BBMD as a foreign device, before the gateway does.
        asker.send(bvll(REGISTER_FOREIGN_DEVICE, struct.pack("!H", TTL)), bbmd.address)
        result = await asker.expect(
            lambda f: f.function == RESULT and f.sender == bbmd.address, within=ANSWER_WITHIN_S
        )
        assert result.body == b"\x00\x00", "registration refused"

        rig = Rig(tmp_path, bbmd=BbmdSection(address="127.0.0.1", port=bbmd.port, ttl=TTL))
        stack.push_async_callback(rig.stop)
        await rig.start()
        assert await rig.fd_change(within=10) is True

        # On registering, the gateway announced itself; the BBMD passed that on to the asker.
        announced = await asker.expect(
            lambda f: f.function == FORWARDED_NPDU and i_am_instance(f) == DEVICE_INSTANCE,
            within=ANSWER_WITHIN_S,
        )
        assert (announced.sender, announced.origin) == (bbmd.address, rig.address)

        # A Who-Is for every device, given only to the BBMD. The gateway hears it as a
        # Forwarded-NPDU and answers the originating address carried in it: the asker.
        asker.send(bvll(DISTRIBUTE_BROADCAST_TO_NETWORK, WHO_IS), bbmd.address)
        try:
            await asker.expect(unicast_i_am_from(rig.address), within=ANSWER_WITHIN_S)
        except TimeoutError:
            pytest.fail(f"no I-Am from the gateway {rig.address}; received {asker.frames}")

        # Without the BBMD the same Who-Is reaches nobody, so nobody answers.
        await bbmd.stop()
        asker.frames.clear()
        asker.send(bvll(DISTRIBUTE_BROADCAST_TO_NETWORK, WHO_IS), bbmd.address)
        with pytest.raises(TimeoutError):
            await asker.expect(any_i_am, within=SILENCE_S)

        # The gateway is still there and the asker can hear it: asked directly, it answers.
        asker.send(bvll(ORIGINAL_UNICAST_NPDU, WHO_IS), rig.address)
        await asker.expect(unicast_i_am_from(rig.address), within=ANSWER_WITHIN_S)


# -- a local broadcast on the BBMD's own subnet (network namespaces) ------------------------------

BMS_NET = "10.200.0.0/24"
BBMD_IP = "10.200.0.1"  # the BBMD, on the BMS subnet; its namespace also routes
BMS_IP = "10.200.0.2"  # the asker: a BMS workstation on the same subnet
REMOTE_NET = "10.201.0.0/24"
ROUTER_REMOTE_IP = "10.201.0.1"  # the BBMD namespace's leg on the remote subnet
GATEWAY_IP = "10.201.0.2"  # the gateway, a foreign device on the remote subnet


@dataclass(frozen=True)
class Site:
    bbmd: Namespace
    bms: Namespace
    gateway: Namespace


@pytest.fixture
def site() -> Iterator[Site]:
    lab = Lab()
    try:
        bbmd = lab.namespace("bbmd")
        bms = lab.namespace("bms")
        gateway = lab.namespace("gw")
        lab.wire("lan0", bbmd, f"{BBMD_IP}/24", bms, f"{BMS_IP}/24")
        lab.wire("wan0", bbmd, f"{ROUTER_REMOTE_IP}/24", gateway, f"{GATEWAY_IP}/24")
        lab.forward(bbmd)
        lab.route(bms, REMOTE_NET, BBMD_IP)
        lab.route(gateway, BMS_NET, ROUTER_REMOTE_IP)
    except NetnsUnavailableError as exc:
        errors = lab.delete()
        pytest.skip(f"needs network namespaces (ip netns, as root): {exc} {errors or ''}".strip())
    try:
        yield Site(bbmd, bms, gateway)
    finally:
        errors = lab.delete()
        assert not errors, f"namespaces left behind: {errors}"


async def test_who_is_broadcast_on_the_bbmd_subnet_is_forwarded_to_the_gateway(
    tmp_path: Path, site: Site
) -> None:
    # A BACnet/IP network is a subnet plus a UDP port: the BBMD and the BMS share one port (in
    # different namespaces, so they are different sockets); the gateway has its own.
    lan_port = free_udp_port()
    gateway_port = free_udp_port()
    while gateway_port == lan_port:
        gateway_port = free_udp_port()
    async with contextlib.AsyncExitStack() as stack:
        bbmd = await Peer.start(
            "bbmd.py", lan_port, "--address", f"{BBMD_IP}/24", wrap=site.bbmd.wrap, host=BBMD_IP
        )
        stack.push_async_callback(bbmd.stop)
        gateway = await Peer.start(
            "gateway_node.py",
            gateway_port,
            "--address",
            f"{GATEWAY_IP}/24",
            "--broadcast",
            "10.201.0.255",
            "--instance",
            str(DEVICE_INSTANCE),
            "--bbmd",
            bbmd.address,
            "--ttl",
            str(TTL),
            "--state-dir",
            str(tmp_path),
            wrap=site.gateway.wrap,
            host=GATEWAY_IP,
        )
        stack.push_async_callback(gateway.stop)
        bms = await Peer.start(
            "client.py", lan_port, "--address", f"{BMS_IP}/24", wrap=site.bms.wrap, host=BMS_IP
        )
        stack.push_async_callback(bms.stop)

        registration = await gateway.next_event(lambda e: e.get("event") == "fd", within=15)
        assert registration["registered"] is True
        # The registration crossed the router: the BBMD lists the gateway's remote address.
        fdt = await bms.call("rfdt", address=bbmd.address)
        assert [e["address"] for e in fdt] == [gateway.address]

        # The BMS broadcasts on its own subnet (10.200.0.255), which the gateway is not on.
        only_gateway = {"low": DEVICE_INSTANCE, "high": DEVICE_INSTANCE}
        found = await bms.call("whois", **only_gateway, seconds=ANSWER_WITHIN_S)
        assert found == [{"device": DEVICE_INSTANCE, "source": gateway.address}]

        await bbmd.stop()
        silent = await bms.call("whois", **only_gateway, seconds=SILENCE_S)
        assert silent == []

        # The gateway is still there and routable: asked directly, it answers.
        direct = await bms.call("whois", address=gateway.address, seconds=ANSWER_WITHIN_S)
        assert direct == [{"device": DEVICE_INSTANCE, "source": gateway.address}]
