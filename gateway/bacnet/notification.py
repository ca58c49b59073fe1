"""The Notification Class object: who receives the gateway's event notifications, and how.

Its recipients come from `[bacnet.notification]` in the configuration. Recipient_List is
writable over BACnet only if the catalog lists it in NOTIFICATION_CLASS_WRITABLE; a written list
is persisted (by events.py, with the event states) and kept across restarts until the configured
list changes, as a written alarm threshold is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bacpypes3.basetypes import (
    DaysOfWeek,
    Destination,
    DeviceAddress,
    EventTransitionBits,
    Recipient,
)
from bacpypes3.constructeddata import ArrayOf, ListOf
from bacpypes3.local.object import Object as LocalObject
from bacpypes3.object import NotificationClassObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import ObjectIdentifier, OctetString, Time, Unsigned

from gateway.bacnet.device import property_list
from gateway.notification_settings import (
    MAX_RECIPIENTS,
    TRANSITIONS,
    NotificationSection,
    RecipientSection,
)

_ListOfDestination = ListOf(Destination)
_ALL_DAY = ((0, 0, 0, 0), (23, 59, 59, 99))


@dataclass(frozen=True, slots=True)
class Target:
    """One Recipient_List entry, as plain data (what is persisted)."""

    address: str | None  # "host:port"
    device: int | None
    process: int
    confirmed: bool
    transitions: tuple[bool, bool, bool]  # to-offnormal, to-fault, to-normal
    days: tuple[bool, ...] = (True,) * 7
    from_time: tuple[int, int, int, int] = _ALL_DAY[0]
    to_time: tuple[int, int, int, int] = _ALL_DAY[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "device": self.device,
            "process": self.process,
            "confirmed": self.confirmed,
            "transitions": list(self.transitions),
            "days": list(self.days),
            "from": list(self.from_time),
            "to": list(self.to_time),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Target:
        t = [bool(b) for b in doc["transitions"]]
        days = tuple(bool(d) for d in doc["days"])
        start = tuple(int(v) for v in doc["from"])
        end = tuple(int(v) for v in doc["to"])
        if len(t) != 3 or len(days) != 7 or len(start) != 4 or len(end) != 4:
            raise ValueError("malformed recipient")
        return cls(
            address=None if doc["address"] is None else str(doc["address"]),
            device=None if doc["device"] is None else int(doc["device"]),
            process=int(doc["process"]),
            confirmed=bool(doc["confirmed"]),
            transitions=(t[0], t[1], t[2]),
            days=days,
            from_time=(start[0], start[1], start[2], start[3]),
            to_time=(end[0], end[1], end[2], end[3]),
        )

    def wants(self, slot: int, weekday: int, now: tuple[int, int, int, int]) -> bool:
        """Whether this recipient takes a transition (slot) at this local time (clause 12.21.8)."""
        if not self.transitions[slot] or not self.days[weekday]:
            return False
        return self.from_time <= now <= self.to_time


def target_from_config(r: RecipientSection) -> Target:
    return Target(
        address=r.address,
        device=r.device,
        process=r.process,
        confirmed=r.confirmed,
        transitions=(
            "to-offnormal" in r.transitions,
            "to-fault" in r.transitions,
            "to-normal" in r.transitions,
        ),
    )


def _time(value: Any) -> tuple[int, int, int, int]:
    parts = [0 if v == 255 else int(v) for v in tuple(value)]
    if len(parts) != 4:
        raise ValueError("a time has four parts")
    return (parts[0], parts[1], parts[2], parts[3])


def target_from_destination(d: Any) -> Target:
    """A written Destination as a Target; raises ValueError for what cannot be served."""
    recipient = d.recipient
    address: str | None = None
    device: int | None = None
    if recipient.device is not None:
        device = int(recipient.device[1])
    elif recipient.address is not None:
        mac = bytes(recipient.address.macAddress)
        if recipient.address.networkNumber or len(mac) != 6:
            raise ValueError("only BACnet/IP addresses on the local network are served")
        address = str(IPv4Address(mac))
    else:
        raise ValueError("recipient without device or address")
    bits = list(d.transitions)
    days = list(d.validDays)
    return Target(
        address=address,
        device=device,
        process=int(d.processIdentifier),
        confirmed=bool(d.issueConfirmedNotifications),
        transitions=(bool(bits[0]), bool(bits[1]), bool(bits[2])),
        days=tuple(bool(x) for x in days[:7]) + (True,) * (7 - len(days[:7])),
        from_time=_time(d.fromTime),
        to_time=_time(d.toTime),
    )


def destination(t: Target) -> Any:
    if t.device is not None:
        recipient = Recipient(device=ObjectIdentifier(("device", t.device)))
    else:
        assert t.address is not None
        addr = Address(t.address)
        recipient = Recipient(
            address=DeviceAddress(networkNumber=0, macAddress=OctetString(addr.addrAddr))
        )
    return Destination(
        validDays=DaysOfWeek([1 if d else 0 for d in t.days]),
        fromTime=Time(t.from_time),
        toTime=Time(t.to_time),
        recipient=recipient,
        processIdentifier=t.process,
        issueConfirmedNotifications=t.confirmed,
        transitions=EventTransitionBits([1 if b else 0 for b in t.transitions]),
    )


class NotificationClass:
    """The routing of the gateway's events: class number, priorities, ack rules, recipients."""

    def __init__(self, cfg: NotificationSection) -> None:
        self.number = cfg.instance
        self.priority = list(cfg.priority)
        self.ack_required = [t in cfg.ack_required for t in TRANSITIONS]
        self.configured = [target_from_config(r) for r in cfg.recipients]
        self.recipients: list[Target] = list(self.configured)

    def configured_json(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.configured]


class GatewayNotificationClass(LocalObject, NotificationClassObject):  # type: ignore[misc]
    """The stock object, its Recipient_List read from (and written to) the gateway's routing."""

    _routing: NotificationClass | None = None
    _on_write: Callable[[Sequence[Target]], None] | None = None

    @property
    def recipientList(self) -> Any:  # noqa: N802  (BACnet's name)
        routing = self._routing
        return _ListOfDestination([destination(t) for t in routing.recipients] if routing else [])

    @recipientList.setter
    def recipientList(self, value: Any) -> None:  # noqa: N802
        """Ignored: writes go through `write_recipients`."""

    @property
    def propertyList(self) -> Any:  # noqa: N802
        return property_list(self)

    @propertyList.setter
    def propertyList(self, value: Any) -> None:  # noqa: N802
        """Ignored: computed."""

    def write_recipients(self, value: Any) -> None:
        """A WriteProperty of Recipient_List (already allowed by the catalog); raises ValueError
        for a list the gateway cannot serve."""
        entries = value.cast_out(_ListOfDestination)
        targets = [target_from_destination(d) for d in entries]
        if len(targets) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients")
        assert self._routing is not None
        self._routing.recipients = targets
        if self._on_write is not None:
            self._on_write(targets)


def build_notification_class(
    routing: NotificationClass, *, name: str, on_write: Callable[[Sequence[Target]], None]
) -> GatewayNotificationClass:
    obj = GatewayNotificationClass(
        objectIdentifier=("notification-class", routing.number),
        objectName=name,
        notificationClass=routing.number,
        priority=ArrayOf(Unsigned)([Unsigned(p) for p in routing.priority]),
        ackRequired=EventTransitionBits([1 if b else 0 for b in routing.ack_required]),
        description="Where the gateway's overcrowding alarms are sent",
    )
    obj._routing = routing
    obj._on_write = on_write
    return obj
