"""BACnet objects generated from the point catalog, one per `ResolvedPoint`.

They are deliberately not bacpypes3 object instances: one of those costs about 600 µs and 6 kB
to build, so 1,000 sensors (about 97,000 objects) would take a minute and 600 MB. A `PointObject`
is a slotted record holding the point's value and freshness; the service handlers in
`gateway.bacnet.application` read and write it, and bacpypes3 supplies the datatypes.

Reliability (what a BMS sees as Status_Flags fault):
- communication-failure: the sensor is offline (stale, or it never reported since start-up).
- unreliable-other: a gateway-computed point has no value yet.
- no-fault-detected otherwise.
While the sensor is online, a point it never reported (a model or reporting type that does not
send it) or no longer reports (its reporting type changed) is Out_Of_Service (Status_Flags
out-of-service) with no fault: its value is not current, but nothing is broken, so a BMS alarm
list is not filled with points a sensor was never going to send.
Link-health points (online, status word, seconds since report, last report) and command points
stay reliable while the sensor is stale: they explain the fault and must not be hidden by it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bacpypes3 import object as stock
from bacpypes3.basetypes import (
    BinaryPV,
    DateTime,
    EngineeringUnits,
    OptionalUnsigned,
    Polarity,
    PriorityArray,
    PriorityValue,
    PropertyIdentifier,
    Reliability,
    StatusFlags,
)
from bacpypes3.constructeddata import Array, ArrayOf
from bacpypes3.errors import PropertyError
from bacpypes3.primitivedata import (
    Boolean,
    CharacterString,
    Date,
    ObjectIdentifier,
    Real,
    Time,
    Unsigned,
)
from bacpypes3.primitivedata import ObjectType as BacnetObjectType

from gateway.bacnet.eventstate import (
    EVENT_PROPERTIES,
    EVENT_READERS,
    LIMIT_EVENT_PROPERTIES,
    event_state,
    in_alarm,
)
from objects.catalog import ObjectType, Source
from objects.pointmap import ResolvedPoint

# Keys whose value describes the sensor link itself; they stay reliable while it is stale.
LINK_HEALTH_KEYS = frozenset({"online", "status", "seconds_since_report", "last_report"})

# Properties every object has and Property_List leaves out (ASHRAE 135 clause 12.1.1.4.1).
_IDENTITY = ("objectIdentifier", "objectName", "objectType", "propertyList")
_STATUS = ("statusFlags", "eventState", "outOfService")
_COMMAND = ("priorityArray", "relinquishDefault", "currentCommandPriority")
_TEXTS = ("activeText", "inactiveText")
_ArrayOfPropertyIdentifier = ArrayOf(PropertyIdentifier)


@dataclass(frozen=True, slots=True)
class Profile:
    """What one object type serves: its properties and how its present value behaves."""

    bacnet_type: str
    datatypes: dict[str, Any]  # property name -> bacpypes3 datatype, from the standard's object
    required: tuple[str, ...]
    optional: tuple[str, ...]
    analog: bool = False
    binary: bool = False
    commandable: bool = False
    unsigned: bool = False  # analog, but the present value is an Unsigned (exact integers)
    text: bool = False  # the present value is a CharacterString (`PointObject.text`)
    cov: bool = True  # the EDE export says which types support COV; this must agree


PROFILES: dict[ObjectType, Profile] = {
    ObjectType.ANALOG_INPUT: Profile(
        "analog-input",
        stock.AnalogInputObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS, "units"),
        ("description", "reliability", "covIncrement"),
        analog=True,
    ),
    ObjectType.ANALOG_VALUE: Profile(
        "analog-value",
        stock.AnalogValueObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS, "units"),
        ("description", "reliability", "covIncrement"),
        analog=True,
    ),
    ObjectType.BINARY_INPUT: Profile(
        "binary-input",
        stock.BinaryInputObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS, "polarity"),
        ("description", "reliability", *_TEXTS),
        binary=True,
    ),
    ObjectType.BINARY_VALUE: Profile(
        "binary-value",
        stock.BinaryValueObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS),
        ("description", "reliability", *_TEXTS),
        binary=True,
    ),
    ObjectType.BINARY_OUTPUT: Profile(
        "binary-output",
        stock.BinaryOutputObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS, "polarity", *_COMMAND),
        ("description", "reliability", *_TEXTS),
        binary=True,
        commandable=True,
    ),
    ObjectType.DATETIME_VALUE: Profile(
        "datetime-value",
        stock.DateTimeValueObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS),
        ("description", "reliability"),
        cov=False,
    ),
    ObjectType.POSITIVE_INTEGER_VALUE: Profile(
        "positive-integer-value",
        stock.PositiveIntegerValueObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS, "units"),
        ("description", "reliability", "covIncrement"),
        analog=True,
        unsigned=True,
    ),
    # Device facts as text. Not COV-capable: the facts change only with new firmware or
    # hardware, and the EDE export says so.
    ObjectType.CHARACTERSTRING_VALUE: Profile(
        "characterstring-value",
        stock.CharacterStringValueObject._elements,
        (*_IDENTITY, "presentValue", *_STATUS),
        ("description", "reliability"),
        text=True,
        cov=False,
    ),
}

# BACnetReliability values (ASHRAE 135 clause 21) the objects use.
NO_FAULT_DETECTED = 0
UNRELIABLE_OTHER = 7
COMMUNICATION_FAILURE = 12

PRIORITY_LEVELS = 16
MINIMUM_ON_OFF_PRIORITY = 6  # reserved for minimum on/off time; clients may not write it


class PointObject:
    """One served object: its identity comes from the catalog, its value from the state."""

    __slots__ = (
        "events",
        "has_value",
        "identifier",
        "link_down",
        "not_reported",
        "point",
        "priorities",
        "profile",
        "properties",
        "text",
        "value",
    )

    def __init__(self, point: ResolvedPoint, properties: tuple[str, ...]) -> None:
        self.point = point
        self.profile = PROFILES[point.object_type]
        self.identifier: Any = identifier(_object_type(self.profile.bacnet_type), point.instance)
        self.properties = properties  # served property names, shared between like objects
        self.value: float = 0.0
        self.text = ""  # the present value of text objects
        self.has_value = False
        self.link_down = False
        self.events: Any = None  # an EventRecord for objects with intrinsic reporting
        self.not_reported = False  # the sensor's latest report of its kind left this value out
        # Commandable objects keep the 16 command slots; None is a relinquished slot.
        self.priorities: list[float | None] | None = (
            [None] * PRIORITY_LEVELS if self.profile.commandable else None
        )

    # -- identity -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.point.name

    @property
    def key(self) -> tuple[str, str]:
        return self.point.sensor_id, self.point.key

    @property
    def needs_fresh_link(self) -> bool:
        """Whether a stale sensor makes this object's value unreliable."""
        p = self.point
        return (
            p.sensor_id != ""
            and p.key not in LINK_HEALTH_KEYS
            and p.point.source is not Source.COMMAND
        )

    # -- state ----------------------------------------------------------------------------------

    @property
    def reliability(self) -> int:
        if self.link_down and self.needs_fresh_link:
            return COMMUNICATION_FAILURE
        if self.out_of_service:
            return NO_FAULT_DETECTED
        if not self.has_value and self.point.point.source is not Source.COMMAND:
            return UNRELIABLE_OTHER
        return NO_FAULT_DETECTED

    @property
    def out_of_service(self) -> bool:
        """A sensor value that was never or is no longer reported by its sensor."""
        return self.point.point.source is Source.SENSOR and (
            not self.has_value or self.not_reported
        )

    @property
    def flag_bits(self) -> int:
        """The Status_Flags bits that can change (fault 1, out of service 2): COV follows them."""
        return int(self.fault) | int(self.out_of_service) << 1

    @property
    def fault(self) -> bool:
        return self.reliability != NO_FAULT_DETECTED

    @property
    def cov_increment(self) -> float:
        return self.point.cov_increment or 0.0

    def present(self) -> float:
        """The present value as a number (binary: 0/1, date-time: unix seconds)."""
        if self.priorities is not None:
            for slot in self.priorities:
                if slot is not None:
                    return slot
        return self.value

    def command_priority(self) -> int | None:
        if self.priorities is None:
            return None
        for level, slot in enumerate(self.priorities, start=1):
            if slot is not None:
                return level
        return None

    # -- reading --------------------------------------------------------------------------------

    def read(self, attr: str, index: int | None = None) -> Any:
        """The property's value as a bacpypes3 datatype; raises ExecutionError like a device."""
        if attr not in self.properties:
            raise PropertyError("unknownProperty")
        reader = _READERS[attr]
        value = reader(self)
        if index is None:
            return value
        return _array_element(self.profile.datatypes.get(attr), value, index)

    def datatype(self, attr: str) -> Any:
        return self.profile.datatypes[attr]


