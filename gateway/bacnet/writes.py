"""Network writes: only a catalog-writable Present_Value, validated, then handed to a command.

Everything else answers the error a BACnet client expects (ASHRAE 135 clause 15.9):
write-access-denied for any other property or a read-only object, value-out-of-range outside the
catalog's minimum/maximum (or a binary value other than 0/1), invalid-data-type for the wrong
application tag, property-is-not-an-array for an index on a scalar. Validation reads only the
catalog (`writable`, `minimum`, `maximum`), so a new writable point needs just its command.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bacpypes3.errors import ExecutionError, ObjectError, PropertyError
from bacpypes3.primitivedata import Enumerated, Real, TagClass, TagNumber

from gateway.bacnet.objects import MINIMUM_ON_OFF_PRIORITY, PRIORITY_LEVELS, PointObject
from gateway.commands import (
    REQUESTER,
    AlarmCommands,
    CommandRefusedError,
    Commands,
    DeliveryRefusedError,
    DownlinkCommands,
)
from gateway.device_settings import SETTING_POINTS, setting_command
from objects.pointmap import ResolvedPoint

log = logging.getLogger("gateway.bacnet")

WriteFn = Callable[[ResolvedPoint, float], Awaitable[None]]
# A commandable point's own command: the priority level written and the value (None relinquishes).
CommandFn = Callable[[ResolvedPoint, int, float | None], Awaitable[None]]

OVERRIDE_PRIORITY = 8  # the level the rules' "Relay Override" value writes


@dataclass(frozen=True, slots=True)
class WriteAction:
    """What a write to one point (by its catalog key) does. A momentary action (a reset button)
    is not stored: its object reads back its resting value. A commandable point whose priority
    array the gateway owns has `command`, which gets the level and the value itself rather than
    the winning value."""

    run: WriteFn
    momentary: bool = False
    command: CommandFn | None = None


@dataclass(frozen=True, slots=True)
class ValidWrite:
    """A write that passed validation: the value (None relinquishes a command slot) and, for a
    commandable object, its priority level."""

    value: float | None
    priority: int | None


def command_actions(commands: Commands) -> dict[str, WriteAction]:
    """The write actions the gateway's commands offer, by point key."""

    async def reset_counts(point: ResolvedPoint, value: float) -> None:
        if value:  # writing inactive is accepted and does nothing
            summary = await commands.reset_counts(point.sensor_id)
            log.info("BACnet write: %s reset: %s", point.sensor_id, summary)

    def alarm() -> AlarmCommands:
        if not isinstance(commands, AlarmCommands):
            raise PropertyError("writeAccessDenied")  # this gateway serves no alarm rules
        return commands

    def rule_of(point: ResolvedPoint) -> str:
        if point.rule is None:
            raise ObjectError("unknownObject")
        return point.rule

    async def threshold(point: ResolvedPoint, value: float) -> None:
        try:
            summary = await alarm().set_alarm_threshold(rule_of(point), value)
        except ValueError:
            raise PropertyError("valueOutOfRange") from None
        log.info("BACnet write: alarm %s %s", point.rule, summary)

    async def override(point: ResolvedPoint, value: float) -> None:
        if value not in (0, 1, 2):
            raise PropertyError("valueOutOfRange")
        command = None if value == 0 else value == 2
        summary = await alarm().command_relay(rule_of(point), OVERRIDE_PRIORITY, command)
        log.info("BACnet write: alarm %s relay override: %s", point.rule, summary)

    async def relay(point: ResolvedPoint, priority: int, value: float | None) -> None:
        command = None if value is None else bool(value)
        try:
            summary = await alarm().command_relay(rule_of(point), priority, command)
        except CommandRefusedError:
            raise PropertyError("writeAccessDenied") from None
        log.info("BACnet write: alarm %s relay: %s", point.rule, summary)

    async def no_plain_write(point: ResolvedPoint, value: float) -> None:
        raise PropertyError("writeAccessDenied")  # commandable: always written with a level

    async def setting(point: ResolvedPoint, value: float) -> None:
        # Sent to the sensor as a downlink; the point keeps showing what the sensor echoes.
        if not isinstance(commands, DownlinkCommands):
            raise PropertyError("writeAccessDenied")
        try:
            command = setting_command(point.point.key, value)
            record = await commands.send_command(
                point.sensor_id, [command], requester=REQUESTER.get()
            )
        except ValueError:
            raise PropertyError("valueOutOfRange") from None
        except DeliveryRefusedError as exc:
            log.warning("BACnet write to %s refused: %s", point.name, exc)
            raise ExecutionError("device", "operationalProblem") from None
        log.info("BACnet write: %s = %g sent as command %s", point.name, value, record["id"])

    return {
        "reset_counts": WriteAction(reset_counts, momentary=True),
        "rule_{r}_threshold": WriteAction(threshold),
        "rule_{r}_override": WriteAction(override),
        "rule_{r}_relay": WriteAction(no_plain_write, command=relay),
        **{key: WriteAction(setting, momentary=True) for key in SETTING_POINTS},
    }


