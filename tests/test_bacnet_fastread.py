"""Fast reads and request dispatch.

The fast path must send byte for byte what bacpypes3's generic path sends: checked for every
served property of every object of the catalog in every state (in process, bacpypes3 encoding
the expected reply), and over the wire against the same server with the fast path switched off.
Dispatch: malformed requests get the Reject a BACnet device gives, confirmed requests sent to a
broadcast address are ignored, and device instance 4194303 stands for the local device.

Every test over the wire runs twice: on the normal link layer, and as a foreign device
registered with a BBMD (bacpypes3's, in another process), where a BMS on another subnet polls
the gateway directly with the same unicast requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bacnet_peer.harness import Peer, free_udp_port
from bacnet_peer.netns import Lab, NetnsUnavailableError
from bacnet_peer.rig import DEVICE_INSTANCE, Rig
from bacnet_peer.stack import run_client, tool
from bacpypes3.apdu import ReadPropertyACK, ReadPropertyMultipleACK
from bacpypes3.basetypes import (
    PropertyIdentifier,
    ReadAccessResult,
    ReadAccessResultElement,
    ReadAccessResultElementChoice,
)
from bacpypes3.constructeddata import Any as AnyValue

from gateway.bacnet.eventstate import EventRecord
from gateway.bacnet.fastread import FastReader, raw_identifier
from gateway.bacnet.objects import PointObject, build_objects
from gateway.settings import BbmdSection
from objects.catalog import Model
from objects.pointmap import SensorSpec, resolve

WILDCARD = 4194303
SENSORS = [
    SensorSpec(id="a", name="A", number=1, model=Model.VS121, region_count=16),
    SensorSpec(id="b", name="B", number=2, model=Model.VS121_P, region_count=16),
]


# -- in process: every property of every object, in every state ---------------------------------


def rp_body(objid: int, prop: int, index: int | None = None) -> bytes:
    body = b"\x0c" + struct.pack("!I", objid) + context(1, prop)
    return body if index is None else body + context(2, index)


def context(tag: int, value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return bytes([(tag << 4) | 0x08 | len(raw)]) + raw


def library_rp(obj: PointObject, attr: str) -> bytes:
    ack = ReadPropertyACK(
        objectIdentifier=obj.identifier,
        propertyIdentifier=attr,
        propertyValue=AnyValue(obj.read(attr)),
    )
    ack.apduInvokeID = 0
    return bytes(ack.encode().pduData)


# The states a BMS can see, in an order where each builds on the last.
STATES = ("never", "value", "zero", "stale", "fresh", "negative", "not-reported")


def set_state(obj: PointObject, label: str) -> None:
    if label == "never":
        obj.has_value, obj.link_down = False, False
    elif label == "value":
        obj.value, obj.has_value = 3.0, True
        obj.text = "31.7.0.75"  # text objects (device facts)
    elif label == "zero":
        obj.value = 0.0
    elif label == "stale":
        obj.value, obj.link_down = 1.0, True
    elif label == "fresh":
        obj.link_down = False
        if obj.priorities is not None:
            obj.priorities[7] = 1.0  # commanded at priority 8
    elif label == "negative":
        obj.value = -12.75
    elif label == "not-reported":
        obj.not_reported = True


def test_every_served_property_encodes_as_the_library_does() -> None:
    objects = build_objects(resolve(SENSORS))
    reader = FastReader(objects, DEVICE_INSTANCE, [o.identifier for o in objects])
    compared = 0
    for obj in objects:
        raw = raw_identifier(obj.identifier)
        for label in STATES:
            set_state(obj, label)
            for attr in obj.properties:
                prop = int(PropertyIdentifier(attr))
                fast = reader.read_property(rp_body(raw, prop))
                assert fast == library_rp(obj, attr), (obj.name, attr, label)
                compared += 1
    assert compared > 2000


def test_status_flags_show_an_event_in_alarm_as_the_library_does() -> None:
    objects = build_objects(resolve(SENSORS))
    reader = FastReader(objects, DEVICE_INSTANCE, [o.identifier for o in objects])
    flags = int(PropertyIdentifier("statusFlags"))
    for obj in objects:
        raw = raw_identifier(obj.identifier)
        for state, stale in (("normal", False), ("offnormal", False), ("offnormal", True)):
            obj.events = EventRecord(notification_class=1, state=state)
            set_state(obj, "stale" if stale else "fresh")
            fast = reader.read_property(rp_body(raw, flags))
            assert fast == library_rp(obj, "statusFlags"), (obj.name, state, stale)
        obj.events = None


def test_rpm_of_present_values_and_flags_encodes_as_the_library_does() -> None:
    objects = build_objects(resolve(SENSORS))
    reader = FastReader(objects, DEVICE_INSTANCE, [o.identifier for o in objects])
    for i, obj in enumerate(objects):
        set_state(obj, ["value", "stale", "never"][i % 3])
    body = b""
    results = []
    for obj in objects:
        body += b"\x0c" + struct.pack("!I", raw_identifier(obj.identifier)) + b"\x1e"
        body += context(0, 85) + context(0, 111) + b"\x1f"
        elements = [
            ReadAccessResultElement(
                propertyIdentifier=attr,
                readResult=ReadAccessResultElementChoice(propertyValue=AnyValue(obj.read(attr))),
            )
            for attr in ("presentValue", "statusFlags")
        ]
        results.append(ReadAccessResult(objectIdentifier=obj.identifier, listOfResults=elements))
    ack = ReadPropertyMultipleACK(listOfReadAccessResults=results)
    ack.apduInvokeID = 0
    assert reader.read_property_multiple(body) == bytes(ack.encode().pduData)


def test_what_the_fast_path_does_not_know_is_left_to_the_library() -> None:
    objects = build_objects(resolve(SENSORS))
    reader = FastReader(objects, DEVICE_INSTANCE, [o.identifier for o in objects])
    first = raw_identifier(objects[0].identifier)
    assert reader.read_property(rp_body(first, 8)) is None  # ALL
    assert reader.read_property(rp_body(first, 85, 1)) is None  # not an array
    assert reader.read_property(rp_body(first, 999)) is None  # not a property of it
    assert reader.read_property(rp_body((0 << 22) | 999_999, 85)) is None  # no such object
    assert reader.read_property(rp_body(first, 85) + b"\x39\x01") is None  # too many arguments
    device = (8 << 22) | DEVICE_INSTANCE
    assert reader.read_property(rp_body(device, 77)) is None  # the device's own properties
    assert reader.read_property(rp_body(device, 76, len(objects) + 1)) is None
    # Object_List by index, also through the wildcard instance: the local device answers.
    count = reader.read_property(rp_body((8 << 22) | WILDCARD, 76, 0))
    assert count == rp_body(device, 76, 0) + b"\x3e" + b"\x21" + bytes([len(objects)]) + b"\x3f"


# -- over the wire -------------------------------------------------------------------------------

TTL = 60  # seconds; longer than a test, so no renewal falls inside one


@pytest_asyncio.fixture(params=["normal", "foreign"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """The gateway on the normal link layer, or as a foreign device of a BBMD."""
    async with contextlib.AsyncExitStack() as stack:
        bacnet: dict[str, Any] = {}
        if request.param == "foreign":
            bbmd = await Peer.start("bbmd.py")
            stack.push_async_callback(bbmd.stop)
            bacnet["bbmd"] = BbmdSection(address="127.0.0.1", port=bbmd.port, ttl=TTL)
        r = Rig(tmp_path, **bacnet)
        await r.start()
        stack.push_async_callback(r.stop)
        if request.param == "foreign":
            assert await r.fd_change(within=10) is True
        yield r


def confirmed(service: int, body: bytes, invoke: int = 7, *, bvlc: int = 0x0A) -> str:
    """BVLC + NPDU (expecting a reply) + an unsegmented confirmed request, max APDU 1476."""
    npdu = b"\x01\x04" + bytes([0x00, 0x05, invoke, service]) + body
    return (bytes([0x81, bvlc]) + struct.pack("!H", 4 + len(npdu)) + npdu).hex()


def global_broadcast(service: int, body: bytes, invoke: int = 7) -> str:
    """Unicast BVLC carrying an NPDU addressed to every network (DNET 0xFFFF, hop count)."""
    npdu = b"\x01\x24\xff\xff\x00\xff" + bytes([0x00, 0x05, invoke, service]) + body
    return (b"\x81\x0a" + struct.pack("!H", 4 + len(npdu)) + npdu).hex()


def apdu(reply: str) -> bytes:
    data = bytes.fromhex(reply)
    assert data[:2] == b"\x81\x0a"
    assert data[4] == 0x01
    assert data[5] & 0x28 == 0, "no routing fields in a reply to a local request"
    return data[6:]


def objid(kind: int, instance: int) -> int:
    return (kind << 22) | instance


def rpm_body(objects: list[int], props: list[int]) -> bytes:
    body = b""
    for raw in objects:
        body += b"\x0c" + struct.pack("!I", raw) + b"\x1e"
        body += b"".join(context(0, p) for p in props) + b"\x1f"
    return body


def requests(rig: Rig) -> list[str]:
    ids = {}
    for sensor, key in (
        ("lobby", "people_count_all"),
        ("lobby", "region_1"),
        ("meeting", "people_total_in"),
        ("lobby", "last_report"),
    ):
        obj = rig.server.object_for(sensor, key)
        assert obj is not None, key
        ids[key] = raw_identifier(obj.identifier)
    every = [raw_identifier(o) for o in rig_objects(rig)]
    out: list[str] = []
    for raw in ids.values():
        for prop in (85, 111, 103, 77, 79, 117, 28, 81, 36, 371):
            out.append(confirmed(12, rp_body(raw, prop), invoke=len(out) + 1))
    out.append(confirmed(14, rpm_body(every[:60], [85, 111]), invoke=200))
    out.append(confirmed(14, rpm_body(every[5:9], [85, 111, 103, 77, 79, 28]), invoke=201))
    device = objid(8, DEVICE_INSTANCE)
    for index in (0, 1, 2, 3, len(every) + 2):
        out.append(confirmed(12, rp_body(device, 76, index), invoke=210 + index % 40))
    out.append(confirmed(12, rp_body(objid(8, WILDCARD), 76, 4), invoke=250))
    return out


def rig_objects(rig: Rig) -> list[Any]:
    found = []
    for p in rig.points:
        obj = rig.server.object_for(p.sensor_id, p.key)
        if obj is not None:
            found.append(obj.identifier)
    return found


@pytest.mark.asyncio
async def test_fast_and_generic_paths_send_the_same_bytes(rig: Rig, client: Peer) -> None:
    rig.report("lobby", {"people_count_all": 7, "region_1": 1})
    rig.report("meeting", {"people_total_in": 123456})
    packets = requests(rig)
    assert rig.server.fast_reads
    fast = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=packets)
    rig.server.set_fast_reads(False)
    before = rig.server.socket_reads
    slow = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=packets)
    assert rig.server.socket_reads == before
    rig.server.set_fast_reads(True)
    assert None not in fast
    # The common shapes were answered at the socket, and none with fast reads off.
    assert rig.server.socket_reads >= len(packets) - 8
    kinds = [apdu(r)[0] for r in fast]
    assert kinds.count(0x30) >= len(kinds) - 8  # Complex-ACKs; errors for absent properties
    assert kinds[40:42] == [0x30, 0x30]  # both RPMs
    assert fast == slow
    rig.advance(60)  # stale: flags and reliability change
    again = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=packets)
    assert again != fast
    rig.server.set_fast_reads(False)
    assert again == await client.call("exchange", host="127.0.0.1", port=rig.port, packets=packets)


@pytest.mark.asyncio
async def test_wildcard_device_instance_is_the_local_device(rig: Rig, client: Peer) -> None:
    answer = await client.call(
        "read", address=rig.address, object=f"device,{WILDCARD}", property="objectName"
    )
    assert answer["value"] == "VS121 Gateway"
    reply = await client.call(
        "exchange",
        host="127.0.0.1",
        port=rig.port,
        packets=[confirmed(12, rp_body(objid(8, WILDCARD), 75))],
    )
    ack = apdu(reply[0])
    assert ack[:4] == b"\x30\x07\x0c\x0c"  # Complex-ACK, invoke id, ReadProperty, [0]
    assert struct.unpack("!I", ack[4:8])[0] == objid(8, DEVICE_INSTANCE)


# -- what the socket shortcut leaves to bacpypes3 -----------------------------------------------


def request(
    service: int,
    body: bytes,
    invoke: int = 7,
    *,
    control: int = 0x04,
    route: bytes = b"",
    pdu: int = 0x00,
    max_apdu: int = 0x05,
) -> str:
    """A confirmed request with every header field of the shortcut's test settable."""
    npdu = bytes([0x01, control]) + route + bytes([pdu, max_apdu, invoke, service]) + body
    return (b"\x81\x0a" + struct.pack("!H", 4 + len(npdu)) + npdu).hex()


