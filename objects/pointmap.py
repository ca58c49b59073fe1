"""Expands the catalog for the configured sensors into concrete points.

Every sink (BACnet objects, Modbus registers, the EDE file, the register-map docs) reads the
result of `resolve`, so they cannot drift apart. Pure functions, no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from objects import instances
from objects.catalog import (
    BACNET_BLOCK,
    MAX_REGIONS,
    MAX_RULES,
    MODBUS_BLOCK,
    RULE_BACNET_STRIDE,
    RULE_MODBUS_BASE,
    RULE_MODBUS_STRIDE,
    ModbusKind,
    Model,
    ObjectType,
    Point,
    Units,
    points_for,
)
from objects.instances import rule_bacnet_base

GATEWAY_NUMBER = 0
MAX_BACNET_INSTANCE = instances.MAX_BACNET_INSTANCE
MAX_MODBUS_ADDRESS = 65_535

# A commandable point's priority array travels in the state next to its present value, as one
# number under `priority_array_key(key)`: for level L (1..16), bit 2(L-1) says the slot holds a
# command and bit 2(L-1)+1 is that command (1 active). The gateway's command logic owns the
# array; BACnet mirrors it.
PRIORITY_LEVELS = 16
_PRIORITY_ARRAY_SUFFIX = ".priority_array"


def priority_array_key(key: str) -> str:
    return key + _PRIORITY_ARRAY_SUFFIX


def priority_array_owner(key: str) -> str | None:
    """The point key whose priority array `key` carries, or None for an ordinary key."""
    return key[: -len(_PRIORITY_ARRAY_SUFFIX)] if key.endswith(_PRIORITY_ARRAY_SUFFIX) else None


def encode_priority_array(slots: Sequence[bool | None]) -> int:
    if len(slots) != PRIORITY_LEVELS:
        raise ValueError(f"a priority array has {PRIORITY_LEVELS} slots, not {len(slots)}")
    code = 0
    for i, slot in enumerate(slots):
        if slot is not None:
            code |= (1 | (2 if slot else 0)) << (2 * i)
    return code


def decode_priority_array(code: float) -> list[bool | None]:
    bits = int(code)
    return [
        None if not (bits >> (2 * i)) & 1 else bool((bits >> (2 * i + 1)) & 1)
        for i in range(PRIORITY_LEVELS)
    ]


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """What the point map needs to know about one configured sensor."""

    id: str
    name: str
    number: int
    model: Model
    region_count: int = MAX_REGIONS
    exclude: frozenset[str] = frozenset()  # point keys; a template key ("region_{n}") drops all
    names: Mapping[str, str] = field(default_factory=dict)  # expanded key -> object name
    cov_increments: Mapping[str, float] = field(default_factory=dict)
    instances: Mapping[str, int] = field(default_factory=dict)  # expanded key -> instance
    # Expanded key -> (high limit, deadband) for points whose catalog entry has limit_events.
    high_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What the point map needs to know about one overcrowding alarm rule."""

    id: str
    name: str
    number: int  # 1..MAX_RULES: places the rule's points (see objects.catalog)


@dataclass(frozen=True, slots=True)
class ResolvedPoint:
    """One concrete point of one sensor (or of the gateway, sensor_number 0)."""

    sensor_id: str
    sensor_number: int
    key: str
    region: int | None
    point: Point
    name: str
    description: str
    instance: int
    cov_increment: float | None
    modbus_address: int | None
    rule: str | None = None  # the alarm rule's id, for a rule's point (sensor_id is then "")
    high_limit: tuple[float, float] | None = None  # (limit, deadband): reports events

    @property
    def object_type(self) -> ObjectType:
        return self.point.object_type

    @property
    def units(self) -> Units:
        return self.point.units

    @property
    def writable(self) -> bool:
        return self.point.writable

    @property
    def modbus_kind(self) -> ModbusKind | None:
        return self.point.modbus.kind if self.point.modbus else None

    @property
    def modbus_width(self) -> int:
        return self.point.modbus.width if self.point.modbus else 0


def _expand(point: Point, region_count: int) -> Iterable[tuple[str, int | None]]:
    if not point.per_region:
        yield point.key, None
        return
    for n in range(1, min(region_count, MAX_REGIONS) + 1):
        yield point.key.format(n=n), n


