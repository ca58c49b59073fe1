"""The point catalog: every value the gateway serves, declared once.

BACnet objects, the Modbus register map, the EDE export and the documentation tables are all
generated from these tables (see `objects.pointmap`). Nothing here does I/O.

Addressing is stable by construction: a point's BACnet instance is
``sensor.number * BACNET_BLOCK + bacnet_offset`` and its Modbus address is
``sensor.number * MODBUS_BLOCK + modbus_offset``; neither depends on list order, on which sensors
exist, or on arrival order. The gateway's own points use number 0. A configuration may choose a
smaller BACnet block for large sites (``bacnet.instance_block``, see `objects.instances`); the
Modbus addressing modes place these blocks on unit ids (see `gateway.modbus.units`).

Overcrowding alarm rules (see `gateway.relay`) live inside the gateway's block, which no sensor can
use: rule number r (1..MAX_RULES, set in the configuration) has its points at BACnet instance
``RULE_BACNET_BASE + (r - 1) * RULE_BACNET_STRIDE + bacnet_offset`` and Modbus address
``RULE_MODBUS_BASE + (r - 1) * RULE_MODBUS_STRIDE + modbus_offset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Instance and address blocks per sensor number. Changing either is a breaking change for every
# installed BMS database and PLC program, so they are constants, not settings.
BACNET_BLOCK = 1000
MODBUS_BLOCK = 200
MAX_REGIONS = 16

# Alarm rules: their own stride inside the gateway's block (number 0). Instances 500..699 and
# addresses 100..199 of that block are reserved for them; the gateway's own points stay below.
MAX_RULES = 20
RULE_BACNET_BASE = 500
RULE_BACNET_STRIDE = 10
RULE_MODBUS_BASE = 100
RULE_MODBUS_STRIDE = 5


class Model(StrEnum):
    """Sensor models; GATEWAY is the pseudo-model of the gateway's own points (number 0)."""

    VS121 = "vs121"
    VS121_P = "vs121-p"
    GATEWAY = "gateway"
    ALARM = "alarm"  # an overcrowding alarm rule (numbered separately, in the gateway's block)


class ObjectType(StrEnum):
    """BACnet object types the catalog uses (BACnet's own hyphenated names)."""

    ANALOG_INPUT = "analog-input"
    ANALOG_VALUE = "analog-value"
    BINARY_INPUT = "binary-input"
    BINARY_VALUE = "binary-value"
    BINARY_OUTPUT = "binary-output"
    DATETIME_VALUE = "datetime-value"
    # Unsigned present value: 32-bit totals served exactly (a REAL holds integers up to 2^24).
    POSITIVE_INTEGER_VALUE = "positive-integer-value"
    # Text present value: device facts a BMS shows as they are (serial number, versions).
    CHARACTERSTRING_VALUE = "characterstring-value"


class Units(StrEnum):
    """BACnet engineering units (bacpypes3 spelling) used by the catalog."""

    NO_UNITS = "noUnits"
    SECONDS = "seconds"


class ModbusKind(StrEnum):
    """Where a point appears on Modbus.

    REGISTER points appear at the same address in the input registers (function 4) and in the
    holding registers (function 3), because many PLCs only read holding registers; only writable
    ones accept writes (function 6/16). BIT points are discrete inputs (function 2), or coils
    (functions 1/5/15) when writable.
    """

    REGISTER = "register"
    BIT = "bit"


class Source(StrEnum):
    """Who produces a point's value."""

    SENSOR = "sensor"  # a field of the decoded sensor data
    GATEWAY = "gateway"  # computed or kept by the gateway (totals, status, freshness)
    COMMAND = "command"  # a writable setting or action


@dataclass(frozen=True, slots=True)
class ModbusSpec:
    """A point's Modbus placement inside its sensor's block."""

    kind: ModbusKind
    offset: int
    width: int = 1  # registers; 2 = 32-bit, word order set in the Modbus configuration
    scale: int = 1  # register value = round(value * scale)
    signed: bool = False