async def both_paths(rig: Rig, client: Peer, packets: list[str], wait: float = 2.0) -> list[Any]:
    """The replies with fast reads on and off; asserts the shortcut answered none of them."""
    before = rig.server.socket_reads
    fast = await client.call(
        "exchange", host="127.0.0.1", port=rig.port, packets=packets, wait=wait
    )
    assert rig.server.socket_reads == before, "taken at the socket"
    rig.server.set_fast_reads(False)
    try:
        slow = await client.call(
            "exchange", host="127.0.0.1", port=rig.port, packets=packets, wait=wait
        )
    finally:
        rig.server.set_fast_reads(True)
    assert fast == slow
    return list(fast)


SEGMENT = 0x3C  # the first segment of a reply (Complex-ACK, segmented, more follow)


def abort(invoke: int) -> str:
    """The client's Abort of a transaction (reason other)."""
    return (b"\x81\x0a\x00\x09\x01\x00\x70" + bytes([invoke, 0])).hex()


def fallbacks(rig: Rig) -> dict[str, tuple[str, int | None]]:
    """Requests the shortcut must leave to bacpypes3: name -> (datagram, first APDU byte)."""
    every = [raw_identifier(o) for o in rig_objects(rig)]
    people = every[0]
    pv = rp_body(people, 85)
    big = rpm_body(every, [85, 111, 77])  # well over 1476 bytes of reply
    few = rpm_body(every[:4], [85, 111])  # over 50 bytes of reply
    assert len(every) > 60
    return {
        "a reply longer than the requester's 1476, segments accepted": (
            request(14, big, 1, pdu=0x02, max_apdu=0x75),
            SEGMENT,
        ),
        "a reply longer than the requester's 1476, no segments": (
            request(14, big, 2),
            0x71,  # Abort, from the server
        ),
        "a reply longer than the requester's max APDU of 50, segments accepted": (
            request(14, few, 3, pdu=0x02, max_apdu=0x70),
            SEGMENT,
        ),
        "a reply longer than the requester's max APDU of 50, no segments": (
            request(14, few, 4, max_apdu=0x00),
            0x71,
        ),
        "from network 5 through a router (SNET)": (
            request(12, pv, 5, control=0x0C, route=b"\x00\x05\x01\x2a"),
            0x30,
        ),
        "to network 5 (DNET)": (
            request(12, pv, 6, control=0x24, route=b"\x00\x05\x01\x2a\xff"),
            None,  # not for us: routed away or dropped, as bacpypes3 does
        ),
        "urgent priority": (request(12, pv, 8, control=0x07), 0x30),
        "a segmented request": (request(12, pv, 9, pdu=0x08 | 0x04 | 0x02), 0x41),
        "an unknown object": (request(12, rp_body(objid(0, 999_999), 85), 10), 0x50),
        "a property the object lacks": (request(12, rp_body(people, 1), 11), 0x50),
        "an RPM naming an unknown object too": (
            request(14, rpm_body([people, objid(0, 999_999)], [85]), 12),
            0x30,
        ),
        "ALL properties": (request(14, rpm_body([people], [8]), 13), 0x30),
        "a BVLC length that does not match": (
            bytes.fromhex(request(12, pv, 14))[:3].hex() + "ff" + request(12, pv, 14)[8:],
            None,
        ),
        "an Original-Broadcast-NPDU sent to the device": (
            "810b" + request(12, pv, 15)[4:],
            None,  # a confirmed request as a broadcast: ignored (a foreign device drops it)
        ),
    }


