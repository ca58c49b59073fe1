"""COV subscriptions: SubscribeCOV and SubscribeCOVProperty, notifications, persistence.

bacpypes3's own COV machinery is not used: it hooks every property assignment (about 26 µs
each), finds the device object by scanning every object for each notification, cannot serve
SubscribeCOVProperty, ignores Status_Flags changes that come from Reliability, and keeps nothing
across a restart. Here each subscription remembers what it last reported and is checked only when
its object changes.

Criteria (ASHRAE 135 clause 13.1): analog Present_Value when it moved by the COV increment (the
subscription's own for SubscribeCOVProperty, else the object's) since the last notification;
binary on any change; any object when its Status_Flags change.

Confirmed notifications to one subscriber are limited to a few in flight; while the window is
full a subscription is marked pending and gets one notification with the latest values when a
slot frees. So a dead subscriber costs a bounded number of retries, not one per change, and
bacpypes3 never runs out of invoke ids (it would loop forever looking for a free one).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bacpypes3.apdu import ConfirmedCOVNotificationRequest, UnconfirmedCOVNotificationRequest
from bacpypes3.basetypes import (
    COVSubscription,
    DeviceAddress,
    ObjectPropertyReference,
    PropertyIdentifier,
    PropertyValue,
    Recipient,
    RecipientProcess,
    Reliability,
)
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.errors import (
    ExecutionError,
    MissingRequiredParameter,
    PropertyError,
    ServicesError,
)
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier, OctetString

from gateway.bacnet.objects import PointObject, present_value, status_flags
from gateway.store import atomic_write

log = logging.getLogger("gateway.bacnet")

# Properties a SubscribeCOVProperty may monitor on our objects; the rest never change.
COV_PROPERTIES = frozenset({"presentValue", "statusFlags", "reliability"})
MAX_SUBSCRIPTIONS = 10_000
CONFIRMED_IN_FLIGHT = 4  # per subscriber address
CONFIRMED_DEADLINE_S = 30.0
STORE_VERSION = 1
FLUSH_DELAY_S = 1.0  # subscriptions change in bursts (a BMS renewing hundreds): one write each

SendFn = Callable[[Any], "asyncio.Future[Any] | None"]


@dataclass(eq=False, slots=True)
class Subscription:
    address: Any  # bacpypes3 Address of the subscriber
    process_id: int
    object_id: Any  # bacpypes3 ObjectIdentifier
    prop: str | None  # None: SubscribeCOV (the whole object); else the monitored property
    index: int | None
    confirmed: bool
    lifetime: int  # seconds as requested; 0 is indefinite
    increment: float | None  # SubscribeCOVProperty's own COV increment
    expires_at: float | None = None  # loop time
    last_value: float | None = None  # what the subscriber was last told
    last_fault: int | None = None  # the Status_Flags bits last sent (fault, out of service)
    pending: bool = False  # a notification waits for a free confirmed slot
    held: bool = False  # a notification was due while communication control forbade it
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.address, self.process_id, self.object_id, self.prop, self.index)

    def remaining(self, now: float) -> int | None:
        """Seconds left (at least 1 while alive), or None for an indefinite subscription."""
        if self.expires_at is None:
            return None
        return max(1, round(self.expires_at - now))


class CovManager:
    """All subscriptions of one device; `changed(obj)` after any value or reliability change."""

    def __init__(
        self,
        send: SendFn,
        device_id: Any,
        lookup: Callable[[Any], PointObject | None],
        store_path: Path | None,
        *,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
    ) -> None:
        self._send = send
        self._device_id = device_id
        self._lookup = lookup
        self._store_path = store_path
        self._max = max_subscriptions
        self._by_object: dict[Any, list[Subscription]] = {}
        self._by_key: dict[tuple[Any, ...], Subscription] = {}
        self._in_flight: dict[Any, int] = {}
        self._waiting: dict[Any, list[Subscription]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0
        # DeviceCommunicationControl: while suspended nothing is sent; what fell due is held
        # and sent, with the values of that moment, when communication is enabled again.
        self._suspended = False

    # -- subscribing ----------------------------------------------------------------------------

    def subscribe(
        self,
        address: Any,
        process_id: int,
        obj: PointObject,
        *,
        prop: str | None,
        index: int | None,
        confirmed: bool | None,
        lifetime: int | None,
        increment: float | None,
    ) -> Subscription | None:
        """Create, renew or (confirmed and lifetime both absent) cancel a subscription.

        Returns the live subscription, or None after a cancellation. Raises ExecutionError."""
        if prop is not None:
            _check_property(obj, prop, index)
        elif not obj.profile.cov:
            raise ServicesError("covSubscriptionFailed")
        key = (address, process_id, obj.identifier, prop, index)
        existing = self._by_key.get(key)
        if confirmed is None and lifetime is None:
            if existing is not None:
                self._remove(existing)
                log.info("BACnet COV: %s cancelled", _describe(existing))
            return None  # cancelling an unknown subscription succeeds too (clause 13.14.1.1)
        if confirmed is None:
            raise MissingRequiredParameter("issueConfirmedNotifications required")
        if existing is None and len(self._by_key) >= self._max:
            raise ExecutionError("resources", "noSpaceToAddListElement")
        sub = existing or Subscription(
            address, process_id, obj.identifier, prop, index, confirmed, 0, increment
        )
        sub.confirmed = bool(confirmed)
        sub.increment = increment
        sub.lifetime = lifetime or 0
        self._arm(sub, float(sub.lifetime) if sub.lifetime else None)
        if existing is None:
            self._by_key[key] = sub
            self._by_object.setdefault(obj.identifier, []).append(sub)
            log.info("BACnet COV: %s subscribed", _describe(sub))
        self._dirty()
        return sub

    def initial(self, sub: Subscription, obj: PointObject) -> None:
        """Send a new or renewed subscription the current values (clause 13.14.1.1.4)."""
        if self._by_key.get(sub.key) is sub:
            self._notify(sub, obj)

    def _arm(self, sub: Subscription, seconds: float | None) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        loop = asyncio.get_running_loop()
        if seconds is None:
            sub.expires_at = None
            return
        sub.expires_at = loop.time() + seconds
        sub.timer = loop.call_later(seconds, self._expire, sub)

    def _expire(self, sub: Subscription) -> None:
        sub.timer = None
        if self._by_key.get(sub.key) is sub:
            self._remove(sub)
            log.info("BACnet COV: %s expired", _describe(sub))

    def _remove(self, sub: Subscription) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        del self._by_key[sub.key]
        subs = self._by_object.get(sub.object_id)
        if subs is not None:
            subs.remove(sub)
            if not subs:
                del self._by_object[sub.object_id]
        self._dirty()

    def subscriptions(self) -> Iterator[Subscription]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    def close(self) -> None:
        for sub in self._by_key.values():
            if sub.timer is not None:
                sub.timer.cancel()
                sub.timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    # -- detecting changes ----------------------------------------------------------------------

    def changed(self, obj: PointObject) -> None:
        """Notify the subscriptions of `obj` whose criteria are met. Cheap without subscribers."""
        subs = self._by_object.get(obj.identifier)
        if not subs:
            return
        for sub in subs:
            if _due(sub, obj):
                self._notify(sub, obj)

    def notify_all(self, obj: PointObject) -> None:
        """Send every subscriber of `obj` its current values (after a successful write)."""
        for sub in self._by_object.get(obj.identifier, ()):
            self._notify(sub, obj)

    # -- communication control ------------------------------------------------------------------

    def suspend(self) -> None:
        """Stop sending (DeviceCommunicationControl disable or disable-initiation)."""
        self._suspended = True

    def resume(self) -> int:
        """Send again; each subscription that fell due meanwhile gets its current values.
        Returns how many were sent."""
        if not self._suspended:
            return 0
        self._suspended = False
        resent = 0
        for sub in list(self._by_key.values()):
            if not sub.held:
                continue
            sub.held = False
            obj = self._lookup(sub.object_id)
            if obj is not None:
                self._notify(sub, obj)
                resent += 1
        if resent:
            log.info("BACnet COV: communication enabled; %d held notifications sent", resent)
        return resent

    # -- notifying ------------------------------------------------------------------------------

    def _notify(self, sub: Subscription, obj: PointObject) -> None:
        if self._suspended:
            sub.held = True  # last_value stays what the subscriber really knows
            return
        if sub.confirmed and self._in_flight.get(sub.address, 0) >= CONFIRMED_IN_FLIGHT:
            if not sub.pending:
                sub.pending = True
                self._waiting.setdefault(sub.address, []).append(sub)
            return
        sub.pending = False
        sub.last_fault = obj.flag_bits
        sub.last_value = (
            float(obj.reliability) if sub.prop == "reliability" else float(obj.present())
        )
        loop = asyncio.get_running_loop()
        request_class = (
            ConfirmedCOVNotificationRequest if sub.confirmed else UnconfirmedCOVNotificationRequest
        )
        request = request_class(
            subscriberProcessIdentifier=sub.process_id,
            initiatingDeviceIdentifier=self._device_id,
            monitoredObjectIdentifier=obj.identifier,
            timeRemaining=sub.remaining(loop.time()) or 0,
            listOfValues=_values(sub, obj),
            destination=sub.address,
        )
        self.sent += 1
        future = self._send(request)
        if sub.confirmed and future is not None:
            self._in_flight[sub.address] = self._in_flight.get(sub.address, 0) + 1
            future.add_done_callback(functools.partial(self._confirmed_done, sub.address))
            # The stack answers every request within its retries (3 x 3 s); should a send fail
            # before reaching it, this frees the window slot all the same.
            loop.call_later(CONFIRMED_DEADLINE_S, future.cancel)

    def _confirmed_done(self, address: Any, future: asyncio.Future[Any]) -> None:
        left = self._in_flight.get(address, 1) - 1
        if left > 0:
            self._in_flight[address] = left
        else:
            self._in_flight.pop(address, None)
        # Client errors (Error, Reject, Abort, timeout) derive from BaseException in bacpypes3.
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
            log.debug(
                "BACnet COV: confirmed notification to %s failed: %r",
                address,
                None if future.cancelled() else future.exception(),
            )
        waiting = self._waiting.get(address)
        while waiting and self._in_flight.get(address, 0) < CONFIRMED_IN_FLIGHT:
            sub = waiting.pop(0)
            obj = self._lookup(sub.object_id)
            if obj is not None and self._by_key.get(sub.key) is sub:
                self._notify(sub, obj)
        if not waiting:
            self._waiting.pop(address, None)

    # -- Active_COV_Subscriptions ---------------------------------------------------------------

    def active_subscriptions(self) -> list[Any]:
        """The device's Active_COV_Subscriptions list."""
        now = asyncio.get_running_loop().time()
        out = []
        for sub in self._by_key.values():
            addr = sub.address
            entry = COVSubscription(
                recipient=RecipientProcess(
                    recipient=Recipient(
                        address=DeviceAddress(
                            networkNumber=addr.addrNet or 0,
                            macAddress=OctetString(addr.addrAddr or b""),
                        )
                    ),
                    processIdentifier=sub.process_id,
                ),
                monitoredPropertyReference=ObjectPropertyReference(
                    objectIdentifier=sub.object_id,
                    propertyIdentifier=PropertyIdentifier(sub.prop or "presentValue"),
                    propertyArrayIndex=sub.index,
                ),
                issueConfirmedNotifications=sub.confirmed,
                timeRemaining=sub.remaining(now) or 0,
            )
            if sub.increment is not None:
                entry.covIncrement = sub.increment
            out.append(entry)
        return out

    # -- persistence ----------------------------------------------------------------------------

    def _dirty(self) -> None:
        if self._store_path is None or self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._flush_handle = loop.call_later(FLUSH_DELAY_S, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        if self._flushing is not None and not self._flushing.done():
            self._dirty()  # a write is under way: write again after it
            return
        self._flushing = asyncio.ensure_future(self.flush())

    async def flush(self) -> None:
        """Write the subscriptions now (also called at shutdown)."""
        if self._store_path is None:
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        data = self.snapshot()
        try:
            await asyncio.to_thread(atomic_write, self._store_path, data)
        except OSError as exc:
            log.error("BACnet COV: cannot save subscriptions to %s: %s", self._store_path, exc)

    def snapshot(self) -> bytes:
        now_loop = asyncio.get_running_loop().time()
        subs = [
            {
                "address": str(s.address),
                "process_id": s.process_id,
                "object": f"{s.object_id[0]},{s.object_id[1]}",
                "property": s.prop,
                "index": s.index,
                "confirmed": s.confirmed,
                "lifetime": s.lifetime,
                "remaining": None
                if s.expires_at is None
                else round(max(0.0, s.expires_at - now_loop), 3),
                "cov_increment": s.increment,
            }
            for s in self._by_key.values()
        ]
        doc = {"version": STORE_VERSION, "saved_at": time.time(), "subscriptions": subs}
        return json.dumps(doc, indent=1).encode()

    def restore(self, raw: bytes) -> int:
        """Resume subscriptions saved by `snapshot`, less the time spent down. Returns how many."""
        doc = json.loads(raw)
        if doc.get("version") != STORE_VERSION:
            raise ValueError(f"unknown version {doc.get('version')!r}")
        down = max(0.0, time.time() - float(doc["saved_at"]))
        resumed = 0
        for entry in doc["subscriptions"]:
            remaining = entry["remaining"]
            if remaining is not None:
                remaining = float(remaining) - down
                if remaining <= 0:
                    continue  # lapsed while the gateway was down
            obj = self._lookup(ObjectIdentifier(entry["object"]))
            if obj is None:
                continue  # the object is gone from the configuration
            try:
                sub = self.subscribe(
                    Address(entry["address"]),
                    int(entry["process_id"]),
                    obj,
                    prop=entry["property"],
                    index=entry["index"],
                    confirmed=bool(entry["confirmed"]),
                    lifetime=int(entry["lifetime"]),
                    increment=entry["cov_increment"],
                )
            except ExecutionError as exc:
                log.warning("BACnet COV: saved subscription %r dropped: %s", entry, exc)
                continue
            if sub is None:
                continue
            if remaining is not None:
                self._arm(sub, remaining)
            self.initial(sub, obj)  # values may have moved while the gateway was down
            resumed += 1
        return resumed


def _check_property(obj: PointObject, prop: str, index: int | None) -> None:
    if prop not in obj.properties:
        raise PropertyError("unknownProperty")
    if prop not in COV_PROPERTIES or (prop == "presentValue" and not obj.profile.cov):
        raise ServicesError("notCovProperty")
    if index is not None:
        raise PropertyError("propertyIsNotAnArray")


def _due(sub: Subscription, obj: PointObject) -> bool:
    if sub.last_fault is None or obj.flag_bits != sub.last_fault:
        return True
    if sub.prop == "reliability":
        return float(obj.reliability) != sub.last_value
    if sub.prop == "statusFlags":
        return False
    value = obj.present()
    if sub.last_value is None:
        return True
    if obj.profile.analog:
        increment = sub.increment if sub.increment is not None else obj.cov_increment
        if increment > 0:
            return abs(value - sub.last_value) >= increment
    return value != sub.last_value


def _values(sub: Subscription, obj: PointObject) -> list[Any]:
    flags = PropertyValue(propertyIdentifier="statusFlags", value=AnyValue(status_flags(obj)))
    if sub.prop == "statusFlags":
        return [flags]
    if sub.prop == "reliability":
        value = AnyValue(Reliability(obj.reliability))
        return [PropertyValue(propertyIdentifier="reliability", value=value), flags]
    pv = PropertyValue(propertyIdentifier="presentValue", value=AnyValue(present_value(obj)))
    return [pv, flags]


def _describe(sub: Subscription) -> str:
    what = f"{sub.object_id[0]},{sub.object_id[1]}" + (f" {sub.prop}" if sub.prop else "")
    kind = "confirmed" if sub.confirmed else "unconfirmed"
    life = f"{sub.lifetime} s" if sub.lifetime else "indefinite"
    return f"{what} for {sub.address} process {sub.process_id} ({kind}, {life})"
