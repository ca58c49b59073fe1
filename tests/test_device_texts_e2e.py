"""Device facts as BACnet text: the real daemon, a real mosquitto and a BACnet client in its own
process read the CharacterString Value objects after the sensor's device-information report."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from bacnet_peer.harness import Peer, PeerError
from helpers import bacstack
from helpers.broker import MosquittoBroker
from helpers.daemon import Daemon
from test_downlink_e2e import DEVICE, HALL, Broker, chirpstack_site, cs_uplink

UP = f"application/a/device/{HALL}/event/up"
# Sensor number 1 ("hall"): catalog offsets 66, 67 and 69 of the characterstring-value type.
FIRMWARE = "characterstring-value,1066"
HARDWARE = "characterstring-value,1067"
SERIAL = "characterstring-value,1069"
# The guide's device-information report: serial (ff 08), hardware 1.0 (ff 09), firmware
# 31.7.0.75 (ff 1f).
DEVICE_INFO = "ff0101ff086600b0940976ff090100ff1f1f07004b"


@pytest.fixture
def rig(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[tuple[Daemon, Broker, int]]:
    site = chirpstack_site(tmp_path, mqtt_broker.port, "test-texts-ns", modbus=False)
    with site as (daemon, ns, bacnet_port, _):
        yield daemon, ns, bacnet_port


def post_report(daemon: Daemon, name: str) -> int:
    report = (Path(__file__).parent / "data" / "vs121p" / name).read_bytes()
    url = f"http://127.0.0.1:{daemon.http_port}/vs121p"
    with urllib.request.urlopen(urllib.request.Request(url, data=report), timeout=5) as answer:
        return int(answer.status)


async def read(peer: Peer, target: str, obj: str, prop: str = "presentValue") -> object:
    answer = await peer.call("read", address=target, object=obj, property=prop)
    return answer["value"]


@pytest.mark.asyncio
async def test_device_facts_read_as_text_over_bacnet(rig: tuple[Daemon, Broker, int]) -> None:
    daemon, ns, bacnet_port = rig
    target = f"127.0.0.1:{bacnet_port}"
    ns.send(UP, cs_uplink(10, "04c9030800a106cd05"))
    daemon.wait_until(lambda: daemon.status()["sensors"]["hall"]["online"], what="uplink")
    peer = await Peer.start("client.py")
    try:
        # Online, but the facts never reported: out of service, no fault, empty text.
        assert await read(peer, target, SERIAL) == ""
        assert await read(peer, target, SERIAL, "statusFlags") == [0, 0, 0, 1]
        assert await read(peer, target, SERIAL, "objectName") == "Hall Serial Number"

        ns.send(UP, cs_uplink(11, DEVICE_INFO))
        daemon.wait_until(
            lambda: "sn" in daemon.status()["sensors"]["hall"]["device"], what="device facts"
        )
        assert await read(peer, target, SERIAL) == "6600b0940976"
        assert await read(peer, target, FIRMWARE) == "31.7.0.75"
        assert await read(peer, target, HARDWARE) == "1.0"
        # The API shows them under `device`; its point status covers numeric values only, so
        # the text objects are not listed there as never reported.
        points = daemon.status()["sensors"]["hall"]["points"]
        assert "firmware_version_code" in points
        assert not {"serial_number", "firmware_version_text", "hardware_version_text"} & set(points)
        # The points page shows the texts BACnet serves.
        page = daemon.get("/points?sensor=hall&type=characterstring-value")
        assert "6600b0940976" in page
        assert "31.7.0.75" in page
        for obj in (SERIAL, FIRMWARE, HARDWARE):
            assert await read(peer, target, obj, "statusFlags") == [0, 0, 0, 0], obj
            assert await read(peer, target, obj, "reliability") == "no-fault-detected", obj
        # The same through ReadPropertyMultiple (the fast path's other door).
        answer = await peer.call(
            "rpm",
            address=target,
            specs=[[SERIAL, ["presentValue", "statusFlags"]], [FIRMWARE, ["presentValue"]]],
        )
        got = [(obj, prop, entry.get("value")) for obj, prop, _, entry in answer["results"]]
        assert got == [
            (SERIAL, "presentValue", "6600b0940976"),
            (SERIAL, "statusFlags", [0, 0, 0, 0]),
            (FIRMWARE, "presentValue", "31.7.0.75"),
        ]

        # Read-only: a BMS cannot write a fact.
        with pytest.raises(PeerError) as refused:
            await peer.call(
                "write",
                address=target,
                object=SERIAL,
                property="presentValue",
                value="x",
                type="charstring",
            )
        assert refused.value.code == "write-access-denied"
        # Not COV-capable (the EDE says so): a subscription is refused.
        with pytest.raises(PeerError) as no_cov:
            await peer.call("subscribe", address=target, object=SERIAL, process=3, lifetime=60)
        assert no_cov.value.code == "cov-subscription-failed"
    finally:
        await peer.stop()

    # The facts are kept: after a restart the texts are there before any new uplink.
    assert daemon.stop() == 0
    daemon.start()
    daemon.wait_mqtt()
    peer = await Peer.start("client.py")
    try:
        assert await read(peer, target, SERIAL) == "6600b0940976"
        assert await read(peer, target, FIRMWARE) == "31.7.0.75"
    finally:
        await peer.stop()


@pytest.mark.asyncio
async def test_vs121p_serial_reads_as_text(rig: tuple[Daemon, Broker, int]) -> None:
    daemon, _, bacnet_port = rig
    target = f"127.0.0.1:{bacnet_port}"
    foyer_serial = "characterstring-value,3069"  # sensor number 3, the VS121-P
    peer = await Peer.start("client.py")
    try:
        assert await read(peer, target, foyer_serial) == ""
        with pytest.raises(PeerError) as unknown:  # the VS121-P has no version texts
            await read(peer, target, "characterstring-value,3066")
        assert unknown.value.code == "unknown-object"
        assert await asyncio.to_thread(post_report, daemon, "region_interval_counts.json") == 200
        daemon.wait_until(lambda: "people_count_all" in daemon.values("foyer"), what="foyer")
        assert await read(peer, target, foyer_serial) == "369362028335"
        assert await read(peer, target, foyer_serial, "statusFlags") == [0, 0, 0, 0]
    finally:
        await peer.stop()


@pytest.mark.asyncio
async def test_an_overlong_text_from_a_decoder_is_cut_and_logged(
    rig: tuple[Daemon, Broker, int],
) -> None:
    daemon, ns, bacnet_port = rig
    target = f"127.0.0.1:{bacnet_port}"
    # A network server's payload codec sends decoded fields; this one a 200-character serial.
    body = cs_uplink(12, "")
    del body["data"]
    body["object"] = {"people_count_all": 2, "sn": "7" * 200}
    ns.send(UP, body)
    daemon.wait_until(lambda: daemon.values("hall").get("people_count_all") == 2, what="uplink")
    peer = await Peer.start("client.py")
    try:
        assert await read(peer, target, SERIAL) == "7" * 64
    finally:
        await peer.stop()
    assert "BACnet: serial_number of sensor hall is longer than 64 characters; cut" in (
        daemon.log_text()
    )


@pytest.mark.asyncio
async def test_bacnet_stack_reads_the_serial_text(rig: tuple[Daemon, Broker, int]) -> None:
    bacstack.require("bacrp")
    daemon, ns, bacnet_port = rig
    ns.send(UP, cs_uplink(13, DEVICE_INFO))
    daemon.wait_until(
        lambda: "sn" in daemon.status()["sensors"]["hall"]["device"], what="device facts"
    )
    result = await bacstack.run(
        "bacrp",
        "--mac",
        f"127.0.0.1:{bacnet_port}",
        "--dnet",
        "0",
        str(DEVICE),
        "characterstring-value",
        "1069",
        "present-value",
        server_port=bacnet_port,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '"6600b0940976"'