@pytest.mark.asyncio
async def test_requests_the_shortcut_leaves_to_bacpypes3_get_the_same_replies(
    rig: Rig, client: Peer
) -> None:
    rig.report("lobby", {"people_count_all": 7, "region_1": 1})
    for name, (packet, kind) in fallbacks(rig).items():
        packets = [packet]
        if kind == SEGMENT:  # the transaction waits for a segment ack: end it
            packets.append(abort(bytes.fromhex(packet)[8]))
        replies = await both_paths(rig, client, packets, wait=1.0 if kind is None else 2.0)
        got = None if replies[0] is None else bytes.fromhex(replies[0])
        if kind is None:
            assert got is None, name
            continue
        assert got is not None, name
        at = 6 if got[5] & 0x20 == 0 else 6 + 3 + got[8] + 1  # past DNET, DLEN, DADR, hops
        assert got[at] == kind, (name, got.hex())


@pytest.mark.asyncio
async def test_a_request_for_a_transaction_in_progress_is_the_transactions(
    rig: Rig, client: Peer
) -> None:
    """A segmented reply keeps its transaction open until the segments are acknowledged; a read
    from the same requester with the same invoke id belongs to it, not to the shortcut."""
    every = [raw_identifier(o) for o in rig_objects(rig)]
    segmented = request(14, rpm_body(every, [85, 111, 77]), 33, pdu=0x02, max_apdu=0x75)
    duplicate = request(12, rp_body(every[0], 85), 33)
    other = request(12, rp_body(every[0], 85), 34)
    replies = await both_paths(rig, client, [segmented, duplicate, abort(33)], wait=0.5)
    assert bytes.fromhex(replies[0])[6] == SEGMENT
    # Another invoke id from the same requester is the shortcut's again.
    before = rig.server.socket_reads
    answer = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=[other])
    assert apdu(answer[0])[:2] == b"\x30\x22"
    assert rig.server.socket_reads == before + 1


