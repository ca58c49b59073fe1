"""BACnet objects, write validation, COV criteria and persistence, without a network."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.errors import ExecutionError
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Enumerated, Null, Real, Unsigned

from gateway.bacnet.cov import CovManager
from gateway.bacnet.device import database_revision, object_set_digest
from gateway.bacnet.objects import (
    COMMUNICATION_FAILURE,
    NO_FAULT_DETECTED,
    UNRELIABLE_OTHER,
    PointObject,
    build_objects,
    served_properties,
)
from gateway.bacnet.writes import commit_write, effective_value, validate_write
from objects.catalog import Model, ObjectType, Point, Source
from objects.pointmap import ResolvedPoint, SensorSpec, resolve

SPEC = SensorSpec(id="lobby", name="Lobby", number=1, model=Model.VS121, region_count=2)


def objects_by_key() -> dict[str, PointObject]:
    return {o.point.key: o for o in build_objects(resolve([SPEC])) if o.point.sensor_id}


def synthetic(point: Point, key: str, instance: int) -> PointObject:
    """A point type the catalog does not have yet (a threshold AV, a relay BO)."""
    resolved = ResolvedPoint(
        sensor_id="lobby",
        sensor_number=1,
        key=key,
        region=None,
        point=point,
        name=f"Lobby {key}",
        description=point.description,
        instance=instance,
        cov_increment=point.cov_increment,
        modbus_address=None,
    )
    return build_objects([resolved])[0]


THRESHOLD = Point(
    "threshold",
    "{sensor} Threshold",
    ObjectType.ANALOG_VALUE,
    900,
    "People above which the room counts as crowded",
    None,
    cov_increment=1,
    writable=True,
    source=Source.COMMAND,
    minimum=0,
    maximum=100,
)
RELAY = Point(
    "relay",
    "{sensor} Relay",
    ObjectType.BINARY_OUTPUT,
    900,
    "Overcrowding relay",
    None,
    writable=True,
    source=Source.COMMAND,
)


def code_of(obj: PointObject, value: Any, *, attr: str = "presentValue", **kw: Any) -> str:
    try:
        validate_write(obj, attr, kw.get("index"), kw.get("priority"), AnyValue(value))
    except ExecutionError as err:
        return str(err.errorCode)
    return "ok"


# -- properties and reliability ---------------------------------------------------------------


def test_each_type_serves_the_standard_properties() -> None:
    objs = objects_by_key()
    assert "units" in objs["people_count_all"].properties
    assert "covIncrement" in objs["people_count_all"].properties
    assert "polarity" in objs["region_1"].properties
    assert "units" not in objs["region_1"].properties
    assert "priorityArray" not in objs["reset_counts"].properties  # not commandable
    assert "covIncrement" not in objs["last_report"].properties
    threshold = synthetic(THRESHOLD, "threshold", 1900)
    assert {"minPresValue", "maxPresValue"} <= set(threshold.properties)
    relay = synthetic(RELAY, "relay", 1900)
    assert {"priorityArray", "relinquishDefault", "currentCommandPriority"} <= set(relay.properties)
    assert served_properties(threshold.point)[:3] == (
        "objectIdentifier",
        "objectName",
        "objectType",
    )


def test_reliability_rules() -> None:
    objs = objects_by_key()
    for obj in objs.values():
        obj.link_down = True  # before the first report
    assert objs["people_count_all"].reliability == COMMUNICATION_FAILURE
    assert objs["gateway_total_in"].reliability == COMMUNICATION_FAILURE
    assert objs["online"].reliability == UNRELIABLE_OTHER  # no value computed yet
    assert objs["reset_counts"].reliability == NO_FAULT_DETECTED  # a command is never stale
    for key in ("online", "status", "seconds_since_report", "last_report"):
        objs[key].has_value = True
        assert objs[key].reliability == NO_FAULT_DETECTED, key

    for obj in objs.values():
        obj.link_down = False
    # Never sent by this sensor: not current, but no fault (no flood of BMS alarms on day one).
    count = objs["people_count_all"]
    assert count.reliability == NO_FAULT_DETECTED
    assert count.out_of_service is True
    assert count.read("statusFlags") == [0, 0, 0, 1]
    assert count.read("outOfService") == 1
    count.has_value = True
    assert count.reliability == NO_FAULT_DETECTED
    assert count.fault is False
    assert count.read("outOfService") == 0
    # No longer sent (the reporting type changed): the same.
    count.not_reported = True
    assert count.read("statusFlags") == [0, 0, 0, 1]
    assert count.fault is False
    count.link_down = True  # and once the sensor is stale, a communication failure as well
    assert count.reliability == COMMUNICATION_FAILURE


def test_read_errors_look_like_a_device() -> None:
    obj = objects_by_key()["people_count_all"]
    with pytest.raises(ExecutionError) as err:
        obj.read("polarity")
    assert err.value.errorCode == "unknownProperty"
    with pytest.raises(ExecutionError) as err:
        obj.read("presentValue", 1)
    assert err.value.errorCode == "propertyIsNotAnArray"
    with pytest.raises(ExecutionError) as err:
        obj.read("propertyList", 99)
    assert err.value.errorCode == "invalidArrayIndex"
    assert obj.read("propertyList", 0) == len(obj.properties) - 4


# -- writes -----------------------------------------------------------------------------------


def test_analog_writes_check_type_and_catalog_range() -> None:
    threshold = synthetic(THRESHOLD, "threshold", 1900)
    assert code_of(threshold, Real(50.0)) == "ok"
    assert code_of(threshold, Real(0.0)) == "ok"
    assert code_of(threshold, Real(100.0)) == "ok"
    assert code_of(threshold, Real(100.5)) == "valueOutOfRange"
    assert code_of(threshold, Real(-1.0)) == "valueOutOfRange"
    assert code_of(threshold, Real(float("nan"))) == "valueOutOfRange"
    assert code_of(threshold, Real(float("inf"))) == "valueOutOfRange"
    assert code_of(threshold, Unsigned(5)) == "invalidDataType"
    assert code_of(threshold, Enumerated(1)) == "invalidDataType"
    assert code_of(threshold, Null(())) == "invalidDataType"
    assert code_of(threshold, Real(5.0), attr="covIncrement") == "writeAccessDenied"
    assert code_of(threshold, Real(5.0), attr="maxPresValue") == "writeAccessDenied"
    assert code_of(threshold, Real(5.0), attr="polarity") == "unknownProperty"
    write = validate_write(threshold, "presentValue", None, None, AnyValue(Real(42.0)))
    commit_write(threshold, write, momentary=False)
    assert threshold.present() == 42.0


def test_commandable_writes_use_the_priority_array() -> None:
    relay = synthetic(RELAY, "relay", 1900)
    assert code_of(relay, Enumerated(1), priority=6) == "writeAccessDenied"  # min on/off slot
    assert code_of(relay, Enumerated(1), priority=0) == "parameterOutOfRange"
    assert code_of(relay, Enumerated(1), priority=17) == "parameterOutOfRange"
    assert code_of(relay, Enumerated(2), priority=8) == "valueOutOfRange"

    at8 = validate_write(relay, "presentValue", None, 8, AnyValue(Enumerated(1)))
    assert effective_value(relay, at8) == 1
    commit_write(relay, at8, momentary=False)
    at16 = validate_write(relay, "presentValue", None, None, AnyValue(Enumerated(0)))
    assert at16.priority == 16  # no priority given: the lowest
    assert effective_value(relay, at16) == 1  # priority 8 still wins
    commit_write(relay, at16, momentary=False)
    assert relay.command_priority() == 8
    release = validate_write(relay, "presentValue", None, 8, AnyValue(Null(())))
    assert effective_value(relay, release) == 0
    commit_write(relay, release, momentary=False)
    assert relay.command_priority() == 16
    assert relay.read("priorityArray", 16) is not None


# -- COV --------------------------------------------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> None:
        self.requests.append(request)

    def values(self) -> list[float]:
        return [float(r.listOfValues[0].value.cast_out(Real)) for r in self.requests]


@pytest.mark.asyncio
async def test_cov_increment_is_measured_from_the_last_notification() -> None:
    sent = Sent()
    obj = objects_by_key()["people_count_all"]
    obj.has_value = True
    cov = CovManager(sent, ("device", 1), lambda oid: obj, None)
    sub = cov.subscribe(
        Address("127.0.0.1:47809"),
        1,
        obj,
        prop="presentValue",
        index=None,
        confirmed=False,
        lifetime=60,
        increment=2.0,
    )
    assert sub is not None
    cov.initial(sub, obj)
    for value in (1.0, 1.5, 2.0, 3.5, 0.5, 4.0):
        obj.value = value
        cov.changed(obj)
    assert sent.values() == [0.0, 2.0, 4.0]  # 0 -> 2 (moved 2), 2 -> 4 (moved 2)
    obj.link_down = True  # a fault is reported whatever the value did
    cov.changed(obj)
    assert len(sent.requests) == 4
    cov.close()


@pytest.mark.asyncio
async def test_subscriptions_persist_with_their_remaining_lifetime(tmp_path: Path) -> None:
    objs = {o.identifier: o for o in build_objects(resolve([SPEC]))}
    people = next(o for o in objs.values() if o.point.key == "people_count_all")
    path = tmp_path / "bacnet_cov.json"
    cov = CovManager(Sent(), ("device", 1), objs.get, path)
    address = Address("127.0.0.1:47809")
    for process, lifetime in ((1, 600), (2, 0), (3, 5)):
        cov.subscribe(
            address,
            process,
            people,
            prop=None,
            index=None,
            confirmed=process == 2,
            lifetime=lifetime,
            increment=None,
        )
    await cov.flush()
    cov.close()
    doc = json.loads(path.read_bytes())
    doc["saved_at"] = time.time() - 100  # the gateway was down for 100 s
    sent = Sent()
    resumed = CovManager(sent, ("device", 1), objs.get, path)
    assert resumed.restore(json.dumps(doc).encode()) == 2  # the 5 s one lapsed meanwhile
    by_process = {s.process_id: s for s in resumed.subscriptions()}
    assert set(by_process) == {1, 2}
    assert by_process[2].expires_at is None
    assert by_process[2].confirmed
    assert by_process[1].address == address
    assert len(sent.requests) == 2  # each resumed subscription is told the current values
    left = sent.requests[0].timeRemaining
    assert 495 <= left <= 500
    resumed.close()


# -- database revision ------------------------------------------------------------------------


def test_database_revision_bumps_only_when_the_object_set_changes(tmp_path: Path) -> None:
    first = object_set_digest([("analog-input", 1, "A"), ("binary-input", 2, "B")])
    same = object_set_digest([("binary-input", 2, "B"), ("analog-input", 1, "A")])
    renamed = object_set_digest([("analog-input", 1, "A2"), ("binary-input", 2, "B")])
    assert first == same != renamed
    assert database_revision(tmp_path, first) == 1
    assert database_revision(tmp_path, same) == 1
    assert database_revision(tmp_path, renamed) == 2
    (tmp_path / "bacnet_database.json").write_text("{broken")
    assert database_revision(tmp_path, renamed) == 1  # unreadable: start again, loudly
