"""The BACnet server against a real client in another process, on loopback UDP.

Each test gets its own server and client on unique ports (bacpypes3 shares ports through
SO_REUSEPORT, so two instances on one port would split the traffic).
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from bacnet_peer.calls import cov_for, failure, read
from bacnet_peer.harness import Peer, PeerError
from bacnet_peer.rig import DEVICE_INSTANCE, Rig

from gateway.pointdocs import OBJECT_TYPE_CODES, UNIT_CODES, render_ede
from objects.catalog import Model
from objects.pointmap import SensorSpec

pytestmark = pytest.mark.asyncio

OK = [0, 0, 0, 0]
FAULT = [0, 1, 0, 0]
OUT_OF_SERVICE = [0, 0, 0, 1]
FAULT_NO_VALUE = [0, 1, 0, 1]


# -- discovery --------------------------------------------------------------------------------


async def test_directed_who_is_gets_i_am(rig: Rig, client: Peer) -> None:
    found = await client.call("whois", address=rig.address, seconds=1.0)
    assert found == [{"device": DEVICE_INSTANCE, "source": rig.address}]
    outside = await client.call(
        "whois", low=1, high=DEVICE_INSTANCE - 1, address=rig.address, seconds=0.3
    )
    assert outside == []


def who_is_broadcast(low: int | None = None, high: int | None = None) -> str:
    """BVLC Original-Broadcast-NPDU carrying a Who-Is, encoded by hand (independent of
    bacpypes3's encoder): NPDU without routing, unconfirmed request, service 8."""
    apdu = b"\x10\x08"
    if low is not None and high is not None:
        apdu += b"\x0b" + low.to_bytes(3, "big") + b"\x1b" + high.to_bytes(3, "big")
    npdu = b"\x01\x00" + apdu
    return (b"\x81\x0b" + struct.pack("!H", 4 + len(npdu)) + npdu).hex()


def i_am_device(reply_hex: str) -> int:
    data = bytes.fromhex(reply_hex)
    assert data[0] == 0x81, "BVLC"
    apdu_at = data.index(b"\x10\x00\xc4")  # unconfirmed I-Am, then the object identifier tag
    (objid,) = struct.unpack("!I", data[apdu_at + 3 : apdu_at + 7])
    assert objid >> 22 == 8, "a device object identifier"
    return int(objid) & 0x3FFFFF


async def test_who_is_broadcast_on_loopback_broadcast_address(rig: Rig, client: Peer) -> None:
    replies = await client.call(
        "raw", host="127.255.255.255", port=rig.port, hex=who_is_broadcast(), wait=1.0
    )
    assert [i_am_device(r) for r in replies] == [DEVICE_INSTANCE]
    in_range = who_is_broadcast(DEVICE_INSTANCE, DEVICE_INSTANCE)
    replies = await client.call("raw", host="127.255.255.255", port=rig.port, hex=in_range, wait=1)
    assert [i_am_device(r) for r in replies] == [DEVICE_INSTANCE]
    out_of_range = who_is_broadcast(0, 10)
    replies = await client.call(
        "raw", host="127.255.255.255", port=rig.port, hex=out_of_range, wait=0.5
    )
    assert replies == []


async def test_i_am_is_broadcast_at_start_up(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        # Broadcasts reach every socket bound to the address, so this one hears what the
        # server's own broadcast listener hears.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.255.255.255", rig.port))
        listener.setblocking(False)
        await rig.start()
        try:
            data = await asyncio.wait_for(loop.sock_recv(listener, 1500), 5)
        finally:
            await rig.stop()
    assert data[:2] == b"\x81\x0b"  # Original-Broadcast-NPDU
    assert i_am_device(data.hex()) == DEVICE_INSTANCE


async def test_who_has_by_name_and_by_identifier(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    by_name = await client.call(
        "whohas", address=rig.address, name="Lobby People Count", seconds=1.0
    )
    assert by_name == [{"device": rig.device, "object": people, "name": "Lobby People Count"}]
    by_id = await client.call("whohas", address=rig.address, object=people, seconds=1.0)
    assert by_id == by_name
    assert (
        await client.call("whohas", address=rig.address, name="No Such Object", seconds=0.3) == []
    )


# -- device -----------------------------------------------------------------------------------


async def test_device_object_describes_the_gateway(rig: Rig, client: Peer) -> None:
    answer = await client.call("rpm", address=rig.address, specs=[[rig.device, ["all"]]])
    props = {prop: entry["value"] for _, prop, _, entry in answer["results"]}
    assert props["objectName"] == "VS121 Gateway"
    assert props["modelName"] == "VS121 Gateway"
    assert props["firmwareRevision"] == props["applicationSoftwareVersion"] == "1.2.3"
    assert props["vendorIdentifier"] == 999
    assert props["vendorName"] == "vs121-gateway"
    assert props["description"] == "Milesight VS121 occupancy sensors"
    assert props["protocolRevision"] == 22
    assert props["segmentationSupported"] == "segmented-both"
    assert props["maxApduLengthAccepted"] == 1476
    assert props["databaseRevision"] >= 1
    assert props["systemStatus"] == "operational"
    services = props["protocolServicesSupported"]
    # Bits of BACnetServicesSupported: what is executed, and nothing that is not.
    for bit in (5, 12, 14, 15, 17, 20, 32, 33, 34, 36, 38):
        assert services[bit] == 1, bit
    for bit in (16, 35, 1, 28):  # write-property-multiple, read-range, COV notifications
        assert services[bit] == 0, bit
    assert "propertyList" not in props  # ALL never includes Property_List


async def test_database_revision_follows_the_object_set(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    await first.start()
    revision = first.server.database_revision
    await first.restart()
    assert first.server.database_revision == revision  # same objects, same revision
    await first.stop()
    extra = SensorSpec(id="hall", name="Hall", number=3, model=first.sensors[0].model)
    grown = Rig(tmp_path, sensors=(*first.sensors, extra))
    await grown.start()
    assert grown.server.database_revision == revision + 1
    await grown.stop()


# -- reading every object ---------------------------------------------------------------------


async def object_list(client: Peer, rig: Rig) -> list[str]:
    value = await read(client, rig, rig.device, "objectList")
    assert isinstance(value, list)
    return [str(v) for v in value]


async def test_read_property_multiple_all_of_every_object(rig: Rig, client: Peer) -> None:
    objects = await object_list(client, rig)
    assert len(objects) == len(rig.points) + 2  # the points, the device, its network port
    assert objects[0] == rig.device
    for start in range(0, len(objects), 25):
        batch = objects[start : start + 25]
        answer = await client.call("rpm", address=rig.address, specs=[[o, ["all"]] for o in batch])
        seen: dict[str, set[str]] = {}
        for obj, prop, _, entry in answer["results"]:
            assert "value" in entry, (obj, prop, entry)
            seen.setdefault(obj, set()).add(prop)
        assert set(seen) == set(batch)
        for obj, props in seen.items():
            assert {"objectIdentifier", "objectName", "objectType"} <= props, obj
            if not obj.startswith(("device", "network-port")):
                assert {"presentValue", "statusFlags", "reliability", "outOfService"} <= props


async def test_required_and_optional_split_all(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    answer = await client.call(
        "rpm", address=rig.address, specs=[[people, ["required"]], [people, ["optional"]]]
    )
    props = [prop for _, prop, _, _ in answer["results"]]
    required = props[: props.index("units") + 1]
    assert set(required) == {
        "objectIdentifier",
        "objectName",
        "objectType",
        "presentValue",
        "statusFlags",
        "eventState",
        "outOfService",
        "units",
    }
    assert set(props) - set(required) == {"description", "reliability", "covIncrement"}


async def test_rpm_reports_errors_per_property(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    answer = await client.call(
        "rpm",
        address=rig.address,
        specs=[
            [people, ["presentValue", "polarity", ["propertyList", 0]]],
            ["analog-input,999999", ["presentValue"]],
        ],
    )
    entries = {(obj, prop): entry for obj, prop, _, entry in answer["results"]}
    assert entries[(people, "presentValue")] == {"value": 0.0}
    assert entries[(people, "polarity")] == {"error": ["property", "unknown-property"]}
    assert entries[(people, "propertyList")]["value"] > 5
    assert entries[("analog-input,999999", "presentValue")] == {
        "error": ["object", "unknown-object"]
    }


async def test_large_object_list_is_segmented(tmp_path: Path, client: Peer) -> None:
    sensors = tuple(
        SensorSpec(id=f"s{n}", name=f"Sensor {n}", number=n, model=Model.VS121)
        for n in range(1, 31)
    )
    rig = Rig(tmp_path, sensors=sensors)
    await rig.start()
    try:
        objects = await object_list(client, rig)  # about 15 kB: eleven segments
        assert len(objects) == len(rig.points) + 2 > 2000
        assert len(set(objects)) == len(objects)
        assert await read(client, rig, rig.device, "objectList", 0) == len(objects)
        assert await read(client, rig, rig.device, "objectList", len(objects)) == objects[-1]
        with pytest.raises(PeerError) as err:
            await read(client, rig, rig.device, "objectList", len(objects) + 1)
        assert err.value.code == "invalid-array-index"
    finally:
        await rig.stop()


async def test_served_objects_match_the_ede_export(rig: Rig, client: Peer) -> None:
    ede = render_ede(
        rig.points,
        device_instance=DEVICE_INSTANCE,
        device_name=rig.cfg.device_name,
        device_description=rig.cfg.description,
        project="test",
    )
    rows = [r for r in csv.reader(io.StringIO(ede), delimiter=";") if r and r[0][0] != "#"]
    rows = rows[5:]  # the header block before the column titles
    device_row, point_rows = rows[0], rows[1:]
    codes = {code: t for t, code in OBJECT_TYPE_CODES.items()}
    units = {code: u for u, code in UNIT_CODES.items()}

    served = await object_list(client, rig)
    expected = {f"device,{device_row[4]}"}
    specs = []
    for row in point_rows:
        obj = f"{codes[int(row[3])].value},{row[4]}"
        expected.add(obj)
        props = ["objectName", "description"]
        if row[14]:
            props.append("units")
        specs.append((obj, row, props))
    assert set(served) - {"network-port,1"} == expected
    name = await read(client, rig, served[0], "objectName")
    assert (served[0], name) == (f"device,{device_row[1]}", device_row[2])
    assert await read(client, rig, served[0], "description") == device_row[5]

    for obj, row, props in specs:
        answer = await client.call("rpm", address=rig.address, specs=[[obj, props]])
        got = {prop: entry.get("value") for _, prop, _, entry in answer["results"]}
        assert got["objectName"] == row[2], obj
        assert got["description"] == row[5], obj
        if row[14]:
            assert got["units"] == _hyphen(units[int(row[14])].value), obj

    # "supports COV" per object type: a subscription is accepted exactly where the EDE says Y.
    tried: set[str] = set()
    for obj, row, _ in specs:
        kind = obj.split(",")[0]
        if kind in tried:
            continue
        tried.add(kind)
        answer = await client.answer(
            "subscribe", address=rig.address, object=obj, process=9, lifetime=60
        )
        assert ("error" not in answer) == (row[10] == "Y"), (obj, answer)
    assert tried == {
        "analog-input",
        "analog-value",  # a sensor setting (reporting interval)
        "binary-input",
        "binary-value",
        "characterstring-value",  # device facts as text: no COV (EDE N)
        "datetime-value",
        "positive-integer-value",
    }


def _hyphen(camel: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in camel)


# -- values and freshness ---------------------------------------------------------------------


async def test_values_are_never_shown_good_before_a_report(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    online = rig.object_id("lobby", "online")
    dwell = rig.object_id("lobby", "dwell_time_avg")
    last = rig.object_id("lobby", "last_report")
    rig.state.tick()  # the daemon's first tick computes the health points

    assert await read(client, rig, people, "reliability") == "communication-failure"
    assert await read(client, rig, people, "statusFlags") == FAULT_NO_VALUE
    assert await read(client, rig, online, "presentValue") == "inactive"
    assert await read(client, rig, online, "reliability") == "no-fault-detected"
    assert await read(client, rig, last, "reliability") == "unreliable-other"

    rig.report("lobby", {"people_count_all": 5})
    assert await read(client, rig, people, "presentValue") == 5.0
    assert await read(client, rig, people, "reliability") == "no-fault-detected"
    assert await read(client, rig, online, "presentValue") == "active"
    # The sensor reports, but never sent this value: not current (out of service), yet no
    # fault, so a BMS alarm list does not fill with values this sensor was never going to send.
    assert await read(client, rig, dwell, "reliability") == "no-fault-detected"
    assert await read(client, rig, dwell, "statusFlags") == OUT_OF_SERVICE
    assert await read(client, rig, dwell, "outOfService") == 1
    assert await read(client, rig, last, "reliability") == "no-fault-detected"


async def test_values_no_longer_reported_are_out_of_service(rig: Rig, client: Peer) -> None:
    region = rig.object_id("lobby", "region_1_count")
    people = rig.object_id("lobby", "people_count_all")
    # Region People Counting: region counts, no total (the total is their sum).
    regions = {f"region_{n}_count": 0 for n in range(3, 9)}
    rig.report("lobby", {"region_1_count": 13, "region_2_count": 1, **regions})
    assert await read(client, rig, people, "presentValue") == 14.0
    assert await read(client, rig, region, "statusFlags") == OK
    # The sensor is switched to Occupancy reporting: total and bitmap, no region counts.
    rig.report("lobby", {"people_count_all": 2, "region_count": 4, "region_1": 1})
    assert await read(client, rig, region, "presentValue") == 13.0  # kept, but
    assert await read(client, rig, region, "statusFlags") == OUT_OF_SERVICE
    assert await read(client, rig, region, "reliability") == "no-fault-detected"
    assert await read(client, rig, people, "statusFlags") == OK
    rig.report("lobby", {"region_1_count": 3, "region_2_count": 0})
    assert await read(client, rig, region, "statusFlags") == OK


async def test_stale_sensor_flags_its_objects_but_not_its_health(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    total = rig.object_id("lobby", "gateway_total_in")
    online = rig.object_id("lobby", "online")
    since = rig.object_id("lobby", "seconds_since_report")
    other = rig.object_id("meeting", "people_count_all")
    rig.report("lobby", {"people_count_all": 5, "people_in": 2})
    rig.report("meeting", {"people_count_all": 1})

    rig.advance(20)
    rig.report("meeting", {"people_count_all": 2})
    rig.advance(20)  # lobby silent for 40 s, stale after 30 s
    assert await read(client, rig, people, "presentValue") == 5.0  # kept
    assert await read(client, rig, people, "reliability") == "communication-failure"
    assert await read(client, rig, total, "statusFlags") == FAULT
    assert await read(client, rig, online, "presentValue") == "inactive"
    assert await read(client, rig, online, "statusFlags") == OK
    assert await read(client, rig, since, "statusFlags") == OK
    assert await read(client, rig, other, "statusFlags") == OK

    rig.report("lobby", {"people_count_all": 6})
    assert await read(client, rig, people, "statusFlags") == OK
    assert await read(client, rig, total, "reliability") == "no-fault-detected"


async def test_gateway_points_follow_published_values(rig: Rig, client: Peer) -> None:
    heartbeat = "analog-input,1"
    assert await read(client, rig, heartbeat, "reliability") == "unreliable-other"
    rig.state.publish_gateway({"heartbeat": 7, "uptime": 7, "version": 10203})
    assert await read(client, rig, heartbeat, "presentValue") == 7.0
    assert await read(client, rig, heartbeat, "statusFlags") == OK
    assert await read(client, rig, "analog-input,3", "presentValue") == 10203.0


# -- COV --------------------------------------------------------------------------------------


async def test_cov_notifies_after_a_state_change(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    rig.report("lobby", {"people_count_all": 1})
    await client.call("subscribe", address=rig.address, object=people, process=1, lifetime=120)
    first = await client.next_event(cov_for(people))
    assert first["values"] == {"presentValue": 1.0, "statusFlags": OK}
    assert first["confirmed"] is False
    assert 110 <= first["time_remaining"] <= 120
    assert first["device"] == rig.device

    rig.report("lobby", {"people_count_all": 4})
    change = await client.next_event(cov_for(people))
    assert change["values"] == {"presentValue": 4.0, "statusFlags": OK}


async def test_cov_tells_when_a_value_is_no_longer_reported(rig: Rig, client: Peer) -> None:
    region = rig.object_id("lobby", "region_1_count")
    rig.report("lobby", {"region_1_count": 13, "region_2_count": 0})
    await client.call("subscribe", address=rig.address, object=region, process=4, lifetime=120)
    first = await client.next_event(cov_for(region))
    assert first["values"] == {"presentValue": 13.0, "statusFlags": OK}
    # The reporting type changes: the value stays 13, its Status_Flags say out of service.
    rig.report("lobby", {"people_count_all": 2, "region_1": 1})
    change = await client.next_event(cov_for(region))
    assert change["values"] == {"presentValue": 13.0, "statusFlags": OUT_OF_SERVICE}


async def test_cov_increment_of_subscribe_cov_property(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    rig.report("lobby", {"people_count_all": 10})
    await client.call(
        "subscribe",
        address=rig.address,
        object=people,
        process=2,
        property="presentValue",
        increment=3.0,
    )
    assert (await client.next_event(cov_for(people)))["values"]["presentValue"] == 10.0
    for count in (11, 12, 9, 8):  # within 3 of the last reported 10: no notification
        rig.report("lobby", {"people_count_all": count})
    rig.report("lobby", {"people_count_all": 13})
    assert (await client.next_event(cov_for(people)))["values"]["presentValue"] == 13.0
    rig.report("lobby", {"people_count_all": 11})
    rig.report("lobby", {"people_count_all": 10})
    assert (await client.next_event(cov_for(people)))["values"]["presentValue"] == 10.0


async def test_object_cov_increment_applies_to_subscribe_cov(rig: Rig, client: Peer) -> None:
    since = rig.object_id("lobby", "seconds_since_report")  # COV increment 60 s
    rig.report("lobby", {"people_count_all": 1})
    rig.state.tick()
    await client.call("subscribe", address=rig.address, object=since, process=3)
    assert (await client.next_event(cov_for(since)))["values"]["presentValue"] == 0.0
    for _ in range(5):
        rig.advance(11)  # 11 ... 55 s: below the increment (and stale, which health ignores)
    rig.advance(10)
    step = await client.next_event(cov_for(since))
    assert step["values"] == {"presentValue": 65.0, "statusFlags": OK}


async def test_stale_and_recovery_notify_status_flags(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    online = rig.object_id("lobby", "online")
    rig.report("lobby", {"people_count_all": 3})
    await client.call("subscribe", address=rig.address, object=people, process=4)
    await client.call("subscribe", address=rig.address, object=online, process=5)
    assert (await client.next_event(cov_for(people)))["values"]["statusFlags"] == OK
    assert (await client.next_event(cov_for(online)))["values"]["presentValue"] == "active"

    rig.advance(40)
    stale = await client.next_event(cov_for(people))
    assert stale["values"] == {"presentValue": 3.0, "statusFlags": FAULT}
    offline = await client.next_event(cov_for(online))
    assert offline["values"] == {"presentValue": "inactive", "statusFlags": OK}

    rig.report("lobby", {"people_count_all": 3})  # same value: only the flags change
    fresh = await client.next_event(cov_for(people))
    assert fresh["values"] == {"presentValue": 3.0, "statusFlags": OK}


async def test_subscribe_cov_property_on_reliability_and_flags(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    rig.report("lobby", {"people_count_all": 3})
    await client.call(
        "subscribe", address=rig.address, object=people, process=6, property="reliability"
    )
    await client.call(
        "subscribe", address=rig.address, object=people, process=7, property="statusFlags"
    )
    reliability = await client.next_event(cov_for(people, 6))
    assert reliability["values"] == {"reliability": "no-fault-detected", "statusFlags": OK}
    assert (await client.next_event(cov_for(people, 7)))["values"] == {"statusFlags": OK}
    rig.report("lobby", {"people_count_all": 4})  # a value change is not theirs to report
    rig.advance(40)
    reliability = await client.next_event(cov_for(people, 6))
    assert reliability["values"] == {"reliability": "communication-failure", "statusFlags": FAULT}
    assert (await client.next_event(cov_for(people, 7)))["values"] == {"statusFlags": FAULT}


async def test_confirmed_notifications_are_bounded_for_a_silent_subscriber(
    rig: Rig, client: Peer
) -> None:
    people = rig.object_id("lobby", "people_count_all")
    await client.call("set_ack", enabled=False)  # the subscriber stops acknowledging
    await client.call("subscribe", address=rig.address, object=people, process=8, confirmed=True)
    rig.report("lobby", {"people_count_all": 1})
    for count in range(2, 30):
        rig.report("lobby", {"people_count_all": count})
    seen = [await client.next_event(cov_for(people)) for _ in range(4)]
    assert all(e["confirmed"] for e in seen)
    # Four are in flight; nothing else is sent until one is answered or times out (3 s).
    await client.call("set_ack", enabled=True)
    values: list[float] = []
    while not values or values[-1] != 29.0:
        event = await client.next_event(cov_for(people), within=15)
        values.append(event["values"]["presentValue"])
    assert len(values) < 12  # retries of the four, then the latest value, not 29 notifications
    assert rig.server.notifications_sent < 12


async def test_cov_subscription_errors_and_cancel(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    last = rig.object_id("lobby", "last_report")
    common = {"address": rig.address, "process": 10}
    assert await failure(client, "subscribe", object=last, **common) == (
        "services",
        "cov-subscription-failed",
    )
    assert await failure(client, "subscribe", object="analog-input,999999", **common) == (
        "object",
        "unknown-object",
    )
    assert await failure(client, "subscribe", object=rig.device, **common) == (
        "services",
        "cov-subscription-failed",
    )
    assert await failure(client, "subscribe", object=people, property="objectName", **common) == (
        "services",
        "not-cov-property",
    )
    assert await failure(client, "subscribe", object=people, property="polarity", **common) == (
        "property",
        "unknown-property",
    )

    await client.call("subscribe", object=people, **common)
    await client.next_event(cov_for(people))
    await client.call("subscribe", object=people, cancel=True, **common)
    assert rig.server.cov_subscriptions == 0
    rig.report("lobby", {"people_count_all": 2})
    # A read answered after the report shows no notification went out for it.
    await read(client, rig, people, "presentValue")
    assert client.drain_events() == []


async def test_active_cov_subscriptions_are_listed(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    await client.call("subscribe", address=rig.address, object=people, process=11, lifetime=90)
    await client.call(
        "subscribe",
        address=rig.address,
        object=people,
        process=12,
        property="presentValue",
        increment=2.5,
        confirmed=True,
    )
    listed = await read(client, rig, rig.device, "activeCovSubscriptions")
    by_process = {e["recipient"]["processIdentifier"]: e for e in listed}
    assert set(by_process) == {11, 12}
    assert by_process[11]["issueConfirmedNotifications"] == 0
    assert 80 <= by_process[11]["timeRemaining"] <= 90
    assert by_process[11]["monitoredPropertyReference"]["objectIdentifier"] == people
    assert by_process[12]["covIncrement"] == 2.5


async def test_cov_subscriptions_survive_a_restart(rig: Rig, client: Peer) -> None:
    people = rig.object_id("lobby", "people_count_all")
    rig.report("lobby", {"people_count_all": 2})
    await client.call("subscribe", address=rig.address, object=people, process=13, lifetime=600)
    await client.next_event(cov_for(people))

    await rig.restart()
    resumed = await client.next_event(cov_for(people))  # sent on resuming
    assert resumed["process"] == 13
    assert 550 <= resumed["time_remaining"] <= 600
    assert rig.server.cov_subscriptions == 1
    saved = (rig.state_dir / "bacnet_cov.json").read_text()
    assert '"process_id": 13' in saved
    rig.report("lobby", {"people_count_all": 7})
    assert (await client.next_event(cov_for(people)))["values"]["presentValue"] == 7.0


# -- writes -----------------------------------------------------------------------------------


async def test_write_matrix(rig: Rig, client: Peer) -> None:
    reset = rig.object_id("lobby", "reset_counts")
    people = rig.object_id("lobby", "people_count_all")
    online = rig.object_id("lobby", "online")
    address = rig.address

    async def write(obj: str, prop: str, value: Any, type: str, **kw: Any) -> Any:
        return await client.answer(
            "write", address=address, object=obj, property=prop, value=value, type=type, **kw
        )

    def code(answer: dict[str, Any]) -> tuple[str, str] | str:
        if "error" not in answer:
            return "ack"
        return answer["error"].get("errorClass"), answer["error"].get("errorCode")

    denied = ("property", "write-access-denied")
    cases: list[tuple[str, str, Any, str, dict[str, Any], Any]] = [
        (reset, "presentValue", 1, "enumerated", {}, "ack"),
        (reset, "presentValue", 0, "enumerated", {}, "ack"),
        (reset, "presentValue", 1, "enumerated", {"priority": 8}, "ack"),  # not commandable
        (reset, "presentValue", 2, "enumerated", {}, ("property", "value-out-of-range")),
        (reset, "presentValue", 1.0, "real", {}, ("property", "invalid-data-type")),
        (reset, "presentValue", 1, "unsigned", {}, ("property", "invalid-data-type")),
        (reset, "presentValue", None, "null", {}, ("property", "invalid-data-type")),
        (
            reset,
            "presentValue",
            1,
            "enumerated",
            {"index": 1},
            ("property", "property-is-not-an-array"),
        ),
        (reset, "objectName", "x", "charstring", {}, denied),
        (reset, "description", "x", "charstring", {}, denied),
        (reset, "outOfService", 1, "enumerated", {}, denied),
        (people, "presentValue", 3.0, "real", {}, denied),
        (people, "covIncrement", 5.0, "real", {}, denied),
        (people, "objectName", "x", "charstring", {}, denied),
        (people, "polarity", 1, "enumerated", {}, ("property", "unknown-property")),
        (online, "presentValue", 1, "enumerated", {}, denied),
        (rig.device, "objectName", "x", "charstring", {}, denied),
        (rig.device, "location", "x", "charstring", {}, denied),
        (rig.device, "presentValue", 1.0, "real", {}, ("property", "unknown-property")),
        ("network-port,1", "objectName", "x", "charstring", {}, denied),
        ("analog-input,999999", "presentValue", 1.0, "real", {}, ("object", "unknown-object")),
    ]
    for obj, prop, value, kind, extra, expected in cases:
        assert code(await write(obj, prop, value, kind, **extra)) == expected, (obj, prop, value)
    assert rig.commands.resets == ["lobby", "lobby"]  # the two active writes, nothing else
    assert await read(client, rig, reset, "presentValue") == "inactive"  # momentary
    assert await read(client, rig, rig.device, "objectName") == "VS121 Gateway"
    assert await read(client, rig, people, "covIncrement") == 1.0


async def test_successful_write_notifies_and_failed_command_is_reported(
    rig: Rig, client: Peer
) -> None:
    reset = rig.object_id("meeting", "reset_counts")
    await client.call("subscribe", address=rig.address, object=reset, process=14)
    assert (await client.next_event(cov_for(reset)))["values"]["presentValue"] == "inactive"
    await client.call(
        "write",
        address=rig.address,
        object=reset,
        property="presentValue",
        value=1,
        type="enumerated",
    )
    assert rig.commands.resets == ["meeting"]
    notified = await client.next_event(cov_for(reset))
    assert notified["values"] == {"presentValue": "inactive", "statusFlags": OK}

    rig.commands.fail_with = RuntimeError("downlink queue full")
    assert await failure(
        client,
        "write",
        address=rig.address,
        object=reset,
        property="presentValue",
        value=1,
        type="enumerated",
    ) == ("device", "operational-problem")


# -- device management ------------------------------------------------------------------------


async def test_dcc_and_reinitialize_need_the_password(tmp_path: Path, client: Peer) -> None:
    rig = Rig(tmp_path, password="s3cret")
    await rig.start()
    try:
        password_failure = ("security", "password-failure")
        for password in (None, "wrong"):
            assert (
                await failure(
                    client, "dcc", address=rig.address, state="disable", password=password
                )
                == password_failure
            )
            assert (
                await failure(
                    client, "reinit", address=rig.address, state="warmstart", password=password
                )
                == password_failure
            )
        assert rig.server.communication == "enable"

        await client.call(
            "dcc", address=rig.address, state="disable-initiation", minutes=5, password="s3cret"
        )
        assert rig.server.communication == "disableInitiation"
        assert await read(client, rig, rig.device, "objectName") == "VS121 Gateway"

        await client.call("dcc", address=rig.address, state="disable", password="s3cret")
        assert rig.server.communication == "disable"
        request = read_property_datagram(DEVICE_INSTANCE)
        silent = await client.call("raw", host="127.0.0.1", port=rig.port, hex=request, wait=0.5)
        assert silent == []
        await client.call("dcc", address=rig.address, state="enable", password="s3cret")
        assert await read(client, rig, rig.device, "objectName") == "VS121 Gateway"

        assert await failure(
            client, "reinit", address=rig.address, state="start-backup", password="s3cret"
        ) == ("services", "optional-functionality-not-supported")
        await client.call("reinit", address=rig.address, state="warmstart", password="s3cret")
    finally:
        await rig.stop()


async def test_without_a_password_dcc_is_accepted(rig: Rig, client: Peer) -> None:
    await client.call("dcc", address=rig.address, state="disable-initiation", minutes=1)
    assert rig.server.communication == "disableInitiation"
    await client.call("dcc", address=rig.address, state="enable")
    assert rig.server.communication == "enable"


async def test_time_synchronization_is_accepted(
    rig: Rig, client: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="gateway.bacnet")
    await client.call("timesync", address=rig.address)
    await client.call("timesync", address=rig.address, utc=True)
    await read(client, rig, rig.device, "objectName")  # answered after both were handled
    syncs = [r for r in caplog.records if "time synchronization" in r.getMessage()]
    assert len(syncs) == 2
    assert all(r.levelname == "DEBUG" for r in syncs)  # our clocks agree: no warning


# -- robustness -------------------------------------------------------------------------------


def bvlc(function: int, payload: bytes) -> bytes:
    return bytes([0x81, function]) + struct.pack("!H", 4 + len(payload)) + payload


UNICAST, BROADCAST, FORWARDED = 0x0A, 0x0B, 0x04
MALFORMED = [
    b"",  # an empty datagram
    b"\x81",  # a BVLC type byte alone
    b"\x81\x0a\x00\x04",  # BVLC header without an NPDU
    b"\x81\x0a\x00\xff\x01\x00",  # BVLC length longer than the datagram
    b"\x81\x99\x00\x04",  # unknown BVLC function
    bvlc(UNICAST, b"\x01"),  # NPDU version only
    bvlc(UNICAST, b"\x01\x7f"),  # NPDU control bits that promise missing fields
    bvlc(UNICAST, b"\x02\x00\x10\x08"),  # wrong NPDU version
    bvlc(UNICAST, b"\x01\x04\x00\x05"),  # confirmed-request header cut short
    bvlc(UNICAST, b"\x01\x04\x00\x05\x01\x0c"),  # ReadProperty without its object
    bvlc(UNICAST, b"\x01\x04\x00\x05\x01\x0c\x0c\x02\x01"),  # object identifier cut
    bvlc(UNICAST, b"\x01\x04\x00\x05\x01\x0c\x0c\x02\x01\xd8\xa8\x1d\x4d"),  # bad length
    bvlc(UNICAST, b"\x01\x04\x00\x05\x01\x0e\x1e\x1f\x1f"),  # RPM of stray tags
    bvlc(UNICAST, b"\x01\x04\x00\x05\x01\x0f\x0c\x02\x01\xd8\xa8"),  # WP cut short
    bvlc(UNICAST, b"\x01\x04\x0c\x05\x01\x00\x04\x0c"),  # first segment, never finished
    bvlc(UNICAST, b"\x01\x00\x71\x01\x04"),  # an unsolicited Abort
    bvlc(UNICAST, b"\x01\x00\x20\x07\x0c"),  # an unsolicited SimpleAck
    bvlc(BROADCAST, b"\x01\x00\x10\x08\xff"),  # Who-Is with a stray byte
    bvlc(BROADCAST, b"\x01\x00\x10\x08\x0b\xff"),  # Who-Is with a cut range
    bvlc(FORWARDED, b"\x7f\x00\x00\x01\xba"),  # Forwarded-NPDU with a cut address
    bvlc(0x05, b"\x00"),  # Register-Foreign-Device with a cut TTL
    bytes(range(1, 11)),  # not BACnet at all
    b"\x81" + b"\xff" * 600,  # long garbage
]


def read_property_datagram(instance: int, prop: int = 77) -> str:
    """A ReadProperty of a device property (objectName by default), encoded by hand."""
    objid = struct.pack("!I", (8 << 22) | instance)
    apdu = b"\x00\x05\x01\x0c" + b"\x0c" + objid + bytes([0x19, prop])
    return bvlc(UNICAST, b"\x01\x04" + apdu).hex()


async def test_malformed_datagrams_do_not_stop_the_server(rig: Rig, client: Peer) -> None:
    for datagram in MALFORMED:
        await client.call("raw", host="127.0.0.1", port=rig.port, hex=datagram.hex(), wait=0.0)
    rig.report("lobby", {"people_count_all": 9})
    people = rig.object_id("lobby", "people_count_all")
    assert await read(client, rig, people, "presentValue") == 9.0
    found = await client.call("whois", address=rig.address, seconds=1.0)
    assert [f["device"] for f in found] == [DEVICE_INSTANCE]