@pytest.mark.asyncio
async def test_communication_control_applies_to_the_shortcut(rig: Rig, client: Peer) -> None:
    read = request(12, rp_body(raw_identifier(rig_objects(rig)[0]), 85))
    await client.call("dcc", address=rig.address, state="disable")
    assert await both_paths(rig, client, [read], wait=0.5) == [None]
    await client.call("dcc", address=rig.address, state="disableInitiation")
    answered = await both_paths(rig, client, [read])
    assert apdu(answered[0])[0] == 0x30  # still answers requests
    await client.call("dcc", address=rig.address, state="enable")
    before = rig.server.socket_reads
    again = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=[read])
    assert again == answered
    assert rig.server.socket_reads == before + 1


@pytest.mark.asyncio
async def test_a_unicast_frame_sent_to_the_broadcast_address_is_ignored(
    rig: Rig, client: Peer
) -> None:
    read = request(12, rp_body(raw_identifier(rig_objects(rig)[0]), 85))
    before = rig.server.socket_reads
    for fast in (True, False):
        rig.server.set_fast_reads(fast)
        got = await client.call("raw", host="127.255.255.255", port=rig.port, hex=read, wait=0.5)
        assert got == []
    rig.server.set_fast_reads(True)
    assert rig.server.socket_reads == before


