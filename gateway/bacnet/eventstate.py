"""The event state of one object with intrinsic reporting, and its BACnet properties.

Kept apart from the event logic (events.py) so that objects.py can serve the properties
without importing the notification machinery.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bacpypes3.basetypes import (
    BinaryPV,
    DateTime,
    EventState,
    EventTransitionBits,
    LimitEnable,
    NotifyType,
    TimeStamp,
)
from bacpypes3.constructeddata import ArrayOf
from bacpypes3.errors import PropertyError
from bacpypes3.primitivedata import Boolean, Date, Real, Time, Unsigned

# Transition slots, in the order of EventTransitionBits and Event_Time_Stamps.
TO_OFFNORMAL, TO_FAULT, TO_NORMAL = 0, 1, 2
SLOT_OF_STATE = {
    "offnormal": TO_OFFNORMAL,
    "high-limit": TO_OFFNORMAL,
    "fault": TO_FAULT,
    "normal": TO_NORMAL,
}

# What an object with intrinsic reporting serves besides its usual properties: a binary one
# (CHANGE_OF_STATE) its Alarm_Value, an analog one (OUT_OF_RANGE) its limits.
_COMMON = (
    "timeDelay",
    "notificationClass",
    "eventEnable",
    "ackedTransitions",
    "notifyType",
    "eventTimeStamps",
    "eventDetectionEnable",
)
EVENT_PROPERTIES = (*_COMMON[:2], "alarmValue", *_COMMON[2:])
LIMIT_EVENT_PROPERTIES = (
    *_COMMON[:2],
    "highLimit",
    "lowLimit",
    "deadband",
    "limitEnable",
    *_COMMON[2:],
)

_ArrayOfTimeStamp = ArrayOf(TimeStamp, _length=3)


@dataclass(slots=True)
class EventRecord:
    """Event_State, Acked_Transitions and Event_Time_Stamps of one object (persisted)."""

    notification_class: int
    state: str = "normal"  # normal, offnormal or fault
    acked: list[bool] = field(default_factory=lambda: [True, True, True])
    stamps: list[float | None] = field(default_factory=lambda: [None, None, None])

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "acked": list(self.acked), "stamps": list(self.stamps)}

    def load_json(self, doc: dict[str, Any]) -> None:
        state = doc["state"]
        if state not in SLOT_OF_STATE:
            raise ValueError(f"unknown event state {state!r}")
        acked = [bool(a) for a in doc["acked"]]
        stamps = [None if s is None else float(s) for s in doc["stamps"]]
        if len(acked) != 3 or len(stamps) != 3:
            raise ValueError("three transitions expected")
        if any(s is not None and not math.isfinite(s) for s in stamps):
            raise ValueError("timestamps must be finite")
        self.state, self.acked, self.stamps = state, acked, stamps


def timestamp(seconds: float | None) -> Any:
    """A BACnetTimeStamp (date and time); unset is all wildcards (clause 12.x "unspecified")."""
    if seconds is None:
        value = DateTime(date=Date((255, 255, 255, 255)), time=Time((255, 255, 255, 255)))
    else:
        t = time.localtime(seconds)
        value = DateTime(
            date=Date((t.tm_year - 1900, t.tm_mon, t.tm_mday, t.tm_wday + 1)),
            time=Time((t.tm_hour, t.tm_min, t.tm_sec, int((seconds % 1) * 100))),
        )
    return TimeStamp(dateTime=value)


def transition_bits(bits: list[bool]) -> Any:
    return EventTransitionBits([1 if b else 0 for b in bits])


def _record(obj: Any) -> EventRecord:
    record: EventRecord | None = obj.events
    if record is None:
        raise PropertyError("unknownProperty")  # not configured for event reporting
    return record


EVENT_READERS: dict[str, Callable[[Any], Any]] = {
    "timeDelay": lambda o: Unsigned(0),  # the alarm rule's own minimum on/off times apply
    "notificationClass": lambda o: Unsigned(_record(o).notification_class),
    "alarmValue": lambda o: BinaryPV("active"),
    "eventEnable": lambda o: transition_bits([True, True, True]),
    "ackedTransitions": lambda o: transition_bits(_record(o).acked),
    "notifyType": lambda o: NotifyType("alarm"),
    "eventTimeStamps": lambda o: _ArrayOfTimeStamp([timestamp(s) for s in _record(o).stamps]),
    "eventDetectionEnable": lambda o: Boolean(True),
    "highLimit": lambda o: Real(_limit(o)[0]),
    "lowLimit": lambda o: Real(0.0),  # not enabled: counts cannot go below zero
    "deadband": lambda o: Real(_limit(o)[1]),
    "limitEnable": lambda o: LimitEnable([0, 1]),  # low limit off, high limit on
}


def _limit(obj: Any) -> tuple[float, float]:
    limit: tuple[float, float] | None = obj.point.high_limit
    if limit is None:
        raise PropertyError("unknownProperty")
    return limit


def event_state(obj: Any) -> Any:
    record: EventRecord | None = obj.events
    return EventState(state_enum(record.state) if record is not None else "normal")


def state_enum(state: str) -> str:
    """bacpypes3's spelling of an event state."""
    return "highLimit" if state == "high-limit" else state


def in_alarm(obj: Any) -> bool:
    record: EventRecord | None = obj.events
    return record is not None and record.state != "normal"
