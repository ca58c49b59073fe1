"""Site scale: a gateway with hundreds of sensors serves every object, up to the highest
instances, through the generic and the fast path alike, and lists them all by index."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from bacnet_peer.harness import Peer
from bacnet_peer.rig import Rig

from objects.catalog import Model
from objects.pointmap import SensorSpec

pytestmark = pytest.mark.asyncio

SENSORS = 400  # about 20,000 objects: past every limit a few sensors never reach


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    sensors = tuple(
        SensorSpec(
            id=f"s{n}",
            name=f"Sensor {n}",
            number=n,
            model=Model.VS121 if n % 2 else Model.VS121_P,
            region_count=4,
        )
        for n in range(1, SENSORS + 1)
    )
    r = Rig(tmp_path, sensors=sensors)
    await r.start()
    yield r
    await r.stop()


async def test_the_highest_instances_are_readable(rig: Rig, client: Peer) -> None:
    last = f"s{SENSORS}"
    rig.report(last, {"people_count_all": 42})
    people = rig.object_id(last, "people_count_all")
    assert people == f"analog-input,{SENSORS * 1000 + 1}"
    highest = sorted((p for p in rig.points if p.sensor_id == last), key=lambda p: p.instance)[-1]
    top = rig.object_id(last, highest.key)
    for fast in (True, False):
        rig.server.set_fast_reads(fast)
        answer = await client.call(
            "read", address=rig.address, object=people, property="presentValue"
        )
        assert answer["value"] == 42.0
        rpm = await client.call(
            "rpm",
            address=rig.address,
            specs=[[people, ["presentValue", "statusFlags"]], [top, ["objectName", "statusFlags"]]],
        )
        values = [entry for *_, entry in rpm["results"]]
        assert values[0] == {"value": 42.0}
        assert values[1] == {"value": [0, 0, 0, 0]}
        assert values[2] == {"value": highest.name}
        assert "error" not in values[3]


async def test_object_list_by_index_reaches_the_last_object(rig: Rig, client: Peer) -> None:
    count = await client.call(
        "read", address=rig.address, object=rig.device, property="objectList", index=0
    )
    assert count["value"] == len(rig.points) + 2  # the device and its network port too
    last = await client.call(
        "read", address=rig.address, object=rig.device, property="objectList", index=count["value"]
    )
    assert last["value"] == rig.object_id(rig.points[-1].sensor_id, rig.points[-1].key)
    past = await client.call(
        "rpm",
        address=rig.address,
        specs=[[rig.device, [["objectList", count["value"] + 1]]]],
    )
    assert past["results"][0][3] == {"error": ["property", "invalid-array-index"]}