@dataclass(frozen=True, slots=True)
class Point:
    """One value a sensor (or the gateway) exposes.

    ``key`` and ``name`` may contain ``{n}`` for per-region points, which expand to regions
    1..region_count; region n then sits at BACnet offset + (n - 1) and at Modbus offset
    + (n - 1) * width, whatever region_count is, so mapping more regions later moves nothing.
    """

    key: str
    name: str
    object_type: ObjectType
    bacnet_offset: int
    description: str
    modbus: ModbusSpec | None
    units: Units = Units.NO_UNITS
    cov_increment: float | None = None  # analog points only
    writable: bool = False
    per_region: bool = False
    source: Source = Source.SENSOR
    minimum: float | None = None  # writable points: allowed range
    maximum: float | None = None
    models: frozenset[Model] = frozenset({Model.VS121, Model.VS121_P})
    # Binary points: what Active_Text / Inactive_Text say about the two states.
    active_text: str = "Active"
    inactive_text: str = "Inactive"
    # A second object showing another point's value (its state key), e.g. a total as unsigned.
    value_of: str | None = None
    # Binary points: reports change-of-state events (intrinsic reporting) through the
    # gateway's Notification Class, in alarm while the present value is active.
    alarm_events: bool = False
    # Analog points: a high limit may be configured per sensor (OUT_OF_RANGE event reporting
    # through the same Notification Class).
    limit_events: bool = False

    @property
    def is_analog(self) -> bool:
        return self.object_type in (ObjectType.ANALOG_INPUT, ObjectType.ANALOG_VALUE)


def _reg(offset: int, width: int = 1, *, signed: bool = False) -> ModbusSpec:
    return ModbusSpec(ModbusKind.REGISTER, offset, width, signed=signed)


def _bit(offset: int) -> ModbusSpec:
    return ModbusSpec(ModbusKind.BIT, offset)


_AI = ObjectType.ANALOG_INPUT
_BOTH = frozenset({Model.VS121, Model.VS121_P})
_LORA = frozenset({Model.VS121})
_POE = frozenset({Model.VS121_P})

_FLOWS = [f"{a}_to_{b}" for a in "abcd" for b in "abcd"]

