"""A segmented reply whose first segment is not acknowledged is sent again.

bacpypes3 0.0.110 retries by refilling "the window", which has no size until the requester's
first Segment-ACK: every retry fails an assertion (appservice.py:367) and nothing is sent again.
The first test runs the library's own server transaction and shows that defect (when an upgrade
fixes it, it fails and the override in `GatewayServerSSM` can go); the others show the gateway's
transaction sending the first segment again, in process and over the wire.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest
from bacnet_peer.harness import Peer
from bacnet_peer.rig import Rig
from bacpypes3.apdu import ComplexAckPDU
from bacpypes3.appservice import ABORTED, ServerSSM
from bacpypes3.pdu import Address

from gateway.bacnet.application import GatewayServerSSM
from gateway.bacnet.fastread import raw_identifier

pytestmark = pytest.mark.asyncio

INVOKE = 21


class Sent(SimpleNamespace):
    """What a transaction needs of its access point, recording what it sends."""

    def __init__(self) -> None:
        super().__init__(
            device_object=None,
            numberOfApduRetries=3,
            apduTimeout=3000,
            segmentationSupported="segmentedBoth",
            segmentTimeout=2000,
            maxSegmentsAccepted=16,
            maxApduLengthAccepted=1476,
            proposedWindowSize=2,
            serverTransactions=[],
            sent=[],
        )

    async def request(self, apdu: Any) -> None:
        self.sent.append(apdu)


def awaiting_first_segment_ack(cls: type[Any]) -> tuple[Any, Sent]:
    """A transaction that sent the first of three segments and heard nothing back."""
    sap = Sent()
    ssm = cls(sap, Address("127.0.0.1:47999"))
    reply = ComplexAckPDU(14, INVOKE)
    reply.put_data(bytes(2400))
    ssm.invokeID = INVOKE
    ssm.segmentAPDU = reply
    ssm.segmentSize = 1000
    ssm.segmentCount = 3
    ssm.segmentRetryCount = 0
    ssm.initialSequenceNumber = 0
    ssm.actualWindowSize = None  # set by the requester's first Segment-ACK
    sap.serverTransactions.append(ssm)
    return ssm, sap


async def test_bacpypes3_never_resends_an_unacknowledged_first_segment() -> None:
    ssm, sap = awaiting_first_segment_ack(ServerSSM)
    try:
        with pytest.raises(AssertionError):
            await ssm.segmented_response_timeout()
        assert sap.sent == []
    finally:
        ssm.stop_timer()


async def test_the_gateway_resends_the_first_segment_then_gives_up() -> None:
    ssm, sap = awaiting_first_segment_ack(GatewayServerSSM)
    try:
        for retry in range(1, 4):
            await ssm.segmented_response_timeout()
            assert len(sap.sent) == retry
            again = sap.sent[-1]
            assert (again.apduSeg, again.apduMor, again.apduSeq) == (True, True, 0)
        await ssm.segmented_response_timeout()  # retries used up: the transaction ends
        assert len(sap.sent) == 3
        assert ssm.state == ABORTED
        assert sap.serverTransactions == []
    finally:
        ssm.stop_timer()


async def test_an_unacknowledged_first_segment_comes_again_over_the_wire(
    rig: Rig, client: Peer
) -> None:
    objects = []
    for p in rig.points:
        obj = rig.server.object_for(p.sensor_id, p.key)
        if obj is not None:
            objects.append(raw_identifier(obj.identifier))
    body = b"".join(
        b"\x0c" + struct.pack("!I", o) + b"\x1e" + b"\x09\x55\x09\x6f\x09\x4d" + b"\x1f"
        for o in objects
    )  # Present_Value, Status_Flags and Object_Name of every object: several segments
    npdu = bytes([0x01, 0x04, 0x02, 0x75, INVOKE, 14]) + body
    packet = b"\x81\x0a" + struct.pack("!H", 4 + len(npdu)) + npdu
    # The segment timeout is 2 s: within 2.8 s the first segment comes, then comes again.
    replies = await client.call("raw", host="127.0.0.1", port=rig.port, hex=packet.hex(), wait=2.8)
    assert len(replies) == 2
    first, again = (bytes.fromhex(r) for r in replies)
    assert first == again
    assert first[6] == 0x3C  # Complex-ACK, segmented, more follow
    assert first[7:9] == bytes([INVOKE, 0])  # sequence number 0