# -- as a foreign device: every registration state, and what the BBMD forwards -----------------

SHORT_TTL = 2  # seconds; the configuration allows 30 at least, tests bypass that for speed


async def served_both_ways(rig: Rig, client: Peer, packets: list[str]) -> list[str]:
    """The replies with fast reads on (all answered at the socket) and off (none), compared."""
    before = rig.server.socket_reads
    fast = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=packets)
    assert rig.server.socket_reads == before + len(packets), "not answered at the socket"
    rig.server.set_fast_reads(False)
    try:
        slow = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=packets)
    finally:
        rig.server.set_fast_reads(True)
    assert rig.server.socket_reads == before + len(packets)
    assert None not in fast
    assert fast == slow
    return list(fast)


@pytest.mark.asyncio
async def test_a_foreign_device_answers_direct_reads_at_the_socket_in_every_registration_state(
    tmp_path: Path, client: Peer
) -> None:
    """bacpypes3's foreign link passes an Original-Unicast-NPDU up whatever the registration
    state (bacpypes3/ipv4/service.py, BIPForeign.confirmation), so a BMS polling directly is
    answered before the first registration, while registered and after it lapsed: the shortcut
    answers in all three, with the same bytes."""
    bbmd_port = free_udp_port()
    rig = Rig(
        tmp_path,
        bbmd=BbmdSection.model_construct(address="127.0.0.1", port=bbmd_port, ttl=SHORT_TTL),
    )
    bbmd: Peer | None = None
    try:
        await rig.start()
        rig.report("lobby", {"people_count_all": 7, "region_1": 1})
        every = [raw_identifier(o) for o in rig_objects(rig)]
        packets = [
            request(12, rp_body(every[0], 85), 1),
            request(14, rpm_body(every[:50], [85]), 2),
        ]
        assert rig.server.fd_registered is False  # nobody at the BBMD's address yet
        never = await served_both_ways(rig, client, packets)

        bbmd = await Peer.start("bbmd.py", bbmd_port)
        assert await rig.fd_change(within=15) is True
        assert await served_both_ways(rig, client, packets) == never

        await bbmd.stop()
        bbmd = None
        assert await rig.fd_change(within=SHORT_TTL + 10) is False
        assert await served_both_ways(rig, client, packets) == never
    finally:
        await rig.stop()
        if bbmd is not None:
            await bbmd.stop()


