"""Intrinsic reporting: alarm points' event states, notifications, acknowledgements.

Objects whose catalog point has `alarm_events` (each alarm rule's Overcrowded input) run the
CHANGE_OF_STATE algorithm (ASHRAE 135 clause 13.3.2) with Alarm_Value active and no time delay
(the rule's hysteresis and minimum on/off times already debounce it): offnormal while active,
fault while the object is unreliable, normal otherwise. Each transition stamps Event_Time_Stamps,
clears its Acked_Transitions bit where the Notification Class requires an acknowledgement, and
is sent as a Confirmed/UnconfirmedEventNotification to every recipient that takes it.
AcknowledgeAlarm sets the bit again and tells the recipients (an ack notification).

The event states are written atomically to the state directory at each transition and
acknowledgement, so a restart neither repeats an alarm the BMS already has nor loses one it has
not acknowledged. A transition that happened while the gateway was down is reported at start,
and one that happened while DeviceCommunicationControl kept the device from initiating services
is reported when communication is enabled again (the latest of each kind per object, in the order
they happened), so a BMS alarm list never misses an alarm it was not allowed to hear.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bacpypes3.apdu import ConfirmedEventNotificationRequest, UnconfirmedEventNotificationRequest
from bacpypes3.basetypes import (
    BinaryPV,
    EventState,
    EventType,
    NotificationParameters,
    NotificationParametersChangeOfState,
    NotificationParametersOutOfRange,
    NotifyType,
    PropertyStates,
)
from bacpypes3.errors import ObjectError, ServicesError
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import CharacterString, ObjectIdentifier, Real

from gateway.bacnet.eventstate import (
    SLOT_OF_STATE,
    TO_FAULT,
    TO_NORMAL,
    TO_OFFNORMAL,
    EventRecord,
    timestamp,
)
from gateway.bacnet.notification import NotificationClass, Target
from gateway.bacnet.objects import PointObject, status_flags
from gateway.store import atomic_write

log = logging.getLogger("gateway.bacnet")

STORE_VERSION = 1
CONFIRMED_DEADLINE_S = 30.0  # the stack's own retries end well before this

SendFn = Callable[[Any], "asyncio.Future[Any] | None"]
ResolveFn = Callable[[int], Awaitable[Any]]  # device instance -> Address or None


def reports_events(obj: PointObject) -> bool:
    return obj.point.point.alarm_events or obj.point.high_limit is not None


def target_state(obj: PointObject, current: str = "normal") -> str | None:
    """The event state the object's value calls for; None before it has a value."""
    if obj.fault and obj.has_value:
        return "fault"
    if not obj.has_value:
        return None
    if obj.point.high_limit is None:
        return "offnormal" if obj.present() else "normal"  # CHANGE_OF_STATE, active in alarm
    # OUT_OF_RANGE, high limit only: back to normal once below the limit less the deadband.
    limit, deadband = obj.point.high_limit
    value = obj.present()
    if value > limit or (current == "high-limit" and value >= limit - deadband):
        return "high-limit"
    return "normal"