def identifier(kind: Any, instance: int) -> Any:
    """``ObjectIdentifier((kind, instance))`` for a member of bacpypes3's ObjectType and an
    instance already in range, built as bacpypes3 builds it but without the generic call of its
    element metaclass (bacpypes3/primitivedata.py:617, ElementMetaclass.__call__: an issubclass
    check and a cast of the argument each time), which was a third of building the objects of
    5,000 sensors. tests/test_bacnet_identifiers.py checks that both give the same identifier.
    """
    return type.__call__(ObjectIdentifier, (kind, instance))


@functools.cache
def _object_type(name: str) -> Any:
    # An identifier built from the enumeration member costs half of one built from its name,
    # which counts with 100,000+ objects at start-up.
    return BacnetObjectType(name)


def _array_element(datatype: Any, value: Any, index: int) -> Any:
    if attr_is_array(datatype):
        if index == 0:
            return Unsigned(len(value))
        if 1 <= index <= len(value):
            return value[index - 1]
        raise PropertyError("invalidArrayIndex")
    raise PropertyError("propertyIsNotAnArray")


def attr_is_array(datatype: Any) -> bool:
    return isinstance(datatype, type) and bool(issubclass(datatype, Array))


def present_value(obj: PointObject, number: float | None = None) -> Any:
    """Encode a present value (or `number`) in the object's datatype."""
    v = obj.present() if number is None else number
    if obj.profile.unsigned:
        return Unsigned(min(max(int(v), 0), _UNSIGNED32_MAX))
    if obj.profile.analog:
        return Real(float(v))
    if obj.profile.binary:
        return BinaryPV(1 if v else 0)
    if obj.profile.text:
        return CharacterString(obj.text)
    return unix_to_datetime(v if obj.has_value or number is not None else None)