# BVLL functions (Annex J.2).
REGISTER_FOREIGN_DEVICE = 0x05
DISTRIBUTE_BROADCAST_TO_NETWORK = 0x09


def bvll(function: int, payload: bytes) -> bytes:
    return struct.pack("!BBH", 0x81, function, 4 + len(payload)) + payload


async def receive(sock: socket.socket, sender: str, within: float) -> list[bytes]:
    """Every datagram `sock` receives from `sender` (host:port) within `within` seconds."""
    loop = asyncio.get_running_loop()
    got = []
    deadline = loop.time() + within
    while (left := deadline - loop.time()) > 0:
        try:
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), left)
        except TimeoutError:
            break
        if f"{addr[0]}:{addr[1]}" == sender:  # the BBMD's own device answers too
            got.append(data)
    return got


@pytest.mark.asyncio
async def test_reads_the_bbmd_forwards_go_through_bacpypes3(tmp_path: Path) -> None:
    """A read broadcast through the BBMD reaches the gateway as a Forwarded-NPDU: bacpypes3
    treats it as a broadcast and a confirmed request sent as a broadcast gets no answer. The
    shortcut must not answer it either; a Who-Is sent the same way shows the path is live."""
    async with contextlib.AsyncExitStack() as stack:
        bbmd = await Peer.start("bbmd.py")
        stack.push_async_callback(bbmd.stop)
        rig = Rig(tmp_path, bbmd=BbmdSection(address="127.0.0.1", port=bbmd.port, ttl=TTL))
        stack.push_async_callback(rig.stop)
        await rig.start()
        assert await rig.fd_change(within=10) is True
        rig.report("lobby", {"people_count_all": 7})
        # A bare foreign device of the same BBMD (hand-encoded BVLL on its own socket).
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        target = ("127.0.0.1", bbmd.port)
        sock.sendto(bvll(REGISTER_FOREIGN_DEVICE, struct.pack("!H", TTL)), target)
        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 64), 5) == (
            b"\x81\x00\x00\x06\x00\x00"  # Result: registered
        )
        people = raw_identifier(rig_objects(rig)[0])
        npdu = bytes.fromhex(request(12, rp_body(people, 85), 5))[4:]
        for fast in (True, False):
            rig.server.set_fast_reads(fast)
            before = rig.server.socket_reads
            sock.sendto(bvll(DISTRIBUTE_BROADCAST_TO_NETWORK, npdu), target)
            assert await receive(sock, rig.address, 1.0) == [], fast
            assert rig.server.socket_reads == before
        rig.server.set_fast_reads(True)
        who_is = bytes([0x01, 0x00, 0x10, 0x08])
        sock.sendto(bvll(DISTRIBUTE_BROADCAST_TO_NETWORK, who_is), target)
        i_am = [d for d in await receive(sock, rig.address, 2.0) if d[6:9] == b"\x10\x00\xc4"]
        assert len(i_am) == 1
        assert struct.unpack("!I", i_am[0][9:13])[0] == objid(8, DEVICE_INSTANCE)