def _resolve_one(
    spec_id: str,
    display: str,
    number: int,
    point: Point,
    *,
    key: str,
    region: int | None,
    spec: SensorSpec | None,
    bacnet_block: int = BACNET_BLOCK,
) -> ResolvedPoint:
    step = 0 if region is None else region - 1
    fmt = {"sensor": display, "n": region if region is not None else ""}
    name = point.name.format(**fmt)
    instance = number * bacnet_block + point.bacnet_offset + step
    cov = point.cov_increment
    if spec is not None:
        name = spec.names.get(key, name)
        instance = spec.instances.get(key, instance)
        cov = spec.cov_increments.get(key, cov)
    limit = None
    if spec is not None and point.limit_events:
        limit = spec.high_limits.get(key)
    address = None
    if point.modbus is not None:
        address = number * MODBUS_BLOCK + point.modbus.offset + step * point.modbus.width
    return ResolvedPoint(
        sensor_id=spec_id,
        sensor_number=number,
        key=key,
        region=region,
        point=point,
        name=name,
        description=point.description.format(**fmt),
        instance=instance,
        cov_increment=cov,
        modbus_address=address,
        high_limit=limit,
    )


def gateway_points(device_name: str = "Gateway") -> list[ResolvedPoint]:
    """The gateway's own points (heartbeat, uptime, ...), at sensor number 0."""
    return [
        _resolve_one("", device_name, GATEWAY_NUMBER, p, key=p.key, region=None, spec=None)
        for p in points_for(Model.GATEWAY)
    ]


_HOLE = "\x00"  # where the sensor's name goes in a name template


@dataclass(frozen=True, slots=True)
class _Template:
    """One expanded point of a sensor shape, all but the sensor's own parts worked out."""

    key: str
    region: int | None
    point: Point
    name_parts: tuple[str, ...]  # joined with the sensor's display name
    description: str
    bacnet_offset: int
    modbus_offset: int | None


@functools.lru_cache(maxsize=64)
def _templates(model: Model, region_count: int, exclude: frozenset[str]) -> tuple[_Template, ...]:
    """The expanded points of every sensor of this shape: at site scale thousands of sensors
    share a handful of shapes, so names and keys are formatted once, not once per sensor."""
    out = []
    for point in points_for(model):
        if point.key in exclude:
            continue
        for key, region in _expand(point, region_count):
            if key in exclude:
                continue
            step = 0 if region is None else region - 1
            n = "" if region is None else region
            spec = point.modbus
            out.append(
                _Template(
                    key=key,
                    region=region,
                    point=point,
                    name_parts=tuple(point.name.format(sensor=_HOLE, n=n).split(_HOLE)),
                    description=point.description.format(sensor=_HOLE, n=n),
                    bacnet_offset=point.bacnet_offset + step,
                    modbus_offset=None if spec is None else spec.offset + step * spec.width,
                )
            )
    return tuple(out)


def sensor_keys(spec: SensorSpec) -> tuple[tuple[str, Point], ...]:
    """(key, catalog point) of every point of one sensor, without resolving them: what the
    state needs, one tuple shared by every sensor of the same shape."""
    return _keys_of(spec.model, spec.region_count, spec.exclude)


@functools.lru_cache(maxsize=64)
def _keys_of(
    model: Model, region_count: int, exclude: frozenset[str]
) -> tuple[tuple[str, Point], ...]:
    return tuple((t.key, t.point) for t in _templates(model, region_count, exclude))


def sensor_points(spec: SensorSpec, *, bacnet_block: int = BACNET_BLOCK) -> list[ResolvedPoint]:
    """All points of one sensor, honouring its exclusions and overrides; `bacnet_block` is the
    instance block size (``bacnet.instance_block``, see `objects.instances`)."""
    sid, display, number = spec.id, spec.name, spec.number
    first_instance = number * bacnet_block
    first_address = number * MODBUS_BLOCK
    overridden = bool(spec.names or spec.instances or spec.cov_increments or spec.high_limits)
    out: list[ResolvedPoint] = []
    for t in _templates(spec.model, spec.region_count, spec.exclude):
        point, key = t.point, t.key
        name = display.join(t.name_parts)
        instance = first_instance + t.bacnet_offset
        cov = point.cov_increment
        limit = None
        if overridden:
            name = spec.names.get(key, name)
            instance = spec.instances.get(key, instance)
            cov = spec.cov_increments.get(key, cov)
            if point.limit_events:
                limit = spec.high_limits.get(key)
        address = None if t.modbus_offset is None else first_address + t.modbus_offset
        out.append(
            ResolvedPoint(
                sid,
                number,
                key,
                t.region,
                point,
                name,
                t.description,
                instance,
                cov,
                address,
                None,
                limit,
            )
        )
    return out


