"""Point list exports generated from the point map: table, CSV, BACnet EDE and the Modbus map."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date

from objects.catalog import ObjectType, Units
from objects.pointmap import ResolvedPoint, modbus_tables

# BACnet enumerations used by the EDE file (ASHRAE 135, BACnetObjectType / BACnetEngineeringUnits).
OBJECT_TYPE_CODES: dict[ObjectType, int] = {
    ObjectType.ANALOG_INPUT: 0,
    ObjectType.ANALOG_VALUE: 2,
    ObjectType.BINARY_INPUT: 3,
    ObjectType.BINARY_OUTPUT: 4,
    ObjectType.BINARY_VALUE: 5,
    ObjectType.DATETIME_VALUE: 44,
}
DEVICE_TYPE_CODE = 8
UNIT_CODES: dict[Units, int] = {Units.NO_UNITS: 95, Units.SECONDS: 73}

TABLE_PREFIX = {"coil": 0, "discrete": 1, "input": 3, "holding": 4}


def _abbrev(t: ObjectType) -> str:
    return "".join(w[0] for w in t.value.split("-")).upper()


def table_rows(points: Sequence[ResolvedPoint]) -> list[list[str]]:
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
                _modbus_summary(p),
                p.description,
            ]
        )
    return rows


def _modbus_summary(p: ResolvedPoint) -> str:
    if p.modbus_address is None:
        return ""
    return ",".join(f"{t}:{p.modbus_address}" for t in modbus_tables(p))


def render_table(points: Sequence[ResolvedPoint]) -> str:
    rows = table_rows(points)
    shown = [r[:-1] for r in rows]  # descriptions are in the CSV; the table stays readable
    widths = [max(len(r[i]) for r in shown) for i in range(len(shown[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in shown]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def render_csv(points: Sequence[ResolvedPoint]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table_rows(points))
    return out.getvalue()


def render_ede(
    points: Sequence[ResolvedPoint],
    *,
    device_instance: int,
    device_name: str,
    project: str,
    today: date | None = None,
) -> str:
    """The BACnet EDE 2.3 engineering-data-exchange file (semicolon CSV) for BMS import."""
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
        ["device", dev, device_name, DEVICE_TYPE_CODE, dev, "VS121 gateway"]
        + [""] * 4
        + ["N"]
        + [""] * 5
    )
    for p in points:
        analog = p.point.is_analog
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
                "Y" if p.object_type is not ObjectType.DATETIME_VALUE else "N",
                "",
                "",
                "",
                UNIT_CODES[p.units] if analog else "",
                "" if p.modbus_address is None else str(p.modbus_address),
            ]
        )
    return out.getvalue()


def modbus_rows(points: Sequence[ResolvedPoint], word_order: str) -> list[list[str]]:
    rows = [
        [
            "address",
            "plc_address",
            "table",
            "width",
            "word_order",
            "scale",
            "units",
            "access",
            "name",
            "description",
        ]
    ]
    entries = []
    for p in points:
        if p.modbus_address is None:
            continue
        for table in modbus_tables(p):
            entries.append((table, p.modbus_address, p))
    order = {"coil": 0, "discrete": 1, "input": 2, "holding": 3}
    entries.sort(key=lambda e: (order[e[0]], e[1]))
    for table, addr, p in entries:
        spec = p.point.modbus
        assert spec is not None
        rw = "read/write" if p.writable and table in ("coil", "holding") else "read"
        rows.append(
            [
                str(addr),
                f"{TABLE_PREFIX[table]}{addr + 1:05d}",
                table,
                str(spec.width),
                word_order if spec.width == 2 else "",
                str(spec.scale),
                p.units.value,
                rw,
                p.name,
                p.description,
            ]
        )
    return rows


def render_modbus_csv(points: Sequence[ResolvedPoint], word_order: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(modbus_rows(points, word_order))
    return out.getvalue()


def render_modbus_markdown(points: Sequence[ResolvedPoint], word_order: str) -> str:
    rows = modbus_rows(points, word_order)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"