class EventManager:
    """The event states of all reporting objects of one device."""

    def __init__(
        self,
        send: SendFn,
        device_id: Any,
        routing: NotificationClass,
        store_path: Path | None,
        *,
        resolve: ResolveFn | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self._device_id = device_id
        self.routing = routing
        self._store_path = store_path
        self._resolve = resolve
        self._clock = clock
        self._objects: dict[Any, PointObject] = {}
        self._addresses: dict[int, Any] = {}  # device instance -> Address, once found
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing: asyncio.Task[None] | None = None
        self._dirty = False
        # While communication is disabled: notifications held, latest per (object, kind), in
        # the order they happened.
        self._held: dict[tuple[Any, bool, int], _Held] | None = None
        self.sent = 0
        self.failed = 0
        self.transitions = 0

    # -- set-up ---------------------------------------------------------------------------------

    def attach(self, objects: Sequence[PointObject]) -> int:
        """Give every reporting object its event record; returns how many report."""
        for obj in objects:
            if reports_events(obj):
                obj.events = EventRecord(notification_class=self.routing.number)
                self._objects[obj.identifier] = obj
        return len(self._objects)

    def reporting(self) -> Iterator[PointObject]:
        return iter(
            sorted(self._objects.values(), key=lambda o: (o.identifier[0], o.identifier[1]))
        )

    def restore(self, raw: bytes) -> int:
        """Event states (and a written recipient list) saved by `snapshot`. Returns how many
        objects were restored; raises ValueError/KeyError/TypeError if the file is damaged."""
        doc = json.loads(raw)
        if doc.get("version") != STORE_VERSION:
            raise ValueError(f"unknown version {doc.get('version')!r}")
        restored = 0
        for text, entry in doc["objects"].items():
            obj = self._objects.get(ObjectIdentifier(text))
            if obj is None:
                continue  # the rule is gone from the configuration
            obj.events.load_json(entry)
            restored += 1
        written = doc.get("recipients")
        if written is not None and written.get("configured") == self.routing.configured_json():
            self.routing.recipients = [Target.from_json(t) for t in written["list"]]
        return restored

    def evaluate_all(self) -> None:
        """At start-up: report what changed while the gateway was down."""
        for obj in self.reporting():
            self.changed(obj)

    # -- detection ------------------------------------------------------------------------------

    def changed(self, obj: PointObject) -> None:
        """After a value or reliability change of `obj`."""
        record: EventRecord | None = obj.events
        if record is None:
            return
        new = target_state(obj, record.state)
        if new is None or new == record.state:
            return
        old = record.state
        slot = SLOT_OF_STATE[new]
        now = self._clock()
        record.state = new
        record.stamps[slot] = now
        record.acked[slot] = not self.routing.ack_required[slot]
        self.transitions += 1
        log.warning("BACnet event: %s %r %s -> %s", _oid(obj), obj.name, old, new)
        self._save()
        self._notify(obj, slot, old=old, new=new, stamp=now, ack=False)

    # -- acknowledgement ------------------------------------------------------------------------

    def acknowledge(self, objid: Any, state: str, stamp: Any, source: str, process: int) -> None:
        """AcknowledgeAlarm (clause 13.5.1); raises ExecutionError as a device must."""
        obj = self._objects.get(objid)
        if obj is None:
            raise ObjectError("unknownObject")
        record: EventRecord = obj.events
        if state not in _ACK_SLOT:
            raise ServicesError("invalidEventState")
        index = _ACK_SLOT[state]
        ours = record.stamps[index]
        if ours is None or not _same_time(stamp, ours):
            raise ServicesError("invalidTimeStamp")
        if record.acked[index]:
            return  # acknowledged before: not an error, and nothing new to tell
        record.acked[index] = True
        log.info(
            "BACnet event: %s %s acknowledged by %r (process %d)", _oid(obj), state, source, process
        )
        self._save()
        self._notify(obj, index, old=None, new=state, stamp=ours, ack=True)

    # -- summaries ------------------------------------------------------------------------------

    def active(self) -> list[PointObject]:
        """Objects not normal or with an unacknowledged transition (GetEventInformation)."""
        return [
            o for o in self.reporting() if o.events.state != "normal" or not all(o.events.acked)
        ]

    def in_alarm(self) -> list[PointObject]:
        """Objects not normal (GetAlarmSummary: all ours notify as alarms)."""
        return [o for o in self.reporting() if o.events.state != "normal"]

    # -- notifications --------------------------------------------------------------------------

    def suspend(self) -> None:
        """Communication disabled: hold notifications instead of sending them."""
        if self._held is None:
            self._held = {}

    def resume(self) -> None:
        """Communication enabled again: send what was held."""
        held, self._held = self._held, None
        for h in (held or {}).values():
            log.info(
                "BACnet event: %s %s held while communication was off; sent now", _oid(h.obj), h.new
            )
            self._notify(h.obj, h.slot, old=h.old, new=h.new, stamp=h.stamp, ack=h.ack)

    def _notify(
        self, obj: PointObject, slot: int, *, old: str | None, new: str, stamp: float, ack: bool
    ) -> None:
        if self._held is not None:
            key = (obj.identifier, ack, slot)
            self._held.pop(key, None)  # a repeat moves to the end: the order they happened
            self._held[key] = _Held(obj, slot, old, new, stamp, ack)
            return
        local = time.localtime(self._clock())
        now = (local.tm_hour, local.tm_min, local.tm_sec, 0)
        for target in self.routing.recipients:
            if not target.wants(slot, local.tm_wday, now):
                continue
            task = asyncio.ensure_future(
                self._deliver(target, obj, slot, old=old, new=new, stamp=stamp, ack=ack)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self,
        target: Target,
        obj: PointObject,
        slot: int,
        *,
        old: str | None,
        new: str,
        stamp: float,
        ack: bool,
    ) -> None:
        address = await self._address_of(target)
        if address is None:
            self.failed += 1
            log.warning("BACnet event: recipient device %s not found; not notified", target.device)
            return
        cls = (
            ConfirmedEventNotificationRequest
            if target.confirmed
            else UnconfirmedEventNotificationRequest
        )
        request = cls(
            processIdentifier=target.process,
            initiatingDeviceIdentifier=self._device_id,
            eventObjectIdentifier=obj.identifier,
            timeStamp=timestamp(stamp),
            notificationClass=self.routing.number,
            priority=self.routing.priority[slot],
            eventType=EventType("changeOfState" if obj.point.high_limit is None else "outOfRange"),
            messageText=CharacterString(_message(obj, new, ack=ack)),
            notifyType=NotifyType("ackNotification" if ack else "alarm"),
            toState=EventState(_camel(new)),
            destination=address,
        )
        if not ack:
            request.ackRequired = self.routing.ack_required[slot]
            request.fromState = EventState(_camel(old or "normal"))
            request.eventValues = _event_values(obj)
        self.sent += 1
        future = self._send(request)
        if not target.confirmed or future is None:
            return
        done, _ = await asyncio.wait([future], timeout=CONFIRMED_DEADLINE_S)
        if not done:
            future.cancel()
        if not done or future.cancelled() or future.exception() is not None:
            self.failed += 1
            if target.device is not None:
                self._addresses.pop(target.device, None)  # look it up again next time
            log.warning(
                "BACnet event: confirmed notification of %s to %s failed: %r",
                _oid(obj),
                address,
                None if not done or future.cancelled() else future.exception(),
            )

    async def _address_of(self, target: Target) -> Any:
        if target.address is not None:
            return Address(target.address)
        assert target.device is not None
        known = self._addresses.get(target.device)
        if known is None and self._resolve is not None:
            known = await self._resolve(target.device)
            if known is not None:
                self._addresses[target.device] = known
        return known

    # -- persistence ----------------------------------------------------------------------------

    def recipients_written(self, targets: Sequence[Target]) -> None:
        log.warning(
            "BACnet: Notification Class recipient list written (%d recipients)", len(targets)
        )
        self._save()

    def snapshot(self) -> bytes:
        doc: dict[str, Any] = {
            "version": STORE_VERSION,
            "objects": {_oid(o): o.events.to_json() for o in self.reporting()},
        }
        if self.routing.recipients != self.routing.configured:
            doc["recipients"] = {
                "configured": self.routing.configured_json(),
                "list": [t.to_json() for t in self.routing.recipients],
            }
        return json.dumps(doc, indent=1).encode()

    def _save(self) -> None:
        """Write soon (in a thread); writes never overlap and the last one wins."""
        if self._store_path is None:
            return
        self._dirty = True
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._write_loop())

    async def _write_loop(self) -> None:
        assert self._store_path is not None
        while self._dirty:
            self._dirty = False
            data = self.snapshot()
            try:
                await asyncio.to_thread(atomic_write, self._store_path, data)
            except OSError as exc:
                log.error("BACnet events: cannot save to %s: %s", self._store_path, exc)

    async def close(self) -> None:
        """Finish writing and let queued notifications go (briefly)."""
        if self._writing is not None:
            await self._writing
        if self._store_path is not None and self._dirty:
            await self._write_loop()
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


