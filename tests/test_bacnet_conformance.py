"""Object-level conformance: Property_List, Network Port, state texts, exact totals.

Checked with a bacpypes3 client in another process and, where installed, bacnet-stack's
bacepics (the C reference stack's EPICS generator reads every object and property).
"""

from __future__ import annotations

import re

import pytest
from bacnet_peer.calls import read
from bacnet_peer.harness import Peer
from bacnet_peer.rig import DEVICE_INSTANCE, Rig
from helpers import bacstack

pytestmark = pytest.mark.asyncio

IDENTITY = {"object-identifier", "object-name", "object-type", "property-list"}
BIG_TOTAL = (1 << 24) + 1  # the first integer a REAL cannot hold
TOP_TOTAL = (1 << 32) - 1


async def property_list(client: Peer, rig: Rig, obj: str) -> list[str]:
    """Property_List in BACnet's spelling ("apdu-length")."""
    names: list[str] = await read(client, rig, obj, "propertyList")
    return names


@pytest.mark.parametrize("obj", ["device", "network-port,1"])
async def test_property_list_leaves_out_the_identity_properties(
    rig: Rig, client: Peer, obj: str
) -> None:
    target = rig.device if obj == "device" else obj
    props = await property_list(client, rig, target)
    assert props, "a property list"
    assert IDENTITY.isdisjoint(props), props
    # Every property listed can be read.
    answer = await client.call("rpm", address=rig.address, specs=[[target, props]])
    errors = [r for r in answer["results"] if "error" in r[3]]
    assert errors == []


async def test_network_port_has_apdu_length(rig: Rig, client: Peer) -> None:
    assert "apdu-length" in await property_list(client, rig, "network-port,1")
    assert await read(client, rig, "network-port,1", "apduLength") == 1476


async def test_binary_objects_have_state_texts(rig: Rig, client: Peer) -> None:
    online = rig.object_id("lobby", "online")
    region = rig.object_id("lobby", "region_1")
    reset = rig.object_id("lobby", "reset_counts")
    for obj, active, inactive in (
        (online, "Online", "Offline"),
        (region, "Occupied", "Unoccupied"),
        (reset, "Reset", "Idle"),
    ):
        props = await property_list(client, rig, obj)
        assert {"active-text", "inactive-text"} <= set(props)
        assert await read(client, rig, obj, "activeText") == active
        assert await read(client, rig, obj, "inactiveText") == inactive


async def test_totals_are_exact_as_positive_integer_values(rig: Rig, client: Peer) -> None:
    rig.report("lobby", {"people_total_in": BIG_TOTAL, "people_total_out": TOP_TOTAL})
    exact_in = rig.object_id("lobby", "people_total_in_exact")
    exact_out = rig.object_id("lobby", "people_total_out_exact")
    assert exact_in == f"positive-integer-value,{1010}"
    assert await read(client, rig, exact_in, "presentValue") == BIG_TOTAL
    assert await read(client, rig, exact_out, "presentValue") == TOP_TOTAL
    assert await read(client, rig, exact_in, "statusFlags") == [0, 0, 0, 0]
    assert await read(client, rig, exact_in, "units") == "no-units"
    # The REAL of the same total cannot say it (why the unsigned object exists).
    real = await read(client, rig, rig.object_id("lobby", "people_total_in"), "presentValue")
    assert real != BIG_TOTAL
    # The gateway's own totals have their exact twins too, and they follow COV.
    assert rig.object_id("lobby", "gateway_total_in_exact") == "positive-integer-value,1012"
    objects = await read(client, rig, rig.device, "objectList")
    assert "positive-integer-value,1013" in objects


async def test_exact_total_notifies_cov_with_an_unsigned(rig: Rig, client: Peer) -> None:
    rig.report("lobby", {"people_total_in": 5})
    exact = rig.object_id("lobby", "people_total_in_exact")
    await client.call("subscribe", address=rig.address, object=exact, process=7, lifetime=60)
    first = await client.next_event(lambda e: e.get("object") == exact)
    assert first["values"]["presentValue"] == 5
    rig.report("lobby", {"people_total_in": BIG_TOTAL})
    moved = await client.next_event(lambda e: e.get("object") == exact)
    assert moved["values"]["presentValue"] == BIG_TOTAL


def _epics_objects(text: str) -> dict[str, dict[str, str]]:
    """bacepics' object blocks: identifier -> {property: value text}."""
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\}?,?\s*\{\s*\n", text):
        found = re.search(r"object-identifier: \(([^)]+)\)", block)
        if not found:
            continue
        props = dict(re.findall(r"^\s+([a-z-]+): (.*)$", block, flags=re.M))
        out[found.group(1)] = props
    return out


async def test_bacepics_reads_every_object(rig: Rig) -> None:
    rig.report("lobby", {"people_total_in": BIG_TOTAL, "region_1": 1})
    result = await bacstack.run(
        "bacepics", "-v", "-t", rig.address, str(DEVICE_INSTANCE), server_port=rig.port
    )
    assert result.returncode == 0, result.stderr
    objects = _epics_objects(result.stdout)
    assert len(objects) == len(rig.points) + 2  # the device and the network port
    assert objects["positive-integer-value, 1010"]["present-value"] == str(BIG_TOTAL)
    region = objects["binary-input, 1101"]
    assert region["active-text"] == '"Occupied"'
    assert region["inactive-text"] == '"Unoccupied"'
    assert objects["network-port, 1"]["apdu-length"] == "1476"
    assert "positive-integer-value" in result.stdout.split("Standard Object-Types Supported")[1]
    # No property bacepics asked for (from Property_List) was refused or unreadable.
    assert "unknown-property" not in result.stdout
    assert "ERROR" not in result.stdout.upper().replace("ERROR-", "")


# -- DeviceCommunicationControl and COV -------------------------------------------------------


@pytest.mark.parametrize("state", ["disable-initiation", "disable"])
async def test_cov_subscribers_hear_what_changed_while_communication_was_off(
    rig: Rig, client: Peer, state: str
) -> None:
    people = rig.object_id("lobby", "people_count_all")
    occupied = rig.object_id("lobby", "region_1")
    rig.report("lobby", {"people_count_all": 1, "region_1": 0})
    await client.call("subscribe", address=rig.address, object=people, process=1, lifetime=300)
    await client.call(
        "subscribe",
        address=rig.address,
        object=occupied,
        process=2,
        lifetime=300,
        confirmed=True,
    )
    await client.next_event(lambda e: e.get("process") == 1)
    await client.next_event(lambda e: e.get("process") == 2)
    untouched = rig.object_id("lobby", "people_count_max")
    await client.call("subscribe", address=rig.address, object=untouched, process=3, lifetime=300)
    await client.next_event(lambda e: e.get("process") == 3)

    await client.call("dcc", address=rig.address, state=state)
    sent = rig.server.notifications_sent
    rig.report("lobby", {"people_count_all": 6, "region_1": 1})
    rig.report("lobby", {"people_count_all": 7})
    assert rig.server.notifications_sent == sent  # nothing may leave while disabled

    await client.call("dcc", address=rig.address, state="enable")
    people_now = await client.next_event(lambda e: e.get("process") == 1)
    assert people_now["values"]["presentValue"] == 7.0
    occupied_now = await client.next_event(lambda e: e.get("process") == 2)
    assert occupied_now["confirmed"] is True
    assert occupied_now["values"]["presentValue"] == "active"
    # Only what changed is sent: one notification each, none for the untouched object.
    assert rig.server.notifications_sent == sent + 2
