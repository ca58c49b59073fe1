"""The socket shortcut's view of a requester bacpypes3 already knows from an I-Am.

bacpypes3's server transaction takes a requester's max-APDU from its I-Am when that is larger
than the request's, and updates the cached segmentation support when a request accepts
segments; the shortcut must serve exactly when the transaction would send one unsegmented
reply, and leave the cache updates to it. (Over the wire, the byte-for-byte comparisons of both
paths are in test_bacnet_fastread.py.)
"""

from __future__ import annotations

import struct

import pytest
from bacpypes3.apdu import IAmRequest
from bacpypes3.app import DeviceInfoCache
from bacpypes3.pdu import IPv4Address

from gateway.bacnet.application import GatewayAccessPoint, TransactionSettings
from gateway.bacnet.device import build_device
from gateway.bacnet.fastlink import FastResponder
from gateway.bacnet.fastread import FastReader, raw_identifier
from gateway.bacnet.objects import build_objects
from objects.catalog import Model
from objects.pointmap import SensorSpec, resolve

DEVICE = 121000
REQUESTER = ("127.0.0.1", 40000)


def rpm(objects: list[int], *, max_apdu: int, accepts_segments: bool) -> bytes:
    body = b"".join(
        b"\x0c" + struct.pack("!I", raw) + b"\x1e\x09\x55\x09\x6f\x1f" for raw in objects
    )
    npdu = bytes([0x01, 0x04, 0x02 if accepts_segments else 0x00, max_apdu, 9, 14]) + body
    return b"\x81\x0a" + struct.pack("!H", 4 + len(npdu)) + npdu


def access_point() -> tuple[GatewayAccessPoint, DeviceInfoCache, list[int]]:
    device = build_device(
        instance=DEVICE,
        name="Gateway",
        description="",
        location="",
        vendor_id=999,
        vendor_name="test",
        version="1",
        database_revision=1,
        object_types=["analogInput"],
        active_cov=list,
    )
    objects = build_objects(resolve([SensorSpec(id="a", name="A", number=1, model=Model.VS121)]))
    cache = DeviceInfoCache()
    asap = GatewayAccessPoint(TransactionSettings.of(device), cache)
    asap.fast = FastReader(objects, DEVICE, [o.identifier for o in objects])
    return asap, cache, [raw_identifier(o.identifier) for o in objects[:4]]


async def announce(cache: DeviceInfoCache, max_apdu: int, segmentation: str) -> None:
    i_am = IAmRequest(
        iAmDeviceIdentifier=("device", 77),
        maxAPDULengthAccepted=max_apdu,
        segmentationSupported=segmentation,
        vendorID=15,
    )
    i_am.pduSource = IPv4Address(REQUESTER)
    await cache.set_device_info(i_am)


@pytest.mark.asyncio
async def test_a_larger_max_apdu_from_an_i_am_counts_as_the_transaction_counts_it() -> None:
    asap, cache, objects = access_point()
    responder = FastResponder(asap)
    request = rpm(objects, max_apdu=0x00, accepts_segments=False)  # 50 octets: too small
    assert responder(request, REQUESTER) is None
    await announce(cache, 1476, "segmentedBoth")
    reply = responder(request, REQUESTER)
    assert reply is not None
    assert reply[6:9] == b"\x30\x09\x0e"  # one unsegmented Complex-ACK, as bacpypes3 sends
    assert len(reply) - 6 > 50
    # Someone else, not announced, still gets what its request allows.
    assert responder(request, ("127.0.0.1", 40001)) is None


@pytest.mark.asyncio
async def test_a_request_that_updates_the_cached_segmentation_goes_to_bacpypes3() -> None:
    asap, cache, objects = access_point()
    responder = FastResponder(asap)
    await announce(cache, 1476, "noSegmentation")
    accepting = rpm(objects, max_apdu=0x05, accepts_segments=True)
    assert responder(accepting, REQUESTER) is None  # the transaction records segmented-receive
    assert responder(rpm(objects, max_apdu=0x05, accepts_segments=False), REQUESTER) is not None
    await announce(cache, 1476, "segmentedReceive")
    assert responder(accepting, REQUESTER) is not None