# AcknowledgeAlarm's Event_State_Acknowledged -> the transition it acknowledges.
_ACK_SLOT = {
    "offnormal": TO_OFFNORMAL,
    "high-limit": TO_OFFNORMAL,
    "low-limit": TO_OFFNORMAL,
    "fault": TO_FAULT,
    "normal": TO_NORMAL,
}


@dataclass(frozen=True, slots=True)
class _Held:
    obj: PointObject
    slot: int
    old: str | None
    new: str
    stamp: float
    ack: bool


def _event_values(obj: PointObject) -> Any:
    if obj.point.high_limit is None:
        return NotificationParameters(
            changeOfState=NotificationParametersChangeOfState(
                newState=PropertyStates(binaryValue=BinaryPV(1 if obj.present() else 0)),
                statusFlags=status_flags(obj),
            )
        )
    limit, deadband = obj.point.high_limit
    return NotificationParameters(
        outOfRange=NotificationParametersOutOfRange(
            exceedingValue=Real(obj.present()),
            statusFlags=status_flags(obj),
            deadband=Real(deadband),
            exceededLimit=Real(limit),
        )
    )


def _same_time(stamp: Any, ours: float) -> bool:
    """Whether an AcknowledgeAlarm's Time_Stamp names our transition (we send date-times)."""
    theirs = getattr(stamp, "dateTime", None)
    if theirs is None:
        return False
    mine = timestamp(ours).dateTime
    return bool(tuple(theirs.date) == tuple(mine.date) and tuple(theirs.time) == tuple(mine.time))


def _camel(state: str) -> str:
    return {"high-limit": "highLimit", "low-limit": "lowLimit"}.get(state, state)


def _oid(obj: PointObject) -> str:
    return f"{obj.identifier[0]},{obj.identifier[1]}"


def _message(obj: PointObject, state: str, *, ack: bool) -> str:
    if ack:
        return f"{obj.name}: {state} acknowledged"
    if obj.point.high_limit is not None and state == "high-limit":
        return f"{obj.name}: {obj.present():g} above the high limit {obj.point.high_limit[0]:g}"
    text = obj.point.point.active_text if state == "offnormal" else state
    return f"{obj.name}: {text}"
