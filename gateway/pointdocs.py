"""Point list exports generated from the point map: table, CSV, BACnet EDE and the Modbus map."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from gateway.modbus.layout import readable_blocks
from gateway.modbus.units import (
    MAX_BLOCK_SENSOR,
    MAX_UNIT_BLOCKS_SENSOR,
    MAX_UNIT_ID,
    SENSORS_PER_UNIT,
    image_size,
    placement,
    plan,
)
from gateway.settings import ModbusSection
from objects.catalog import MODBUS_BLOCK, NOTIFICATION_CLASS_WRITABLE, ObjectType, Units
from objects.pointmap import ResolvedPoint, modbus_tables

if TYPE_CHECKING:
    from gateway.settings import Settings

# BACnet enumerations used by the EDE file (ASHRAE 135, BACnetObjectType / BACnetEngineeringUnits).
OBJECT_TYPE_CODES: dict[ObjectType, int] = {
    ObjectType.ANALOG_INPUT: 0,
    ObjectType.ANALOG_VALUE: 2,
    ObjectType.BINARY_INPUT: 3,
    ObjectType.BINARY_OUTPUT: 4,
    ObjectType.BINARY_VALUE: 5,
    ObjectType.DATETIME_VALUE: 44,
    ObjectType.POSITIVE_INTEGER_VALUE: 48,
    ObjectType.CHARACTERSTRING_VALUE: 40,
}
# Object types the gateway serves without COV (see gateway.bacnet.objects.PROFILES).
NO_COV_TYPES = frozenset({ObjectType.DATETIME_VALUE, ObjectType.CHARACTERSTRING_VALUE})
DEVICE_TYPE_CODE = 8
NOTIFICATION_CLASS_TYPE_CODE = 15
UNIT_CODES: dict[Units, int] = {Units.NO_UNITS: 95, Units.SECONDS: 73}

TABLE_PREFIX = {"coil": 0, "discrete": 1, "input": 3, "holding": 4}


def _abbrev(t: ObjectType) -> str:
    return "".join(w[0] for w in t.value.split("-")).upper()


class _Where:
    """Where each point is on Modbus, as the configured addressing mode serves it."""

    def __init__(self, points: Sequence[ResolvedPoint], modbus: ModbusSection | None) -> None:
        self._modbus = modbus
        left = plan(modbus, points).left_out if modbus is not None else []
        self._left = {sid for sid, _ in left}

    def unit_and_address(self, p: ResolvedPoint) -> tuple[int | None, int] | None:
        if p.modbus_address is None or p.sensor_id in self._left:
            return None
        if self._modbus is None:
            return None, p.modbus_address
        return placement(self._modbus, p.sensor_number, p.modbus_address)

    def summary(self, p: ResolvedPoint) -> str:
        where = self.unit_and_address(p)
        if where is None:
            return ""
        unit, address = where
        cells = ",".join(f"{t}:{address}" for t in modbus_tables(p))
        return cells if unit is None else f"unit {unit} {cells}"

    def address(self, p: ResolvedPoint) -> str:
        where = self.unit_and_address(p)
        if where is None:
            return ""
        unit, address = where
        return str(address) if unit is None else f"unit {unit} {address}"


def table_rows(
    points: Sequence[ResolvedPoint], modbus: ModbusSection | None = None
) -> list[list[str]]:
    """One row per point; with `modbus`, Modbus places as that addressing mode serves them
    (a unit id first in the unit modes, nothing for a sensor left off Modbus)."""
    where = _Where(points, modbus)
    rows = [
        ["sensor", "key", "object", "name", "units", "cov", "writable", "modbus", "description"]
    ]
    for p in points:
        rows.append(
            [
                p.sensor_id or "gateway",
                p.key,
                f"{_abbrev(p.object_type)} {p.instance}",
                p.name,
                p.units.value,
                "" if p.cov_increment is None else f"{p.cov_increment:g}",
                "yes" if p.writable else "no",
                where.summary(p),
                p.description,
            ]
        )
    return rows


def render_table(points: Sequence[ResolvedPoint], modbus: ModbusSection | None = None) -> str:
    rows = table_rows(points, modbus)
    shown = [r[:-1] for r in rows]  # descriptions are in the CSV; the table stays readable
    widths = [max(len(r[i]) for r in shown) for i in range(len(shown[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in shown]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def render_csv(points: Sequence[ResolvedPoint], modbus: ModbusSection | None = None) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table_rows(points, modbus))
    return out.getvalue()


def render_ede(
    points: Sequence[ResolvedPoint],
    *,
    device_instance: int,
    device_name: str,
    project: str,
    device_description: str = "",
    today: date | None = None,
    notification_class: int | None = None,
    modbus: ModbusSection | None = None,
) -> str:
    """The BACnet EDE 2.3 engineering-data-exchange file (semicolon CSV) for BMS import. The
    vendor-specific address is the point's Modbus address (with `modbus`: as that addressing
    mode serves it, "unit U A" in the unit modes)."""
    where = _Where(points, modbus)
    stamp = (today or date.today()).isoformat()
    out = io.StringIO()
    w = csv.writer(out, delimiter=";", lineterminator="\n")
    w.writerow(["#Engineering-Data-Exchange - B.I.G.-EU"])
    w.writerow(["PROJECT_NAME", project])
    w.writerow(["VERSION_OF_REFERENCEFILE", "1"])
    w.writerow(["TIMESTAMP_OF_LAST_CHANGE", stamp])
    w.writerow(["AUTHOR_OF_LAST_CHANGE", "vs121-gateway"])
    w.writerow(["VERSION_OF_LAYOUT", "2.3"])
    w.writerow(["#mandatory"] * 5 + ["optional"] * 11)
    w.writerow(
        [
            "# keyname",
            "device obj.-instance",
            "object-name",
            "object-type",
            "object-instance",
            "description",
            "present-value-default",
            "min-present-value",
            "max-present-value",
            "settable",
            "supports COV",
            "hi-limit",
            "low-limit",
            "state-text-reference",
            "unit-code",
            "vendor-specific-address",
        ]
    )
    dev = str(device_instance)
    w.writerow(
        ["device", dev, device_name, DEVICE_TYPE_CODE, dev, device_description]
        + [""] * 4
        + ["N"]
        + [""] * 5
    )
    reporting = any(p.point.alarm_events or p.high_limit is not None for p in points)
    if notification_class is not None and reporting:
        # Where the alarm points' events go (see the description column of those points).
        w.writerow(
            [
                "gateway.notification_class",
                dev,
                f"{device_name} Alarms",
                NOTIFICATION_CLASS_TYPE_CODE,
                notification_class,
                "Where the gateway's overcrowding alarms are sent",
            ]
            + [""] * 3
            + ["Y" if "recipientList" in NOTIFICATION_CLASS_WRITABLE else "N", "N"]
            + [""] * 5
        )
    for p in points:
        analog = p.point.is_analog or p.object_type is ObjectType.POSITIVE_INTEGER_VALUE
        w.writerow(
            [
                f"{p.sensor_id or 'gateway'}.{p.key}",
                dev,
                p.name,
                OBJECT_TYPE_CODES[p.object_type],
                p.instance,
                p.description,
                "",
                "" if p.point.minimum is None else f"{p.point.minimum:g}",
                "" if p.point.maximum is None else f"{p.point.maximum:g}",
                "Y" if p.writable else "N",
                "N" if p.object_type in NO_COV_TYPES else "Y",
                "" if p.high_limit is None else f"{p.high_limit[0]:g}",
                "",
                "",
                UNIT_CODES[p.units] if analog else "",
                where.address(p),
            ]
        )
    return out.getvalue()


def _placement(p: ResolvedPoint, modbus: ModbusSection | None) -> tuple[list[str], int]:
    """(the unit column, if any; the address a request carries) of a point with an address."""
    assert p.modbus_address is not None
    if not _unit_mode(modbus):
        return [], p.modbus_address
    assert modbus is not None
    unit, address = placement(modbus, p.sensor_number, p.modbus_address)
    return [str(unit)], address


def _served(points: Sequence[ResolvedPoint], modbus: ModbusSection | None) -> list[ResolvedPoint]:
    return plan(modbus or ModbusSection(), points).points


def _unit_mode(modbus: ModbusSection | None) -> bool:
    return modbus is not None and modbus.addressing != "blocks"


def modbus_rows(
    points: Sequence[ResolvedPoint], word_order: str, modbus: ModbusSection | None = None
) -> list[list[str]]:
    """Every Modbus point; with `modbus` in unit-per-sensor addressing, a unit column first
    and addresses inside the unit."""
    rows = [
        [
            *(["unit"] if _unit_mode(modbus) else []),
            "address",
            "plc_address",
            "table",
            "width",
            "type",
            "word_order",
            "scale",
            "units",
            "access",
            "name",
            "description",
        ]
    ]
    entries = []
    for p in _served(points, modbus):
        if p.modbus_address is None:
            continue
        for table in modbus_tables(p):
            entries.append((table, p.modbus_address, p))
    order = {"coil": 0, "discrete": 1, "input": 2, "holding": 3}
    entries.sort(key=lambda e: (order[e[0]], e[1]))
    for table, _, p in entries:
        spec = p.point.modbus
        assert spec is not None
        rw = "read/write" if p.writable and table in ("coil", "holding") else "read"
        unit, addr = _placement(p, modbus)
        rows.append(
            [
                *unit,
                str(addr),
                f"{TABLE_PREFIX[table]}{addr + 1:05d}",
                table,
                str(spec.width),
                _modbus_type(table, spec.width, signed=spec.signed),
                word_order if spec.width == 2 else "",
                str(spec.scale),
                p.units.value,
                rw,
                p.name,
                p.description,
            ]
        )
    return rows


def render_modbus_csv(
    points: Sequence[ResolvedPoint], word_order: str, modbus: ModbusSection | None = None
) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(modbus_rows(points, word_order, modbus))
    return out.getvalue()


def _modbus_type(table: str, width: int, *, signed: bool) -> str:
    if table in ("coil", "discrete"):
        return "bit"
    return f"{'int' if signed else 'uint'}{16 * width}"


_WORD_ORDER_TEXT = {
    "high_first": "the high word first (at the lower address)",
    "low_first": "the low word first (at the lower address)",
}


def modbus_block_rows(
    points: Sequence[ResolvedPoint], modbus: ModbusSection | None = None
) -> list[list[str]]:
    """The readable blocks: each reads in full in one request (unused addresses read 0)."""
    unit_mode = _unit_mode(modbus)
    rows = [
        [
            "sensor",
            *(["unit"] if unit_mode else []),
            "table",
            "first",
            "last",
            "plc_first",
            "plc_last",
        ]
    ]
    served = plan(modbus or ModbusSection(), points)
    space = image_size(modbus or ModbusSection(), served.units)
    for b in readable_blocks(served.points, space=space):
        first, last = b.addresses.start, b.addresses.stop - 1
        unit: list[str] = []
        if unit_mode:
            assert modbus is not None
            where, first = placement(modbus, b.sensor_number, first)
            last = first + len(b.addresses) - 1
            unit = [str(where)]
        prefix = TABLE_PREFIX[b.table.value]
        rows.append(
            [
                b.sensor_id or "gateway",
                *unit,
                b.table.value,
                str(first),
                str(last),
                f"{prefix}{first + 1:05d}",
                f"{prefix}{last + 1:05d}",
            ]
        )
    return rows


def _markdown_table(rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows[1:]]
    return lines


def render_modbus_markdown(
    points: Sequence[ResolvedPoint], word_order: str, modbus: ModbusSection | None = None
) -> str:
    """The register map for PLC programmers: the rules, the readable blocks, every point."""
    order_text = _WORD_ORDER_TEXT.get(word_order, word_order)
    cfg = modbus or ModbusSection()
    left_out = plan(cfg, points).left_out
    lines = [
        "# Modbus register map",
        "",
        "- `address` is the 0-based address a request carries; `plc_address` is the 1-based "
        "reference many PLC tools use (prefix 0 coil, 1 discrete input, 3 input register, "
        "4 holding register).",
        "- Register points sit at the same address in the input registers (function 4) and the "
        "holding registers (function 3). Only `read/write` rows accept writes (coils: functions "
        "5 and 15; holding registers: 6 and 16).",
        f"- 32-bit values take two registers, {order_text}; bytes inside a register are "
        "big-endian. A value is round(value * scale), clamped to the type's range (never "
        "wrapped).",
        "- Each block listed under *Readable blocks* can be read whole in one request; an "
        "address inside a block that carries no point for that sensor (a region beyond its "
        "region count, an excluded point, a point of the other model) reads 0.",
        "- Exceptions: 01 unsupported function; 02 any address outside the blocks, a write to a "
        "read-only address or to part of a 32-bit value; 03 a bad quantity or an out-of-range "
        "value; 04 the command behind a write failed.",
        "- A stale sensor keeps its last values: check its status word (bit 0 online, bit 1 "
        "stale, bit 2 never reported) or its online discrete input before using them.",
        "- Broadcasts (unit 0) are neither executed nor answered: a write sent to every device "
        "changes nothing here. A request whose function code has the exception bit set (128-255, "
        "e.g. 0x83) is not a request: it gets no response on TCP or RTU (answering `83 01` "
        "would read as an exception to function 3).",
        "",
        "## Addressing",
        "",
        f'This map uses `modbus.addressing = "{cfg.addressing}"`. The three modes:',
        "",
        "- `blocks` (default): one device. Sensor *n* has its points at *n* x 200 + offset, the "
        "gateway (heartbeat, status, alarm rules) at 0-199. Modbus RTU answers only "
        "`modbus.rtu.unit_id`; Modbus TCP answers every unit id alike. Sensors numbered above "
        f"{MAX_BLOCK_SENSOR} do not fit in the 65536 addresses.",
        "- `unit_per_sensor`: unit id = sensor number (1-247); every unit has the same layout, "
        "the block of a sensor at address 0 (offset). The gateway's block is unit "
        "`modbus.gateway_unit_id` (default 247), at the same addresses as in `blocks`. Modbus "
        "RTU answers exactly these unit ids and stays silent to every other; Modbus TCP answers "
        "others with exception 0B. A read never crosses from one unit's block into another's "
        f"(02). Sensors numbered above {MAX_UNIT_ID} have no unit id.",
        f"- `unit_blocks`: {SENSORS_PER_UNIT} sensors per unit id. Sensor *n* is on unit "
        f"1 + *n* div {SENSORS_PER_UNIT}, at (*n* mod {SENSORS_PER_UNIT}) x {MODBUS_BLOCK} + "
        f"offset: sensor 1234 on unit 13 at {34 * MODBUS_BLOCK} + offset. Unit 1 is the "
        f"`blocks` layout of sensors 1-{SENSORS_PER_UNIT - 1}, with the gateway's block at "
        f"0-199; unit 2 holds sensors {SENSORS_PER_UNIT}-{2 * SENSORS_PER_UNIT - 1} (sensor "
        f"{SENSORS_PER_UNIT} at 0), and so on. Unit 1 and every unit holding a configured "
        "sensor answer; Modbus RTU stays silent to other unit ids, Modbus TCP answers them with "
        "exception 0B. A read never crosses the end of a unit (02). Sensors numbered above "
        f"{MAX_UNIT_BLOCKS_SENSOR} have no unit id.",
        "- Sensors a mode cannot address are a configuration error naming them, unless "
        '`modbus.unaddressable_sensors = "bacnet_only"`: then they are served on BACnet only, '
        "named in one warning at start and listed under *Not on Modbus*. Switching modes moves "
        "addresses; the default mode never moves one.",
        "",
        *(
            [
                "## Not on Modbus",
                "",
                ", ".join(f"{sid} (number {n})" for sid, n in left_out),
                "",
            ]
            if left_out
            else []
        ),
        "## Readable blocks",
        "",
        *_markdown_table(modbus_block_rows(points, modbus)),
        "",
        "## Points",
        "",
        *_markdown_table(modbus_rows(points, word_order, modbus)),
    ]
    return "\n".join(lines) + "\n"


FORMATS = ("table", "csv", "ede", "modbus", "modbus-csv")


def points_text(settings: Settings, fmt: str) -> str:
    """The point list of a configuration in one of `FORMATS`: what `vs121-gateway points`
    prints and the commissioning page offers for download."""
    points = settings.points()
    order = settings.modbus.word_order
    if fmt == "table":
        return render_table(points, settings.modbus)
    if fmt == "csv":
        return render_csv(points, settings.modbus)
    if fmt == "ede":
        return render_ede(
            points,
            device_instance=settings.bacnet.device_instance,
            device_name=settings.bacnet.device_name,
            device_description=settings.bacnet.description,
            project=settings.gateway.name,
            notification_class=settings.bacnet.notification.instance,
            modbus=settings.modbus,
        )
    if fmt == "modbus":
        return render_modbus_markdown(points, order, settings.modbus)
    if fmt == "modbus-csv":
        return render_modbus_csv(points, order, settings.modbus)
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