def validate_write(
    obj: PointObject, attr: str, index: int | None, priority: int | None, value: Any
) -> ValidWrite:
    """Check a WriteProperty against the catalog; raises ExecutionError with the right code."""
    if attr not in obj.properties:
        raise PropertyError("unknownProperty")
    if (
        attr != "presentValue"
        or not obj.point.writable
        or not (obj.profile.analog or obj.profile.binary)
    ):
        raise PropertyError("writeAccessDenied")
    if index is not None:
        raise PropertyError("propertyIsNotAnArray")

    level = None
    if obj.profile.commandable:
        level = PRIORITY_LEVELS if priority is None else priority
        if not 1 <= level <= PRIORITY_LEVELS:
            raise ExecutionError("services", "parameterOutOfRange")
        if level == MINIMUM_ON_OFF_PRIORITY:
            raise PropertyError("writeAccessDenied")

    tag = _first_application_tag(value)
    if tag == TagNumber.null:
        if level is None:  # only a command slot can be relinquished
            raise PropertyError("invalidDataType")
        return ValidWrite(None, level)
    if obj.profile.analog:
        number = _decode(value, TagNumber.real, tag)
        if not math.isfinite(number):
            raise PropertyError("valueOutOfRange")
        lo, hi = obj.point.point.minimum, obj.point.point.maximum
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise PropertyError("valueOutOfRange")
        return ValidWrite(number, level)
    number = _decode(value, TagNumber.enumerated, tag)
    if number not in (0, 1):
        raise PropertyError("valueOutOfRange")
    return ValidWrite(number, level)


def _first_application_tag(value: Any) -> int | None:
    tags = list(getattr(getattr(value, "tagList", None), "tagList", None) or ())
    # A decoded request keeps the service's context tag [3] around the value.
    if (
        len(tags) >= 2
        and tags[0].tag_class == TagClass.opening
        and tags[-1].tag_class == TagClass.closing
    ):
        tags = tags[1:-1]
    if len(tags) != 1 or tags[0].tag_class != TagClass.application:
        return None  # empty, constructed or context-tagged: not a primitive value
    return int(tags[0].tag_number)


def _decode(value: Any, expected: TagNumber, seen: int | None) -> float:
    if seen != expected:
        raise PropertyError("invalidDataType")
    datatype = Real if expected == TagNumber.real else Enumerated
    try:
        return float(value.cast_out(datatype))
    except Exception as exc:  # a malformed value is the client's data-type error
        raise PropertyError("invalidDataType") from exc


def effective_value(obj: PointObject, write: ValidWrite) -> float:
    """The value the object would present after this write (for a commandable object the
    winning command slot, which may be another priority's)."""
    if obj.priorities is not None and write.priority is not None:
        slots = list(obj.priorities)
        slots[write.priority - 1] = write.value
        winner = next((v for v in slots if v is not None), None)
        return obj.value if winner is None else winner
    assert write.value is not None
    return write.value


def commit_write(obj: PointObject, write: ValidWrite, *, momentary: bool) -> None:
    """Store a write whose action succeeded; a momentary one leaves the value at rest."""
    if obj.priorities is not None and write.priority is not None:
        obj.priorities[write.priority - 1] = write.value
    elif not momentary and write.value is not None:
        obj.value = write.value
        obj.has_value = True


def unwritable_points(
    points: Mapping[tuple[str, str], PointObject], actions: Mapping[str, WriteAction]
) -> list[str]:
    """Writable catalog points that have no action: the server refuses writes to them."""
    return sorted(
        f"{o.point.sensor_id or 'gateway'}.{o.point.key}"
        for o in points.values()
        if o.point.writable and o.point.point.key not in actions
    )
