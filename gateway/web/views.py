"""The page's data, read from the running gateway: plain rows the templates lay out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.bacnet.objects import LINK_HEALTH_KEYS
from gateway.modbus.units import on_modbus, placement
from gateway.pointdocs import TABLE_PREFIX
from gateway.relay.logic import AUTOMATIC_LEVEL, OVERRIDE_LEVEL
from objects.catalog import ObjectType, Source
from objects.pointmap import ResolvedPoint, modbus_tables

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.settings import ModbusSection

REGION_KEY_PREFIX = "region_"


@dataclass(frozen=True, slots=True)
class SensorRow:
    id: str
    name: str
    model: str
    state: str  # "online", "stale" or "never"
    last_report: float | None  # unix time
    age: int | None  # seconds since the last report
    people: float | None
    regions: tuple[int, ...]  # occupied regions
    total_in: float | None
    total_out: float | None
    decode_errors: int
    duplicates: int

    @property
    def state_text(self) -> str:
        return {"online": "Online", "stale": "Stale", "never": "Never reported"}[self.state]


def sensor_rows(gw: Gateway, ids: Sequence[str] | None = None) -> list[SensorRow]:
    now = time.time()
    m = gw.metrics
    rows = []
    for cfg in gw.settings.sensors:
        if ids is not None and cfg.id not in ids:
            continue
        s = gw.state.sensors[cfg.id]
        v = s.values
        if s.last_report is None:
            state, age = "never", None
        else:
            state = "online" if s.online else "stale"
            age = max(0, int(now - s.last_report))
        regions = tuple(
            n for n in range(1, cfg.region_count + 1) if v.get(f"{REGION_KEY_PREFIX}{n}") == 1
        )
        rows.append(
            SensorRow(
                id=cfg.id,
                name=cfg.name,
                model=cfg.model.upper(),
                state=state,
                last_report=s.last_report,
                age=age,
                people=v.get("people_count_all"),
                regions=regions,
                total_in=v.get("gateway_total_in"),
                total_out=v.get("gateway_total_out"),
                decode_errors=int(m.decode_errors.value(sensor=cfg.id)),
                duplicates=int(m.duplicates.value(sensor=cfg.id)),
            )
        )
    return rows


def abbrev(t: ObjectType) -> str:
    return "".join(w[0] for w in t.value.split("-")).upper()


@dataclass(frozen=True, slots=True)
class PointRow:
    sensor: str  # sensor id, "gateway", or the alarm rule's id
    key: str
    name: str
    object_type: str
    bacnet: str  # "AI 1001"
    modbus: str  # "holding 4:40101" etc.
    units: str
    writable: bool
    value: str
    reliability: str
    description: str

    @property
    def search_text(self) -> str:
        return f"{self.sensor} {self.key} {self.name} {self.bacnet} {self.modbus}".lower()


def search_text(p: ResolvedPoint, modbus: ModbusSection | None = None) -> str:
    """What the points search matches, as `PointRow.search_text` (without building the row)."""
    owner = p.sensor_id or p.rule or "gateway"
    where = _modbus_text(p, modbus)
    return f"{owner} {p.key} {p.name} {abbrev(p.object_type)} {p.instance} {where}".lower()


def _modbus_text(p: ResolvedPoint, modbus: ModbusSection | None = None) -> str:
    """Where a PLC reads the point, as the configured addressing mode serves it."""
    if p.modbus_address is None:
        return ""
    unit, address = None, p.modbus_address
    if modbus is not None:
        if not on_modbus(modbus, p.sensor_number):
            return ""
        unit, address = placement(modbus, p.sensor_number, p.modbus_address)
    text = ", ".join(
        f"{t} {address} ({TABLE_PREFIX[t]}{address + 1:05d})" for t in modbus_tables(p)
    )
    return text if unit is None else f"unit {unit}: {text}"


def _format_value(p: ResolvedPoint, value: float | None) -> str:
    if value is None:
        return ""
    if p.object_type in (
        ObjectType.BINARY_INPUT,
        ObjectType.BINARY_VALUE,
        ObjectType.BINARY_OUTPUT,
    ):
        return "active" if value else "inactive"
    if p.object_type is ObjectType.DATETIME_VALUE:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _text_of(gw: Gateway, p: ResolvedPoint) -> str | None:
    """A text point's value (device facts are not in the state): what BACnet serves."""
    if p.object_type is not ObjectType.CHARACTERSTRING_VALUE or gw.bacnet is None:
        return None
    obj = gw.bacnet.object_for(p.sensor_id, p.key)
    return obj.text if obj is not None and obj.has_value else None