# -- rejects ------------------------------------------------------------------------------------

MISSING_REQUIRED_PARAMETER = 5
TOO_MANY_ARGUMENTS = 7
UNRECOGNIZED_SERVICE = 9


def malformed() -> dict[str, tuple[str, int]]:
    pv = rp_body(objid(0, 1001), 85)
    return {
        "empty ReadProperty": (confirmed(12, b""), MISSING_REQUIRED_PARAMETER),
        "ReadProperty without its property": (
            confirmed(12, pv[:5]),
            MISSING_REQUIRED_PARAMETER,
        ),
        "ReadProperty with one argument too many": (
            confirmed(12, pv + b"\x29\x01\x39\x01"),
            TOO_MANY_ARGUMENTS,
        ),
        "ReadPropertyMultiple with a trailing tag": (
            confirmed(14, rpm_body([objid(0, 1001)], [85]) + b"\x21\x05"),
            TOO_MANY_ARGUMENTS,
        ),
        "empty WriteProperty": (confirmed(15, b""), MISSING_REQUIRED_PARAMETER),
        "unknown service 60": (confirmed(60, pv), UNRECOGNIZED_SERVICE),
        "service 33 (not executed here)": (confirmed(33, pv), UNRECOGNIZED_SERVICE),
    }


def reject_reason(reply: str | None) -> int | None:
    if reply is None:
        return None
    data = apdu(reply)
    assert data[0] == 0x60, f"not a Reject: {data.hex()}"
    assert data[1] == 7, "the request's invoke id"
    return data[2]


@pytest.mark.asyncio
async def test_malformed_requests_are_rejected_with_the_reason(rig: Rig, client: Peer) -> None:
    cases = malformed()
    replies = await client.call(
        "exchange",
        host="127.0.0.1",
        port=rig.port,
        packets=[packet for packet, _ in cases.values()],
    )
    got = {name: reject_reason(r) for name, r in zip(cases, replies, strict=True)}
    assert got == {name: reason for name, (_, reason) in cases.items()}
    # And the server goes on answering.
    ok = await client.call(
        "exchange",
        host="127.0.0.1",
        port=rig.port,
        packets=[confirmed(12, rp_body(objid(8, DEVICE_INSTANCE), 77))],
    )
    assert apdu(ok[0])[0] == 0x30