_UNSIGNED32_MAX = (1 << 32) - 1


def _cov_increment(obj: PointObject) -> Any:
    if obj.profile.unsigned:
        return Unsigned(round(obj.cov_increment))
    return Real(obj.cov_increment)


def status_flags(obj: PointObject) -> Any:
    # in-alarm, fault, overridden, out-of-service
    return StatusFlags(
        [1 if in_alarm(obj) else 0, 1 if obj.fault else 0, 0, 1 if obj.out_of_service else 0]
    )


def unix_to_datetime(seconds: float | None) -> Any:
    """Local date and time; an unknown time is all wildcards, as BACnet spells 'unspecified'."""
    if seconds is None or not math.isfinite(seconds):
        return DateTime(date=Date((255, 255, 255, 255)), time=Time((255, 255, 255, 255)))
    t = time.localtime(seconds)
    hundredths = int((seconds % 1) * 100)
    return DateTime(
        date=Date((t.tm_year - 1900, t.tm_mon, t.tm_mday, t.tm_wday + 1)),
        time=Time((t.tm_hour, t.tm_min, t.tm_sec, hundredths)),
    )


def _priority_array(obj: PointObject) -> Any:
    assert obj.priorities is not None
    slots = []
    for slot in obj.priorities:
        if slot is None:
            slots.append(PriorityValue(null=()))
        elif obj.profile.analog:
            slots.append(PriorityValue(real=Real(slot)))
        else:
            slots.append(PriorityValue(enumerated=BinaryPV(1 if slot else 0)))
    return PriorityArray(slots)


def _current_command_priority(obj: PointObject) -> Any:
    level = obj.command_priority()
    return OptionalUnsigned(null=()) if level is None else OptionalUnsigned(unsigned=level)


def _property_list(obj: PointObject) -> Any:
    return _ArrayOfPropertyIdentifier(
        [PropertyIdentifier(a) for a in obj.properties if a not in _IDENTITY]
    )


_READERS: dict[str, Callable[[PointObject], Any]] = {
    "objectIdentifier": lambda o: o.identifier,
    "objectName": lambda o: CharacterString(o.point.name),
    "objectType": lambda o: o.identifier[0],
    "propertyList": _property_list,
    "description": lambda o: CharacterString(o.point.description),
    "presentValue": present_value,
    "statusFlags": status_flags,
    "eventState": event_state,
    "outOfService": lambda o: Boolean(o.out_of_service),
    "reliability": lambda o: Reliability(o.reliability),
    "units": lambda o: EngineeringUnits(o.point.units.value),
    "covIncrement": _cov_increment,
    "activeText": lambda o: CharacterString(o.point.point.active_text),
    "inactiveText": lambda o: CharacterString(o.point.point.inactive_text),
    "polarity": lambda o: Polarity("normal"),
    "minPresValue": lambda o: Real(o.point.point.minimum),
    "maxPresValue": lambda o: Real(o.point.point.maximum),
    "priorityArray": _priority_array,
    "relinquishDefault": lambda o: present_value(o, o.value),
    "currentCommandPriority": _current_command_priority,
    **EVENT_READERS,
}


def served_properties(point: ResolvedPoint) -> tuple[str, ...]:
    """Required then optional properties; the catalog's range adds Min/Max_Pres_Value."""
    profile = PROFILES[point.object_type]
    extra: tuple[str, ...] = ()
    if profile.analog and point.point.minimum is not None:
        extra += ("minPresValue",)
    if profile.analog and point.point.maximum is not None:
        extra += ("maxPresValue",)
    if profile.binary and point.point.alarm_events:
        extra += EVENT_PROPERTIES
    if profile.analog and point.high_limit is not None:
        extra += LIMIT_EVENT_PROPERTIES
    return profile.required + profile.optional + extra


def build_objects(points: list[ResolvedPoint]) -> list[PointObject]:
    """One object per point; objects with the same property set share one tuple."""
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    out = []
    for p in points:
        props = served_properties(p)
        out.append(PointObject(p, shared.setdefault(props, props)))
    return out


def required_properties(obj: PointObject) -> tuple[str, ...]:
    return tuple(a for a in obj.properties if a in obj.profile.required)


def optional_properties(obj: PointObject) -> tuple[str, ...]:
    return tuple(a for a in obj.properties if a not in obj.profile.required)


__all__ = [
    "LINK_HEALTH_KEYS",
    "MINIMUM_ON_OFF_PRIORITY",
    "PRIORITY_LEVELS",
    "PROFILES",
    "PointObject",
    "Profile",
    "build_objects",
    "optional_properties",
    "present_value",
    "required_properties",
    "served_properties",
    "status_flags",
    "unix_to_datetime",
]
