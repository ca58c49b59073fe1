"""Device facts as text objects: their BACnet behaviour in process, and the exports."""

from __future__ import annotations

import csv
import io

import pytest
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.errors import ExecutionError
from bacpypes3.primitivedata import CharacterString

from gateway.bacnet.objects import (
    COMMUNICATION_FAILURE,
    NO_FAULT_DETECTED,
    PointObject,
    build_objects,
)
from gateway.bacnet.writes import validate_write
from gateway.device_points import text_values
from gateway.pointdocs import render_ede, render_modbus_csv
from objects.catalog import Model, ObjectType
from objects.pointmap import SensorSpec, resolve

LORA = SensorSpec(id="hall", name="Hall", number=1, model=Model.VS121, region_count=2)
POE = SensorSpec(id="foyer", name="Foyer", number=3, model=Model.VS121_P, region_count=2)
TEXT_KEYS = {"serial_number", "firmware_version_text", "hardware_version_text"}


def texts_of(spec: SensorSpec) -> dict[str, PointObject]:
    objs = build_objects(resolve([spec]))
    return {o.point.key: o for o in objs if o.point.object_type is ObjectType.CHARACTERSTRING_VALUE}


def test_each_lorawan_sensor_has_three_text_objects_and_the_vs121p_its_serial() -> None:
    lora = texts_of(LORA)
    assert set(lora) == TEXT_KEYS
    assert {k: o.point.instance for k, o in lora.items()} == {
        "firmware_version_text": 1066,
        "hardware_version_text": 1067,
        "serial_number": 1069,
    }
    assert set(texts_of(POE)) == {"serial_number"}


def test_text_object_reads_and_status() -> None:
    serial = texts_of(LORA)["serial_number"]
    # Never reported: out of service, no fault, empty text.
    assert serial.read("presentValue") == CharacterString("")
    assert serial.read("statusFlags") == [0, 0, 0, 1]
    serial.text, serial.has_value = "6600b0940976", True
    assert serial.read("presentValue") == CharacterString("6600b0940976")
    assert serial.read("statusFlags") == [0, 0, 0, 0]
    assert serial.reliability == NO_FAULT_DETECTED
    serial.link_down = True  # the sensor went stale: like every other sensor value
    assert serial.reliability == COMMUNICATION_FAILURE
    assert serial.read("statusFlags") == [0, 1, 0, 0]
    assert "covIncrement" not in serial.properties
    assert "units" not in serial.properties


def test_text_objects_are_read_only() -> None:
    serial = texts_of(LORA)["serial_number"]
    with pytest.raises(ExecutionError) as err:
        validate_write(serial, "presentValue", None, None, AnyValue(CharacterString("x")))
    assert err.value.errorCode == "writeAccessDenied"


def test_facts_map_to_text_points() -> None:
    facts = {"sn": "6600b0940976", "firmware_version": "31.7.0.75", "lorawan_class": "A"}
    assert text_values(facts) == {
        "serial_number": "6600b0940976",
        "firmware_version_text": "31.7.0.75",
    }


def test_ede_lists_text_objects_without_cov_and_modbus_leaves_them_out() -> None:
    points = resolve([LORA, POE])
    ede = render_ede(points, device_instance=121000, device_name="GW", project="t")
    rows = [r for r in csv.reader(io.StringIO(ede), delimiter=";") if r and r[0][0] != "#"]
    texts = {r[0]: r for r in rows if len(r) > 15 and r[3] == "40"}
    assert set(texts) == {f"hall.{k}" for k in TEXT_KEYS} | {"foyer.serial_number"}
    for key, row in texts.items():
        assert row[10] == "N", key  # not COV-capable
        assert row[9] == "N", key  # not writable
        assert row[14] == "", key  # no units
        assert row[15] == "", key  # no Modbus address
    register_map = render_modbus_csv(points, "big")
    assert not any(k in register_map for k in TEXT_KEYS)