def rule_points(rule: RuleSpec, *, bacnet_block: int = BACNET_BLOCK) -> list[ResolvedPoint]:
    """The points of one alarm rule at the rule's own stride: in the gateway's block with the
    default instance block, at the top of the instance range with any other."""
    if not 1 <= rule.number <= MAX_RULES:
        raise ValueError(f"alarm rule {rule.id!r}: number {rule.number} outside 1..{MAX_RULES}")
    bacnet_base = rule_bacnet_base(bacnet_block) + (rule.number - 1) * RULE_BACNET_STRIDE
    modbus_base = RULE_MODBUS_BASE + (rule.number - 1) * RULE_MODBUS_STRIDE
    out = []
    for point in points_for(Model.ALARM):
        out.append(
            ResolvedPoint(
                sensor_id="",
                sensor_number=GATEWAY_NUMBER,
                key=point.key.format(r=rule.number),
                region=None,
                point=point,
                name=point.name.format(rule=rule.name),
                description=point.description.format(rule=rule.name),
                instance=bacnet_base + point.bacnet_offset,
                cov_increment=point.cov_increment,
                modbus_address=None if point.modbus is None else modbus_base + point.modbus.offset,
                rule=rule.id,
            )
        )
    return out


def resolve(
    sensors: Sequence[SensorSpec],
    *,
    with_gateway: bool = True,
    rules: Sequence[RuleSpec] = (),
    bacnet_block: int = BACNET_BLOCK,
) -> list[ResolvedPoint]:
    """Every point the gateway serves for these sensors (and alarm rules), gateway points
    first, then the rules, then the sensors."""
    out = gateway_points() if with_gateway else []
    for rule in sorted(rules, key=lambda r: r.number):
        out.extend(rule_points(rule, bacnet_block=bacnet_block))
    for spec in sorted(sensors, key=lambda s: s.number):
        out.extend(sensor_points(spec, bacnet_block=bacnet_block))
    return out


def modbus_tables(rp: ResolvedPoint) -> tuple[str, ...]:
    """The Modbus tables a point appears in (registers are mirrored in input and holding)."""
    kind = rp.modbus_kind
    if kind is ModbusKind.REGISTER:
        return ("input", "holding")
    if kind is ModbusKind.BIT:
        return ("coil",) if rp.writable else ("discrete",)
    return ()


def find_conflicts(points: Sequence[ResolvedPoint], *, modbus: bool = True) -> list[str]:
    """Every duplicate BACnet identifier or name, overlapping or out-of-range Modbus address
    (Modbus only with `modbus`: addresses matter only where Modbus is served)."""
    problems: list[str] = []
    seen_ids: dict[tuple[ObjectType, int], ResolvedPoint] = {}
    seen_names: dict[str, ResolvedPoint] = {}
    seen_cells: dict[tuple[str, int], ResolvedPoint] = {}

    def who(rp: ResolvedPoint) -> str:
        if rp.rule is not None:
            return f"alarm {rp.rule}.{rp.key}"
        return f"{rp.sensor_id or 'gateway'}.{rp.key}"

    for rp in points:
        if not 0 <= rp.instance <= MAX_BACNET_INSTANCE:
            problems.append(
                f"{who(rp)}: BACnet instance {rp.instance} outside 0..{MAX_BACNET_INSTANCE}"
            )
        ident = (rp.object_type, rp.instance)
        if ident in seen_ids:
            problems.append(
                f"{who(rp)}: BACnet {rp.object_type} {rp.instance} already used by "
                f"{who(seen_ids[ident])}"
            )
        seen_ids.setdefault(ident, rp)
        if rp.name in seen_names:
            problems.append(
                f"{who(rp)}: object name {rp.name!r} already used by {who(seen_names[rp.name])}"
            )
        seen_names.setdefault(rp.name, rp)
        if rp.modbus_address is None or not modbus:
            continue
        for table in modbus_tables(rp):
            for cell in range(rp.modbus_address, rp.modbus_address + rp.modbus_width):
                if cell > MAX_MODBUS_ADDRESS:
                    problems.append(
                        f"{who(rp)}: Modbus {table} address {cell} beyond {MAX_MODBUS_ADDRESS}"
                    )
                    break
                if (table, cell) in seen_cells:
                    other = seen_cells[(table, cell)]
                    problems.append(
                        f"{who(rp)}: Modbus {table} address {cell} overlaps {who(other)}"
                    )
                    break
                seen_cells[(table, cell)] = rp
    return problems