SENSOR_POINTS: tuple[Point, ...] = (
    # -- health -----------------------------------------------------------------------------
    Point(
        "online",
        "{sensor} Online",
        ObjectType.BINARY_INPUT,
        0,
        "Active while the sensor has reported within its stale-after time",
        _bit(0),
        source=Source.GATEWAY,
        active_text="Online",
        inactive_text="Offline",
    ),
    Point(
        "status",
        "{sensor} Status Word",
        _AI,
        17,
        "Bit 0 online, bit 1 stale, bit 2 never reported since the gateway started, bit 3 some "
        "values are no longer reported (the reporting type changed; see the API)",
        _reg(0),
        cov_increment=1,
        source=Source.GATEWAY,
    ),
    Point(
        "seconds_since_report",
        "{sensor} Seconds Since Report",
        _AI,
        15,
        "Seconds since the last report was received, saturating at 65535",
        _reg(1),
        units=Units.SECONDS,
        cov_increment=60,
        source=Source.GATEWAY,
    ),
    Point(
        "last_report",
        "{sensor} Last Report",
        ObjectType.DATETIME_VALUE,
        16,
        "Time the last report was received (Modbus: unix seconds, 32-bit)",
        _reg(2, 2),
        source=Source.GATEWAY,
    ),
    # -- occupancy --------------------------------------------------------------------------
    Point(
        "people_count_all",
        "{sensor} People Count",
        _AI,
        1,
        "People currently detected in the whole detection area; when the sensor reports region "
        "counts only (VS121 Region People Counting), the sum of its region counts",
        _reg(4),
        cov_increment=1,
        limit_events=True,
    ),
    Point(
        "people_count_max",
        "{sensor} Max People In Interval",
        _AI,
        2,
        "Highest people count during the last reporting interval",
        _reg(5),
        cov_increment=1,
    ),
    Point(
        "region_count",
        "{sensor} Mapped Regions",
        _AI,
        3,
        "Number of mapped regions the sensor reports",
        _reg(6),
        cov_increment=1,
    ),
    Point(
        "region_{n}",
        "{sensor} Region {n} Occupied",
        ObjectType.BINARY_INPUT,
        101,
        "Active while region {n} is occupied",
        _bit(1),
        per_region=True,
        active_text="Occupied",
        inactive_text="Unoccupied",
    ),
    Point(
        "region_{n}_count",
        "{sensor} Region {n} People",
        _AI,
        101,
        "People currently detected in region {n}",
        _reg(24),
        cov_increment=1,
        per_region=True,
        limit_events=True,
    ),
    # -- dwell time -------------------------------------------------------------------------
    Point(
        "dwell_time_avg",
        "{sensor} Dwell Time Average",
        _AI,
        4,
        "Average dwell time over all regions in the last interval",
        _reg(7, 2),
        units=Units.SECONDS,
        cov_increment=5,
        models=_LORA,
    ),
    Point(
        "dwell_time_max",
        "{sensor} Dwell Time Maximum",
        _AI,
        5,
        "Longest dwell time over all regions in the last interval",
        _reg(9, 2),
        units=Units.SECONDS,
        cov_increment=5,
        models=_LORA,
    ),
    Point(
        "region_{n}_dwell_time_avg",
        "{sensor} Region {n} Dwell Time Average",
        _AI,
        201,
        "Average dwell time in region {n} in the last interval",
        _reg(56, 2),
        units=Units.SECONDS,
        cov_increment=5,
        per_region=True,
        models=_POE,
    ),
    Point(
        "region_{n}_dwell_time_max",
        "{sensor} Region {n} Dwell Time Maximum",
        _AI,
        301,
        "Longest dwell time in region {n} in the last interval",
        _reg(88, 2),
        units=Units.SECONDS,
        cov_increment=5,
        per_region=True,
        models=_POE,
    ),
    # -- line crossing ----------------------------------------------------------------------
    Point(
        "people_in",
        "{sensor} Line In Interval",
        _AI,
        6,
        "People who crossed the line inwards during the last reporting interval",
        _reg(11),
        cov_increment=1,
    ),
    Point(
        "people_out",
        "{sensor} Line Out Interval",
        _AI,
        7,
        "People who crossed the line outwards during the last reporting interval",
        _reg(12),
        cov_increment=1,
    ),
    Point(
        "line_in",
        "{sensor} Line In Last Trigger",
        _AI,
        8,
        "Inward crossings carried by the last trigger report",
        _reg(13),
        cov_increment=1,
    ),
    Point(
        "line_out",
        "{sensor} Line Out Last Trigger",
        _AI,
        9,
        "Outward crossings carried by the last trigger report",
        _reg(14),
        cov_increment=1,
    ),
    Point(
        "people_total_in",
        "{sensor} Sensor Total In",
        _AI,
        10,
        "Accumulated inward crossings as counted by the sensor itself",
        _reg(15, 2),
        cov_increment=1,
    ),
    Point(
        "people_total_out",
        "{sensor} Sensor Total Out",
        _AI,
        11,
        "Accumulated outward crossings as counted by the sensor itself",
        _reg(17, 2),
        cov_increment=1,
    ),
    Point(
        "gateway_total_in",
        "{sensor} Total In",
        _AI,
        12,
        "Inward crossings accumulated by the gateway since the last reset (32-bit, kept across "
        "restarts, each crossing counted once)",
        _reg(19, 2),
        cov_increment=1,
        source=Source.GATEWAY,
    ),
    Point(
        "gateway_total_out",
        "{sensor} Total Out",
        _AI,
        13,
        "Outward crossings accumulated by the gateway since the last reset (32-bit, kept across "
        "restarts, each crossing counted once)",
        _reg(21, 2),
        cov_increment=1,
        source=Source.GATEWAY,
    ),
    Point(
        "line_occupancy",
        "{sensor} Line Occupancy",
        _AI,
        14,
        "Total In minus Total Out, floored at zero: people inside by line counting",
        _reg(23),
        cov_increment=1,
        source=Source.GATEWAY,
    ),
    # -- people flow ------------------------------------------------------------------------
    *(
        Point(
            flow,
            "{sensor} Flow " + flow.replace("_to_", " To ").upper().replace(" TO ", " to "),
            _AI,
            401 + i,
            f"People who went from area {flow[0].upper()} to area {flow[-1].upper()} in the last "
            "interval",
            _reg(40 + i),
            cov_increment=1,
        )
        for i, flow in enumerate(_FLOWS)
    ),
    # -- commands ---------------------------------------------------------------------------
    Point(
        "reset_counts",
        "{sensor} Reset Counts",
        ObjectType.BINARY_VALUE,
        1,
        "Write active (1) to reset the gateway's totals and ask the sensor to reset its own; "
        "reads back inactive",
        _bit(20),
        writable=True,
        source=Source.COMMAND,
        active_text="Reset",
        inactive_text="Idle",
    ),
    # -- totals as exact unsigned values ----------------------------------------------------
    # The same totals as AI 10-13, as Positive Integer Value objects at the same instances: a
    # REAL carries integers exactly only up to 2^24 (16,777,216), an Unsigned all 32 bits.
    *(
        Point(
            f"{key}_exact",
            f"{{sensor}} {label} Exact",
            ObjectType.POSITIVE_INTEGER_VALUE,
            offset,
            f"{label}, as an unsigned integer that stays exact above 16,777,216 (the analog "
            f"input of the same instance shows it as a REAL)",
            None,
            cov_increment=1,
            source=source,
            value_of=key,
        )
        for key, label, offset, source in (
            ("people_total_in", "Sensor Total In", 10, Source.SENSOR),
            ("people_total_out", "Sensor Total Out", 11, Source.SENSOR),
            ("gateway_total_in", "Total In", 12, Source.GATEWAY),
            ("gateway_total_out", "Total Out", 13, Source.GATEWAY),
        )
    ),
)

