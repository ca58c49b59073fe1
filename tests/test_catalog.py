"""Invariants over the whole point catalog and the point map generated from it."""

from __future__ import annotations

import pytest

from gateway.device_settings import SETTING_POINTS
from objects.catalog import (
    BACNET_BLOCK,
    GATEWAY_POINTS,
    MAX_REGIONS,
    MODBUS_BLOCK,
    SENSOR_POINTS,
    ModbusKind,
    Model,
    ObjectType,
    Point,
    Source,
    modbus_block_span,
    points_for,
)
from objects.pointmap import SensorSpec, find_conflicts, resolve, sensor_points

ALL_POINTS = SENSOR_POINTS + GATEWAY_POINTS


def _full(number: int, model: Model, name: str | None = None) -> SensorSpec:
    return SensorSpec(id=f"s{number}", name=name or f"Sensor {number}", number=number, model=model)


@pytest.mark.parametrize("point", ALL_POINTS, ids=lambda p: p.key)
def test_every_analog_point_has_units_and_cov_increment(point: Point) -> None:
    if point.is_analog:
        assert point.cov_increment is not None
        assert point.cov_increment > 0
    assert point.units.value
    assert point.description


@pytest.mark.parametrize("point", ALL_POINTS, ids=lambda p: p.key)
def test_inputs_are_never_writable(point: Point) -> None:
    if point.object_type in (ObjectType.ANALOG_INPUT, ObjectType.BINARY_INPUT):
        assert not point.writable
    if point.writable:
        # A command, or a sensor setting: written as a downlink, read back from the sensor.
        assert point.source is Source.COMMAND or point.key in SETTING_POINTS


def test_per_region_points_carry_the_placeholder() -> None:
    for p in SENSOR_POINTS:
        assert ("{n}" in p.key) == p.per_region, p.key
        assert ("{n}" in p.name) == p.per_region, p.key


@pytest.mark.parametrize("model", [Model.VS121, Model.VS121_P])
def test_full_sensor_block_has_no_conflicts(model: Model) -> None:
    points = resolve([_full(1, model)])
    assert find_conflicts(points) == []
    regions = [p for p in points if p.region is not None and p.key.endswith("_count")]
    assert len(regions) == MAX_REGIONS


def test_many_sensors_have_no_conflicts_and_stay_in_their_blocks() -> None:
    specs = [_full(n, Model.VS121 if n % 2 else Model.VS121_P) for n in range(1, 301)]
    points = resolve(specs)
    assert find_conflicts(points) == []
    for p in points:
        assert p.instance // BACNET_BLOCK == p.sensor_number
        if p.modbus_address is not None:
            assert p.modbus_address // MODBUS_BLOCK == p.sensor_number


def test_a_block_fits_its_modbus_span() -> None:
    assert modbus_block_span() <= MODBUS_BLOCK
    for p in SENSOR_POINTS:
        if p.modbus and p.modbus.kind is ModbusKind.BIT:
            assert p.modbus.offset + (MAX_REGIONS if p.per_region else 1) <= MODBUS_BLOCK


def test_addresses_do_not_depend_on_other_sensors_or_order() -> None:
    alone = {(p.key, p.instance, p.modbus_address) for p in sensor_points(_full(3, Model.VS121))}
    crowd = resolve([_full(7, Model.VS121_P), _full(3, Model.VS121), _full(1, Model.VS121)])
    mine = {(p.key, p.instance, p.modbus_address) for p in crowd if p.sensor_number == 3}
    assert mine == alone


def test_fewer_regions_move_nothing() -> None:
    full = {p.key: (p.instance, p.modbus_address) for p in sensor_points(_full(2, Model.VS121))}
    spec = SensorSpec(id="s2", name="Sensor 2", number=2, model=Model.VS121, region_count=3)
    few = sensor_points(spec)
    assert {p.key for p in few if p.key.startswith("region_4")} == set()
    for p in few:
        assert full[p.key] == (p.instance, p.modbus_address)


def test_known_addresses_are_stable() -> None:
    # The published contract: changing any of these breaks installed BMS and PLC programs.
    by_key = {p.key: p for p in sensor_points(_full(2, Model.VS121))}
    assert (by_key["people_count_all"].instance, by_key["people_count_all"].modbus_address) == (
        2001,
        404,
    )
    assert by_key["region_3_count"].instance == 2103
    assert by_key["region_3_count"].modbus_address == 400 + 24 + 2
    assert by_key["gateway_total_in"].modbus_address == 419
    assert by_key["region_1"].object_type is ObjectType.BINARY_INPUT
    assert by_key["region_1"].modbus_address == 401


def test_model_specific_points() -> None:
    lora = {p.key for p in points_for(Model.VS121)}
    poe = {p.key for p in points_for(Model.VS121_P)}
    assert "dwell_time_avg" in lora
    assert "dwell_time_avg" not in poe
    assert "region_{n}_dwell_time_avg" in poe
    assert "region_{n}_dwell_time_avg" not in lora


def test_overrides_and_exclusions() -> None:
    spec = SensorSpec(
        id="lobby",
        name="Lobby",
        number=1,
        model=Model.VS121,
        region_count=2,
        exclude=frozenset({"a_to_a", "region_{n}"}),
        names={"people_count_all": "Lobby Headcount"},
        cov_increments={"people_count_all": 2.0},
        instances={"people_count_all": 4000000},
    )
    pts = {p.key: p for p in sensor_points(spec)}
    assert "a_to_a" not in pts
    assert "region_1" not in pts
    assert "region_1_count" in pts
    assert pts["people_count_all"].name == "Lobby Headcount"
    assert pts["people_count_all"].cov_increment == 2.0
    assert pts["people_count_all"].instance == 4000000


def test_conflicts_are_named() -> None:
    a = SensorSpec(id="a", name="Same", number=1, model=Model.VS121)
    b = SensorSpec(
        id="b", name="Same", number=2, model=Model.VS121, instances={"people_count_all": 1001}
    )
    problems = find_conflicts(resolve([a, b]))
    assert any("analog-input 1001 already used by a.people_count_all" in p for p in problems)
    assert any("object name 'Same People Count' already used" in p for p in problems)


def test_modbus_range_is_checked() -> None:
    problems = find_conflicts(resolve([_full(400, Model.VS121)]))
    assert any("beyond 65535" in p for p in problems)
