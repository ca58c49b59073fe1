"""Where every point sits on Modbus, and which address ranges answer at all.

Derived only from the resolved point map, so the server and the published register map (see
`gateway.pointdocs`) cannot disagree.

Readable blocks: PLC programs like to read a sensor's whole block in one request, so each
configured sensor (and the gateway) answers over the full span its catalog template could use in
a table, not only at the addresses its own points occupy. Inside such a block an address that
carries no point for this sensor (a region beyond its region_count, an excluded point, a point of
the other model) reads 0. Addresses outside every block answer exception 02. The register span of
a sensor block is 129 registers: the first 125 (every measured value, the settings and the radio
link) come in one read, the daily totals at 125-128 in a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from objects.catalog import (
    GATEWAY_POINTS,
    MAX_REGIONS,
    MODBUS_BLOCK,
    RULE_MODBUS_STRIDE,
    RULE_POINTS,
    SENSOR_POINTS,
    ModbusKind,
    Point,
)
from objects.pointmap import ResolvedPoint

ADDRESS_SPACE = 65536


class Table(StrEnum):
    """The four Modbus data tables (names as in the published map)."""

    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"


BIT_TABLES = (Table.COIL, Table.DISCRETE)
REGISTER_TABLES = (Table.INPUT, Table.HOLDING)


def tables_of(point: Point) -> tuple[Table, ...]:
    """The tables a catalog point appears in: registers are mirrored in input and holding."""
    if point.modbus is None:
        return ()
    if point.modbus.kind is ModbusKind.REGISTER:
        return REGISTER_TABLES
    return (Table.COIL,) if point.writable else (Table.DISCRETE,)


@dataclass(frozen=True, slots=True)
class Cell:
    """One resolved point's place in one table."""

    table: Table
    address: int
    point: ResolvedPoint

    @property
    def width(self) -> int:
        return self.point.modbus_width

    @property
    def end(self) -> int:
        return self.address + self.width


def cells(points: Iterable[ResolvedPoint]) -> list[Cell]:
    """Every (table, address) placement of the given points."""
    out: list[Cell] = []
    for rp in points:
        if rp.modbus_address is None:
            continue
        out.extend(Cell(t, rp.modbus_address, rp) for t in tables_of(rp.point))
    return out


def _template_spans(catalog: Sequence[Point]) -> dict[Table, range]:
    """Per table, the offsets a block of this catalog may use (all regions, all models)."""
    lo: dict[Table, int] = {}
    hi: dict[Table, int] = {}
    for p in catalog:
        if p.modbus is None:
            continue
        end = p.modbus.offset + p.modbus.width * (MAX_REGIONS if p.per_region else 1)
        for t in tables_of(p):
            lo[t] = min(lo.get(t, p.modbus.offset), p.modbus.offset)
            hi[t] = max(hi.get(t, end), end)
    return {t: range(lo[t], hi[t]) for t in Table if t in lo}


SENSOR_SPANS = _template_spans(SENSOR_POINTS)
GATEWAY_SPANS = _template_spans(GATEWAY_POINTS)
# An alarm rule answers over its whole stride in each table its points use.
RULE_TABLES = tuple(t for t in Table if t in _template_spans(RULE_POINTS))


@dataclass(frozen=True, slots=True)
class Block:
    """A range of addresses of one table that answers reads (unused addresses read 0)."""

    table: Table
    sensor_id: str  # "" for the gateway, "alarm:<id>" for an alarm rule
    sensor_number: int
    addresses: range


def readable_blocks(points: Sequence[ResolvedPoint], *, space: int = ADDRESS_SPACE) -> list[Block]:
    """The readable blocks for the sensors present in `points`, by table, then address; none
    reaches past `space` (65536, or the larger internal image of unit_blocks addressing)."""
    owners: dict[int, str] = {}
    rules: dict[str, int] = {}  # rule id -> the start of its stride
    for rp in points:
        if rp.rule is not None:
            if rp.modbus_address is not None and rp.point.modbus is not None:
                start = rp.modbus_address - rp.point.modbus.offset
                rules[rp.rule] = min(rules.get(rp.rule, start), start)
            continue
        owners.setdefault(rp.sensor_number, rp.sensor_id)
    blocks: list[Block] = []
    for rule, start in rules.items():
        for table in RULE_TABLES:
            stop = min(start + RULE_MODBUS_STRIDE, space)
            blocks.append(Block(table, f"alarm:{rule}", 0, range(start, stop)))
    for number, sensor_id in owners.items():
        spans = GATEWAY_SPANS if sensor_id == "" else SENSOR_SPANS
        base = number * MODBUS_BLOCK
        for table, span in spans.items():
            start = base + span.start
            stop = min(base + span.stop, space)
            if start < stop:
                blocks.append(Block(table, sensor_id, number, range(start, stop)))
    order = list(Table)
    blocks.sort(key=lambda b: (order.index(b.table), b.addresses.start))
    return blocks