# -- sensor management (LoRaWAN): settings a BMS or PLC writes, link quality ----------------
# A write sends the setting to the sensor as a downlink; the point keeps showing what the sensor
# last reported (its settings echo), and Config Status says whether the write has been taken.
SENSOR_POINTS += (
    Point(
        "reporting_interval",
        "{sensor} Reporting Interval",
        ObjectType.ANALOG_VALUE,
        60,
        "Periodic report interval in seconds (5..65535) as the sensor last echoed it; writing "
        "sends the setting (ff 03) to the sensor, see Config Status for its delivery",
        _reg(120),
        units=Units.SECONDS,
        cov_increment=1,
        writable=True,
        minimum=5,
        maximum=65535,
        models=_LORA,
    ),
    Point(
        "trigger_report",
        "{sensor} Trigger Report",
        ObjectType.BINARY_VALUE,
        60,
        "Line-crossing trigger reports on (1) or off (0), as the sensor last echoed it; writing "
        "sends the setting (f9 3d) to the sensor, see Config Status for its delivery",
        _bit(21),
        writable=True,
        models=_LORA,
    ),
    Point(
        "config_status",
        "{sensor} Config Status",
        _AI,
        60,
        "Delivery of commands to the sensor: bit 0 a command is on its way, then the last "
        "finished command: bit 1 confirmed (acknowledged or echoed), bit 2 failed, bit 3 timed "
        "out or lost; 0 = nothing sent",
        _reg(121),
        cov_increment=1,
        source=Source.GATEWAY,
        models=_LORA,
    ),
    Point(
        "rssi",
        "{sensor} RSSI",
        _AI,
        61,
        "Signal strength of the last uplink in dBm, best over the receiving gateways",
        _reg(122, signed=True),
        cov_increment=3,
        models=_LORA,
    ),
    Point(
        "snr",
        "{sensor} SNR",
        _AI,
        62,
        "Signal-to-noise ratio of the last uplink in dB, best over the receiving gateways "
        "(Modbus: tenths of a dB, signed)",
        ModbusSpec(ModbusKind.REGISTER, 123, 1, scale=10, signed=True),
        cov_increment=1,
        models=_LORA,
    ),
    Point(
        "spreading_factor",
        "{sensor} Spreading Factor",
        _AI,
        63,
        "LoRa spreading factor (7..12) of the last uplink",
        _reg(124),
        cov_increment=1,
        models=_LORA,
    ),
    Point(
        "gateway_count",
        "{sensor} Receiving Gateways",
        _AI,
        64,
        "Number of radio gateways that received the last uplink (not on Modbus: the sensor's "
        "register block is kept readable in one request)",
        None,
        cov_increment=1,
        models=_LORA,
    ),
    Point(
        "frame_counter",
        "{sensor} Frame Counter",
        _AI,
        65,
        "Uplink frame counter of the last uplink, restarting at a rejoin (not on Modbus: the "
        "sensor's register block is kept readable in one request)",
        None,
        cov_increment=1,
        models=_LORA,
    ),
    # Device facts as numbers (the text, and the serial number, are in the API).
    Point(
        "firmware_version_code",
        "{sensor} Firmware Version",
        _AI,
        66,
        "Firmware version the sensor reports, as major * 10000 + minor * 100 + patch "
        "(1.0.3 -> 10003); the full text is in the API",
        None,
        cov_increment=1,
        models=_LORA,
    ),
    Point(
        "hardware_version_code",
        "{sensor} Hardware Version",
        _AI,
        67,
        "Hardware version the sensor reports, as major * 100 + minor (1.0 -> 100)",
        None,
        cov_increment=1,
        models=_LORA,
    ),
    Point(
        "lorawan_class_code",
        "{sensor} LoRaWAN Class",
        _AI,
        68,
        "LoRaWAN device class as the network server reports it: 0 A, 1 B, 2 C",
        None,
        cov_increment=1,
        models=_LORA,
    ),
    # Device facts as text, as the sensor reports them (device-info uplink: ff 08 serial,
    # ff 09 hardware, ff 1f firmware). Their own object type, so instances 66/67 sit beside
    # the analog inputs of the same facts and move nothing; not on Modbus (text has no place
    # in the register map). Values come from the facts the command service keeps.
    *(
        Point(
            key,
            f"{{sensor}} {label}",
            ObjectType.CHARACTERSTRING_VALUE,
            offset,
            description,
            None,
            models=models,
        )
        for key, label, offset, description, models in (
            (
                "firmware_version_text",
                "Firmware Version Text",
                66,
                "Firmware version as the sensor reports it, e.g. 31.7.0.75 (Firmware Version, "
                "the analog input of the same instance, shows it as a number)",
                _LORA,
            ),
            (
                "hardware_version_text",
                "Hardware Version Text",
                67,
                "Hardware version as the sensor reports it, e.g. 1.0",
                _LORA,
            ),
            (
                "serial_number",
                "Serial Number",
                69,
                "Serial number as the sensor reports it (VS121: from its device-information "
                "report, VS121-P: device_sn in every report)",
                _BOTH,
            ),
        )
    ),
    # -- daily line totals (see gateway.daily): one register each, after the first 125 (those
    # come in one read); 327 x 200 + 128 still fits the address space.
    *(
        Point(
            f"{when}_{way}",
            f"{{sensor}} {way.capitalize()} {when.capitalize()}",
            _AI,
            30 + i,
            f"{'Inward' if way == 'in' else 'Outward'} crossings counted by the gateway "
            + ("today" if when == "today" else "on the previous day")
            + " (the day starts at the configured local reset time; kept across restarts; "
            "Modbus holds up to 65535)",
            _reg(125 + i),
            cov_increment=1,
            source=Source.GATEWAY,
        )
        for i, (when, way) in enumerate(
            [("today", "in"), ("today", "out"), ("yesterday", "in"), ("yesterday", "out")]
        )
    ),
)