def point_rows(gw: Gateway, points: Sequence[ResolvedPoint]) -> list[PointRow]:
    rows = []
    statuses: dict[str, dict[str, str]] = {}  # per sensor, computed once per page
    for p in points:
        status = None
        key = p.point.value_of or p.key  # an exact twin shows the value it mirrors, as BACnet
        if p.sensor_id:
            s = gw.state.sensors.get(p.sensor_id)
            value = None if s is None else s.values.get(key)
            online = s is not None and s.online
            if s is not None:
                if p.sensor_id not in statuses:
                    statuses[p.sensor_id] = gw.state.point_status(p.sensor_id)
                status = statuses[p.sensor_id].get(key)
        else:
            value = gw.state.gateway_values.get(key)
            online = True
        text = _text_of(gw, p)
        needs_link = bool(p.sensor_id) and p.key not in LINK_HEALTH_KEYS
        needs_link = needs_link and p.point.source is not Source.COMMAND
        # As BACnet shows it: a sensor value never or no longer reported is out of service
        # (no fault); any other value without data is unreliable.
        unsent = status in ("not-reported", "never-reported") or (
            value is None and text is None and p.point.source is Source.SENSOR
        )
        if needs_link and not online:
            reliability = "communication-failure"
        elif unsent:
            reliability = "out-of-service"
        elif value is None and text is None and p.point.source is not Source.COMMAND:
            reliability = "unreliable-other"
        else:
            reliability = "no-fault-detected"
        rows.append(
            PointRow(
                sensor=p.sensor_id or p.rule or "gateway",
                key=p.key,
                name=p.name,
                object_type=p.object_type.value,
                bacnet=f"{abbrev(p.object_type)} {p.instance}",
                modbus=_modbus_text(p, gw.settings.modbus),
                units="" if p.units.value == "noUnits" else p.units.value,
                writable=p.writable,
                value=_format_value(p, value) if text is None else text,
                reliability=reliability,
                description=p.description,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class AlarmRow:
    id: str
    name: str
    sensors: tuple[str, ...]
    trigger: str
    state: str  # "alarm", "normal" or "no data"
    measured: float | None
    threshold: float
    configured_threshold: float
    hysteresis: float
    relay_active: bool
    contact_closed: bool
    output: str
    output_fault: bool
    control: str  # who decides the relay
    override: str  # "none", "active" or "inactive" at priority 8
    levels: tuple[tuple[int, str], ...]  # operator levels holding a command


def alarm_rows(gw: Gateway) -> list[AlarmRow]:
    rows = []
    snap = gw.relay.snapshot()
    for rule_id, rule in gw.relay.rules.items():
        info = snap[rule_id]
        level = rule.slots.level()
        if level is None:
            control = "Nobody (all levels relinquished)"
        elif level == AUTOMATIC_LEVEL:
            control = "Automatic (the alarm, priority 16)"
        elif level == OVERRIDE_LEVEL:
            control = "Operator override (priority 8)"
        else:
            control = f"Operator override (priority {level})"
        slot = rule.slots.slots[OVERRIDE_LEVEL - 1]
        override = "none" if slot is None else ("active" if slot else "inactive")
        levels = tuple(
            (n, "active" if v else "inactive")
            for n, v in enumerate(rule.slots.slots, start=1)
            if v is not None and n != AUTOMATIC_LEVEL
        )
        closed = bool(info["energised"]) if info["energised"] is not None else False
        rows.append(
            AlarmRow(
                id=rule_id,
                name=rule.cfg.name,
                sensors=tuple(rule.cfg.sensors),
                trigger="total" if rule.cfg.trigger == "total" else "any one region",
                state="no data" if info["stale"] else ("alarm" if info["alarm"] else "normal"),
                measured=info["measured"],
                threshold=float(info["threshold"]),
                configured_threshold=float(rule.cfg.threshold),
                hysteresis=float(rule.cfg.hysteresis),
                relay_active=bool(info["relay"]),
                contact_closed=closed,
                output=rule.worker.driver.description,
                output_fault=bool(info["fault"]),
                control=control,
                override=override,
                levels=levels,
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    name: str
    version: str
    uptime: int
    bacnet: str
    bacnet_device: str
    foreign: str
    mqtt: str
    modbus: str
    modbus_requests: tuple[tuple[str, str, int], ...]
    state_dir: str
    queue_depth: str
    http: str
    sensors_online: int
    sensors_total: int


def gateway_info(gw: Gateway) -> GatewayInfo:
    cfg = gw.settings
    if gw.bacnet is not None:
        bacnet = f"serving on {cfg.bacnet.address} port {cfg.bacnet.port}"
        device = f"device {cfg.bacnet.device_instance} “{cfg.bacnet.device_name}”"
        registered = gw.bacnet.fd_registered
        bbmd = cfg.bacnet.bbmd
        if registered is None or bbmd is None:
            foreign = "not configured (no BBMD)"
        else:
            where = f"{bbmd.address}:{bbmd.port}, TTL {bbmd.ttl} s"
            foreign = f"registered with {where}" if registered else f"NOT registered ({where})"
    else:
        bacnet, device, foreign = "disabled", "", "not configured"
    if gw.mqtt is not None:
        mqtt = f"{'connected to' if gw.mqtt.connected else 'DISCONNECTED from'} "
        mqtt += f"{cfg.mqtt.host}:{cfg.mqtt.port}"
        depth = str(gw.mqtt.depth())
    else:
        mqtt, depth = "disabled", "0 (no MQTT source)"
    parts = []
    if cfg.modbus.tcp.enabled:
        parts.append(f"TCP on {cfg.modbus.tcp.host}:{cfg.modbus.tcp.port}")
    if cfg.modbus.rtu.enabled:
        parts.append(f"RTU on {cfg.modbus.rtu.port}, unit {cfg.modbus.rtu.unit_id}")
    requests = tuple(
        (labels[0], labels[1], int(value))
        for _, labels, value in sorted(gw.metrics.modbus_requests.samples(), key=lambda s: s[1])
    )
    scheme = "https" if cfg.http.tls_cert_file else "http"
    online = sum(1 for s in gw.state.sensors.values() if s.online)
    return GatewayInfo(
        name=cfg.gateway.name,
        version=__version__,
        uptime=int(gw.state.gateway_values.get("uptime", 0)),
        bacnet=bacnet,
        bacnet_device=device,
        foreign=foreign,
        mqtt=mqtt,
        modbus=", ".join(parts) or "disabled",
        modbus_requests=requests,
        state_dir=str(cfg.gateway.state_dir.resolve()),
        queue_depth=depth,
        http=f"{scheme}://{cfg.http.host}:{cfg.http.port}",
        sensors_online=online,
        sensors_total=len(gw.state.sensors),
    )


def duration(seconds: float | None) -> str:
    """A short human duration: 42 s, 5 min 3 s, 2 h 10 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def number(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:g}" if isinstance(v, float) else str(v)
