"""A smaller BACnet instance block for large sites: instances stay a formula of the sensor
number, the alarm rules move to a place no sensor can reach, the default moves nothing."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from bacnet_peer.harness import Peer
from bacnet_peer.rig import Rig
from test_bacnet_server import object_list

from gateway.errors import ConfigError
from gateway.pointdocs import NOTIFICATION_CLASS_TYPE_CODE, OBJECT_TYPE_CODES, points_text
from gateway.settings import load_settings
from objects.catalog import Model
from objects.pointmap import ResolvedPoint, RuleSpec, SensorSpec, find_conflicts, resolve

MODBUS_OFF = "[modbus.tcp]\nenabled = false\n"
SENSOR = """
[[sensors]]
id = "s{n}"
name = "S{n}"
number = {n}
model = "vs121"
dev_eui = "24e124538c{n:06d}"
"""
ALARM = """
[[alarms]]
id = "crowd{r}"
name = "Crowd {r}"
number = {r}
sensors = ["s1"]
threshold = 10
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def sensors(*numbers: int) -> str:
    return "".join(SENSOR.format(n=n) for n in numbers)


def alarms(*numbers: int) -> str:
    return "".join(ALARM.format(r=r) for r in numbers)


def instance(points: list[ResolvedPoint], sensor_id: str, key: str) -> int:
    return next(p.instance for p in points if p.sensor_id == sensor_id and p.key == key)


# -- the formula -------------------------------------------------------------------------------


def test_block_500_places_every_sensor_by_its_number_and_the_rules_at_the_top(
    tmp_path: Path,
) -> None:
    text = "[bacnet]\ninstance_block = 500\n" + MODBUS_OFF + sensors(1, 4999, 8387)
    settings = load_settings(write(tmp_path, text + alarms(1, 20)))
    points = settings.points()
    assert instance(points, "s1", "people_count_all") == 501
    assert instance(points, "s4999", "people_count_all") == 4999 * 500 + 1
    assert instance(points, "s4999", "region_16_count") == 4999 * 500 + 116
    assert instance(points, "s8387", "a_to_a") == 8387 * 500 + 401
    rules = sorted(p.instance for p in points if p.rule is not None)
    assert rules[0] == 4_194_000  # rule 1, offset 0
    assert rules[-1] == 4_194_000 + 19 * 10 + 1  # rule 20's override
    highest_sensor = max(p.instance for p in points if p.sensor_id)
    assert highest_sensor < rules[0]
    assert find_conflicts(points, modbus=False) == []


def test_an_instance_never_depends_on_which_other_sensors_exist() -> None:
    alone = resolve(
        [SensorSpec(id="x", name="X", number=4999, model=Model.VS121)], bacnet_block=500
    )
    crowd = resolve(
        [SensorSpec(id=f"s{n}", name=f"S{n}", number=n, model=Model.VS121) for n in (1, 2, 8000)]
        + [SensorSpec(id="x", name="X", number=4999, model=Model.VS121)],
        bacnet_block=500,
    )
    assert [(p.key, p.instance) for p in alone if p.sensor_id == "x"] == [
        (p.key, p.instance) for p in crowd if p.sensor_id == "x"
    ]


def test_the_default_block_moves_nothing(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MODBUS_OFF + sensors(1, 4193) + alarms(1)))
    points = settings.points()
    assert settings.bacnet.instance_block == 1000
    assert instance(points, "s4193", "people_count_all") == 4_193_001
    assert sorted(p.instance for p in points if p.rule is not None) == [500, 500, 500, 500, 501]


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize("block", [400, 416, 550, 1500, 0])
def test_a_block_that_cannot_hold_a_sensor_or_is_not_round_is_refused(
    tmp_path: Path, block: int
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"[bacnet]\ninstance_block = {block}\n"))
    msg = str(err.value)
    assert f"bacnet.instance_block = {block}:" in msg
    assert "allowed: 500, 600, 700, 800, 900, 1000" in msg
    assert "0..416" in msg


def test_sensor_numbers_beyond_the_block_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, MODBUS_OFF + sensors(1, 4999)))
    msg = str(err.value)
    assert "sensors[1].number: 4999 is above 4193" in msg
    assert "bacnet.instance_block = 1000" in msg
    assert "set bacnet.instance_block = 500 (up to 8387)" in msg
    text = "[bacnet]\ninstance_block = 600\n" + MODBUS_OFF + sensors(7000)
    with pytest.raises(ConfigError, match=r"sensors\[0\]\.number: 7000 is above 6989"):
        load_settings(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"sensors\[0\]\.number = 8388"):
        load_settings(write(tmp_path, MODBUS_OFF + sensors(8388)))  # past every block