GATEWAY_POINTS: tuple[Point, ...] = (
    Point(
        "heartbeat",
        "Gateway Heartbeat",
        _AI,
        1,
        "Counts seconds while the gateway runs, wrapping at 65535",
        _reg(0),
        cov_increment=60,
        source=Source.GATEWAY,
        models=frozenset({Model.GATEWAY}),
    ),
    Point(
        "uptime",
        "Gateway Uptime",
        _AI,
        2,
        "Seconds since the gateway started",
        _reg(1, 2),
        units=Units.SECONDS,
        cov_increment=60,
        source=Source.GATEWAY,
        models=frozenset({Model.GATEWAY}),
    ),
    Point(
        "version",
        "Gateway Version",
        _AI,
        3,
        "Gateway version as major * 10000 + minor * 100 + patch",
        _reg(3, 2),
        cov_increment=1,
        source=Source.GATEWAY,
        models=frozenset({Model.GATEWAY}),
    ),
    Point(
        "sensors_configured",
        "Gateway Sensors Configured",
        _AI,
        4,
        "Number of sensors in the configuration",
        _reg(5),
        cov_increment=1,
        source=Source.GATEWAY,
        models=frozenset({Model.GATEWAY}),
    ),
    Point(
        "sensors_online",
        "Gateway Sensors Online",
        _AI,
        5,
        "Number of sensors that reported within their stale-after time",
        _reg(6),
        cov_increment=1,
        source=Source.GATEWAY,
        models=frozenset({Model.GATEWAY}),
    ),
)