@pytest.mark.asyncio
async def test_confirmed_requests_sent_as_broadcasts_are_ignored(rig: Rig, client: Peer) -> None:
    read = rp_body(objid(8, DEVICE_INSTANCE), 77)
    local = await client.call(
        "raw", host="127.255.255.255", port=rig.port, hex=confirmed(12, read, bvlc=0x0B), wait=0.5
    )
    assert local == []
    everywhere = await client.call(
        "exchange",
        host="127.0.0.1",
        port=rig.port,
        packets=[global_broadcast(12, read), confirmed(12, read)],
        wait=0.5,
    )
    assert everywhere[0] is None
    assert everywhere[1] is not None  # the same request sent to the device is answered
    assert apdu(everywhere[1])[0] == 0x30


# -- bacnet-stack ---------------------------------------------------------------------------------


def needs(*names: str) -> None:
    for name in names:
        if tool(name) is None:
            pytest.skip(f"bacnet-stack's {name} is not built here (set BACNET_STACK_BIN)")


@pytest.mark.asyncio
async def test_bacnet_stack_reads_through_the_fast_path(rig: Rig) -> None:
    needs("bacrp", "bacrpm")
    rig.report("lobby", {"people_count_all": 9})
    people = rig.server.object_for("lobby", "people_count_all")
    assert people is not None
    instance = str(people.point.instance)
    mac = ("--mac", rig.address, "--dnet", "0")
    value = await run_client(
        "bacrp",
        free_udp_port(),
        *mac,
        str(DEVICE_INSTANCE),
        "analog-input",
        instance,
        "present-value",
    )
    assert float(value) == 9.0
    name = await run_client(
        "bacrp", free_udp_port(), *mac, str(WILDCARD), "device", str(WILDCARD), "object-name"
    )
    assert name.strip() == '"VS121 Gateway"'
    listed = await run_client(
        "bacrpm",
        free_udp_port(),
        *mac,
        str(DEVICE_INSTANCE),
        "analog-input",
        instance,
        "present-value,status-flags,object-name",
        "device",
        str(WILDCARD),
        "object-list[1]",
    )
    assert "present-value: 9.000000" in listed
    assert "status-flags: {false,false,false,false}" in listed
    assert f"(device, {DEVICE_INSTANCE})" in listed


@pytest.mark.asyncio
async def test_rejects_match_bacnet_stacks_server() -> None:
    """bacserv (bacnet-stack's reference server) gives the same reasons for the same bytes. It
    broadcasts an I-Am at start, so it runs in a namespace of its own holding only loopback."""
    needs("bacserv")
    bacserv = tool("bacserv")
    assert bacserv is not None
    lab = Lab()
    try:
        ns = lab.namespace("floor")
    except NetnsUnavailableError as exc:
        pytest.skip(f"no network namespace for bacserv: {exc}")
    port = free_udp_port()
    server = await asyncio.create_subprocess_exec(
        *ns.wrap,
        "env",
        "BACNET_IFACE=lo",
        f"BACNET_IP_PORT={port}",
        str(bacserv),
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    peer = await Peer.start("client.py", wrap=ns.wrap)
    try:
        hello = confirmed(12, rp_body(objid(8, port), 77))
        for _ in range(50):  # until bacserv has bound its socket
            first = await peer.call(
                "exchange", host="127.0.0.1", port=port, packets=[hello], wait=0.2
            )
            if first[0] is not None:
                break
        cases = {k: v for k, v in malformed().items() if k in SAME_AS_BACSERV}
        replies = await peer.call(
            "exchange",
            host="127.0.0.1",
            port=port,
            packets=[packet for packet, _ in cases.values()],
        )
        got = {name: reject_reason(r) for name, r in zip(cases, replies, strict=True)}
        assert got == {name: reason for name, (_, reason) in cases.items()}
    finally:
        await peer.stop()
        server.terminate()
        await server.wait()
        lab.delete()


# Where the standard leaves room (trailing bytes after a complete RPM, a cut-short request),
# bacserv's choice and ours differ; these are the cases both answer alike.
SAME_AS_BACSERV = (
    "empty ReadProperty",
    "ReadProperty with one argument too many",
    "unknown service 60",
    "empty WriteProperty",
)