def test_an_instance_override_onto_a_rule_is_a_conflict(tmp_path: Path) -> None:
    text = (
        "[bacnet]\ninstance_block = 500\n"
        + MODBUS_OFF
        + sensors(1)
        + "[sensors.points.people_count_all]\ninstance = 4194000\n"
        + alarms(1)
    )
    with pytest.raises(ConfigError, match="analog-input 4194000 already used"):
        load_settings(write(tmp_path, text))


# -- over the network ------------------------------------------------------------------------


WIDE = tuple(
    SensorSpec(id=f"s{n}", name=f"Sensor {n}", number=n, model=Model.VS121, region_count=2)
    for n in (1, 4999, 8000)
)


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(
        tmp_path,
        sensors=WIDE,
        rules=(RuleSpec(id="crowd", name="Crowd", number=1),),
        instance_block=500,
    )
    await r.start()
    yield r
    await r.stop()


@pytest.mark.asyncio
async def test_a_peer_reads_the_wide_scheme_as_the_formula_says(rig: Rig, client: Peer) -> None:
    for n, people in ((1, 3), (4999, 7), (8000, 11)):
        rig.report(f"s{n}", {"people_count_all": people, "region_2_count": people + 1})
    rig.publish({"rule_1_alarm": 1, "rule_1_status": 5})
    specs = []
    for n in (1, 4999, 8000):
        specs.append([f"analog-input,{n * 500 + 1}", ["presentValue", "objectName"]])
        specs.append([f"analog-input,{n * 500 + 102}", ["presentValue"]])
    specs.append(["binary-input,4194000", ["presentValue", "objectName"]])
    specs.append(["analog-input,4194000", ["presentValue"]])
    answer = await client.call("rpm", address=rig.address, specs=specs)
    values = [entry for *_, entry in answer["results"]]
    assert values == [
        {"value": 3.0},
        {"value": "Sensor 1 People Count"},
        {"value": 4.0},
        {"value": 7.0},
        {"value": "Sensor 4999 People Count"},
        {"value": 8.0},
        {"value": 11.0},
        {"value": "Sensor 8000 People Count"},
        {"value": 12.0},
        {"value": "active"},
        {"value": "Crowd Overcrowded"},
        {"value": 5.0},
    ]
    # Nothing of the old rule place remains: instance 500 is sensor 1's online input now.
    old = await client.call(
        "read", address=rig.address, object="binary-input,500", property="objectName"
    )
    assert old["value"] == "Sensor 1 Online"


@pytest.mark.asyncio
async def test_the_ede_export_of_the_wide_scheme_is_what_is_served(
    tmp_path: Path, client: Peer
) -> None:
    text = "[bacnet]\ninstance_block = 500\n" + MODBUS_OFF + sensors(1, 4999, 8000) + alarms(1)
    settings = load_settings(write(tmp_path, text))
    ede = points_text(settings, "ede")
    rows = [r for r in csv.reader(io.StringIO(ede), delimiter=";") if r and r[0][0] != "#"][5:]
    codes: dict[int, str] = {code: t.value for t, code in OBJECT_TYPE_CODES.items()}
    codes[NOTIFICATION_CLASS_TYPE_CODE] = "notification-class"
    exported = {f"{codes[int(r[3])]},{r[4]}": r[2] for r in rows[1:]}
    assert exported["analog-input,2499501"] == "S4999 People Count"
    assert exported["binary-input,4194000"] == "Crowd 1 Overcrowded"
    r = Rig(
        tmp_path / "rig",
        sensors=tuple(settings.sensor_specs()),
        rules=tuple(settings.rule_specs()),
        instance_block=500,
    )
    await r.start()
    try:
        served = await object_list(client, r)
        assert set(served) - {r.device, "network-port,1"} == set(exported)
        names = {}
        objects = sorted(exported)
        for start in range(0, len(objects), 50):
            specs = [[o, ["objectName"]] for o in objects[start : start + 50]]
            answer = await client.call("rpm", address=r.address, specs=specs)
            names.update({obj: entry["value"] for obj, _, _, entry in answer["results"]})
        assert names == exported
    finally:
        await r.stop()