_RULE = frozenset({Model.ALARM})

# One overcrowding alarm rule. Keys and names are templates: {r} is the rule number, {rule} its
# configured name. Offsets are inside the rule's stride (see RULE_* above).
RULE_POINTS: tuple[Point, ...] = (
    Point(
        "rule_{r}_alarm",
        "{rule} Overcrowded",
        ObjectType.BINARY_INPUT,
        0,
        "Active while the alarm rule finds {rule} overcrowded: the count went above the "
        "threshold, and has not yet fallen to threshold minus hysteresis; minimum on and off "
        "times apply. While its data is stale the rule's on_stale setting decides",
        _bit(0),
        source=Source.GATEWAY,
        models=_RULE,
        active_text="Overcrowded",
        inactive_text="Normal",
        alarm_events=True,
    ),
    Point(
        "rule_{r}_relay",
        "{rule} Relay",
        ObjectType.BINARY_OUTPUT,
        0,
        "The overcrowding output of {rule}: active = signalling overcrowded (the contact in its "
        "alarm position, open unless configured otherwise). Commandable: the alarm is the "
        "automatic command at priority 16; an override at priority 8 (or any other but 6 and "
        "16) wins, and relinquishing it returns to automatic. Modbus coil: reads the output; "
        "writing it overrides at priority 8 (write 0 to the override register to return to "
        "automatic)",
        _bit(1),
        writable=True,
        source=Source.COMMAND,
        models=_RULE,
        active_text="Alarm",
        inactive_text="Normal",
    ),
    Point(
        "rule_{r}_status",
        "{rule} Alarm Status",
        _AI,
        0,
        "Bit 0 overcrowded, bit 1 output active, bit 2 contact closed, bit 3 overridden (a "
        "command above the automatic one is in control), bit 4 data stale, bit 5 output fault",
        _reg(0),
        cov_increment=1,
        source=Source.GATEWAY,
        models=_RULE,
    ),
    Point(
        "rule_{r}_threshold",
        "{rule} Threshold",
        ObjectType.ANALOG_VALUE,
        0,
        "People count above which {rule} is overcrowded; a written value is kept across "
        "restarts (until the configured threshold itself is changed)",
        _reg(1),
        cov_increment=1,
        writable=True,
        source=Source.COMMAND,
        minimum=0,
        maximum=65535,
        models=_RULE,
    ),
    Point(
        "rule_{r}_override",
        "{rule} Relay Override",
        ObjectType.ANALOG_VALUE,
        1,
        "The relay's priority-8 command: 0 automatic (relinquished), 1 forced inactive, "
        "2 forced active. Writing it is the same as commanding the relay at priority 8",
        _reg(2),
        cov_increment=1,
        writable=True,
        source=Source.COMMAND,
        minimum=0,
        maximum=2,
        models=_RULE,
    ),
)


def points_for(model: Model) -> tuple[Point, ...]:
    """The catalog points a model exposes, in catalog order."""
    if model is Model.ALARM:
        return RULE_POINTS
    table = GATEWAY_POINTS if model is Model.GATEWAY else SENSOR_POINTS
    return tuple(p for p in table if model in p.models)


def modbus_block_span() -> int:
    """Registers one sensor's block really uses (so tests can prove it fits MODBUS_BLOCK)."""
    end = 0
    for p in SENSOR_POINTS:
        if p.modbus and p.modbus.kind is ModbusKind.REGISTER:
            last = p.modbus.offset + p.modbus.width * (MAX_REGIONS if p.per_region else 1)
            end = max(end, last)
    return end


# The gateway's Notification Class object (where alarm-rule events go; see the `alarm_events`
# points): the properties a BMS may write over BACnet. Recipient_List is writable so that a BMS
# can enrol itself; a written list is kept across restarts until the configured one changes.
NOTIFICATION_CLASS_WRITABLE: frozenset[str] = frozenset({"recipientList"})
