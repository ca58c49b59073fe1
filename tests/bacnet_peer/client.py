"""A BACnet/IP client in its own process, driven by JSON lines on stdin.

Tests start it with `python client.py --port N` (it binds 127.0.0.1/8 on that port, or the
interface given as `--address 10.200.0.2/24`; its broadcasts go to that subnet's), wait for
{"event": "ready"}, then send one JSON command per line, each with an "id"; the answer comes back
as {"id": ..., "result": ...} or {"id": ..., "error": {...}}. COV notifications arrive at any
time as {"event": "cov", ...}. Built on bacpypes3's client side, with notifications taken
directly (the stock helper needs a context manager per subscription).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import Any

from bacpypes3.apdu import (
    AcknowledgeAlarmRequest,
    DeviceCommunicationControlRequest,
    Error,
    ErrorRejectAbortNack,
    GetAlarmSummaryRequest,
    GetEventInformationRequest,
    ReadPropertyMultipleRequest,
    ReadPropertyRequest,
    ReinitializeDeviceRequest,
    SimpleAckPDU,
    SubscribeCOVPropertyRequest,
    SubscribeCOVRequest,
    TimeSynchronizationRequest,
    UTCTimeSynchronizationRequest,
    WritePropertyRequest,
    error_types,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import (
    DateTime,
    PropertyIdentifier,
    PropertyReference,
    ReadAccessSpecification,
)
from bacpypes3.comm import bind
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.constructeddata import Sequence, SequenceOf
from bacpypes3.ipv4.service import BVLLServiceElement
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import (
    BitString,
    CharacterString,
    Date,
    Enumerated,
    Null,
    ObjectIdentifier,
    Real,
    Time,
    Unsigned,
)

# bacpypes3 registers no error type for SubscribeCOVProperty (service 28), so as a client it
# cannot decode that service's Error and the request would hang; register the plain one.
error_types.setdefault(28, type("Error(subscribe-cov-property)", (Error,), {"service_choice": 28}))


def to_json(v: Any) -> Any:
    """A bacpypes3 value as plain JSON (enumerations by name, bit strings as 0/1 lists)."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, ObjectIdentifier):
        return f"{v[0]},{v[1]}"
    if isinstance(v, Enumerated):
        return str(v)
    if isinstance(v, BitString):
        return [int(b) for b in v]
    if isinstance(v, CharacterString):
        return str(v)
    if isinstance(v, float | int | str):
        return v
    if isinstance(v, DateTime):
        return str(v)
    if isinstance(v, Sequence):
        return {k: to_json(getattr(v, k, None)) for k in v._order}
    if isinstance(v, list | tuple):
        return [to_json(x) for x in v]
    return str(v)


def stamp_json(stamp: Any) -> Any:
    """A BACnetTimeStamp as [date tuple, time tuple] (date-time), or its text otherwise."""
    dt = getattr(stamp, "dateTime", None)
    if dt is None:
        return str(stamp)
    return [list(dt.date), list(dt.time)]


def describe_error(response: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": type(response).__name__}
    for attr in ("errorClass", "errorCode", "apduAbortRejectReason"):
        value = getattr(response, attr, None)
        if value is not None:
            out[attr] = str(value)
    return out


class RequestFailedError(Exception):
    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__(detail)
        self.detail = detail


def emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


class ClientApp(Application):  # type: ignore[misc]  # bacpypes3 has no type hints
    """Reports every COV notification; acknowledges confirmed ones unless told not to."""

    ack_confirmed = True

    async def do_ConfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        self._report(apdu, confirmed=True)
        if self.ack_confirmed:
            await self.response(SimpleAckPDU(context=apdu))

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: Any) -> None:
        self._report(apdu, confirmed=False)

    async def do_ConfirmedEventNotificationRequest(self, apdu: Any) -> None:
        self._report_event(apdu, confirmed=True)
        if self.ack_confirmed:
            await self.response(SimpleAckPDU(context=apdu))

    async def do_UnconfirmedEventNotificationRequest(self, apdu: Any) -> None:
        self._report_event(apdu, confirmed=False)

    def _report_event(self, apdu: Any, *, confirmed: bool) -> None:
        values = apdu.eventValues
        change = getattr(values, "changeOfState", None) if values is not None else None
        out_of_range = getattr(values, "outOfRange", None) if values is not None else None
        params = change if change is not None else out_of_range
        emit(
            {
                "event": "notification",
                "confirmed": confirmed,
                "source": str(apdu.pduSource),
                "process": apdu.processIdentifier,
                "device": to_json(apdu.initiatingDeviceIdentifier),
                "object": to_json(apdu.eventObjectIdentifier),
                "stamp": stamp_json(apdu.timeStamp),
                "notification_class": apdu.notificationClass,
                "priority": apdu.priority,
                "event_type": str(apdu.eventType),
                "message": None if apdu.messageText is None else str(apdu.messageText),
                "notify_type": str(apdu.notifyType),
                "ack_required": apdu.ackRequired,
                "from": None if apdu.fromState is None else str(apdu.fromState),
                "to": str(apdu.toState),
                "new_state": None if change is None else str(change.newState.binaryValue),
                "status_flags": None if params is None else to_json(params.statusFlags),
                "exceeding": None if out_of_range is None else out_of_range.exceedingValue,
                "limit": None if out_of_range is None else out_of_range.exceededLimit,
                "deadband": None if out_of_range is None else out_of_range.deadband,
            }
        )

    def _report(self, apdu: Any, *, confirmed: bool) -> None:
        received = time.monotonic()
        values = {}
        for pv in apdu.listOfValues:
            name = pv.propertyIdentifier.attr
            values[name] = to_json(_decode_any(name, pv.value))
        emit(
            {
                "event": "cov",
                "t": received,
                "confirmed": confirmed,
                "source": str(apdu.pduSource),
                "process": apdu.subscriberProcessIdentifier,
                "device": to_json(apdu.initiatingDeviceIdentifier),
                "object": to_json(apdu.monitoredObjectIdentifier),
                "time_remaining": apdu.timeRemaining,
                "values": values,
            }
        )


def _decode_any(name: str, value: Any) -> Any:
    from bacpypes3.basetypes import BinaryPV, Reliability, StatusFlags

    choices: dict[str, Any] = {"statusFlags": StatusFlags, "reliability": Reliability}
    if name in choices:
        return value.cast_out(choices[name])
    for datatype in (Real, BinaryPV, DateTime, Unsigned):
        try:
            return value.cast_out(datatype)
        except Exception:
            continue
    return None


class Peer:
    def __init__(self, app: ClientApp) -> None:
        self.app = app
        self.bvll = BVLLServiceElement()
        bind(self.bvll, app.nsap.local_adapter.clientPeer)

    async def request(self, apdu: Any) -> Any:
        try:
            response = await self.app.request(apdu)
        except ErrorRejectAbortNack as exc:  # a BaseException in bacpypes3
            raise RequestFailedError(describe_error(exc)) from None
        if isinstance(response, ErrorRejectAbortNack):
            raise RequestFailedError(describe_error(response))
        return response

    @staticmethod
    def oid(text: str) -> Any:
        return ObjectIdentifier(text)

    async def read(
        self, *, address: str, object: str, property: str, index: int | None = None
    ) -> Any:
        req = ReadPropertyRequest(
            objectIdentifier=self.oid(object),
            propertyIdentifier=PropertyIdentifier(property),
            destination=Address(address),
        )
        if index is not None:
            req.propertyArrayIndex = index
        started = time.perf_counter()
        ack = await self.request(req)
        elapsed = time.perf_counter() - started
        value = await self._cast(ack.objectIdentifier, property, index, ack.propertyValue)
        return {"value": value, "seconds": elapsed}

    async def _cast(self, objid: Any, prop: str, index: int | None, value: Any) -> Any:
        from bacpypes3.constructeddata import Array
        from bacpypes3.vendor import get_vendor_info

        cls = get_vendor_info(0).get_object_class(objid[0])
        datatype = cls.get_property_type(prop) if cls else None
        if datatype is None:
            return None
        if issubclass(datatype, Array) and index is not None:
            datatype = Unsigned if index == 0 else datatype._subtype
        return to_json(value.cast_out(datatype))

    async def rpm(self, *, address: str, specs: list[list[Any]]) -> Any:
        access = []
        for objtext, props in specs:
            refs = []
            for p in props:
                name, index = (p, None) if isinstance(p, str) else (p[0], p[1])
                ref = PropertyReference(propertyIdentifier=PropertyIdentifier(name))
                if index is not None:
                    ref.propertyArrayIndex = index
                refs.append(ref)
            access.append(
                ReadAccessSpecification(
                    objectIdentifier=self.oid(objtext), listOfPropertyReferences=refs
                )
            )
        req = ReadPropertyMultipleRequest(
            listOfReadAccessSpecs=SequenceOf(ReadAccessSpecification)(access),
            destination=Address(address),
        )
        started = time.perf_counter()
        ack = await self.request(req)
        elapsed = time.perf_counter() - started
        out = []
        for result in ack.listOfReadAccessResults:
            objid = result.objectIdentifier
            for element in result.listOfResults:
                prop = element.propertyIdentifier.attr
                index = element.propertyArrayIndex
                read = element.readResult
                if read.propertyAccessError is not None:
                    err = read.propertyAccessError
                    entry: Any = {"error": [str(err.errorClass), str(err.errorCode)]}
                else:
                    entry = {"value": await self._cast(objid, prop, index, read.propertyValue)}
                out.append([to_json(objid), prop, index, entry])
        return {"results": out, "seconds": elapsed}

    async def write(
        self,
        *,
        address: str,
        object: str,
        property: str,
        value: Any,
        type: str,
        priority: int | None = None,
        index: int | None = None,
    ) -> Any:
        encoded: Any
        if type == "real":
            encoded = Real(value)
        elif type == "enumerated":
            encoded = Enumerated(value)
        elif type == "unsigned":
            encoded = Unsigned(value)
        elif type == "null":
            encoded = Null(())
        elif type == "charstring":
            encoded = CharacterString(value)
        else:
            raise ValueError(f"unknown type {type}")
        req = WritePropertyRequest(
            objectIdentifier=self.oid(object),
            propertyIdentifier=PropertyIdentifier(property),
            propertyValue=AnyValue(encoded),
            destination=Address(address),
        )
        if priority is not None:
            req.priority = priority
        if index is not None:
            req.propertyArrayIndex = index
        await self.request(req)
        return "ack"

    async def subscribe(
        self,
        *,
        address: str,
        object: str,
        process: int,
        confirmed: bool | None = False,
        lifetime: int | None = 300,
        property: str | None = None,
        increment: float | None = None,
        cancel: bool = False,
    ) -> Any:
        req: Any
        if property is None:
            req = SubscribeCOVRequest(
                subscriberProcessIdentifier=process,
                monitoredObjectIdentifier=self.oid(object),
                destination=Address(address),
            )
        else:
            req = SubscribeCOVPropertyRequest(
                subscriberProcessIdentifier=process,
                monitoredObjectIdentifier=self.oid(object),
                # PropertyReference.cast takes a name, not an instance.
                monitoredPropertyIdentifier=property,
                destination=Address(address),
            )
            if increment is not None:
                req.covIncrement = increment
        if not cancel:
            req.issueConfirmedNotifications = confirmed
            if lifetime is not None:
                req.lifetime = lifetime
        await self.request(req)
        return "ack"

    async def whois(
        self,
        *,
        low: int | None = None,
        high: int | None = None,
        address: str | None = None,
        seconds: float = 2.0,
    ) -> Any:
        i_ams = await self.app.who_is(
            low, high, Address(address) if address else None, timeout=seconds
        )
        return [{"device": a.iAmDeviceIdentifier[1], "source": str(a.pduSource)} for a in i_ams]

    async def whohas(
        self,
        *,
        address: str,
        name: str | None = None,
        object: str | None = None,
        seconds: float = 2.0,
    ) -> Any:
        found = await self.app.who_has(
            None,
            None,
            self.oid(object) if object else None,
            CharacterString(name) if name else None,
            Address(address),
            timeout=seconds,
        )
        return [
            {
                "device": to_json(h.deviceIdentifier),
                "object": to_json(h.objectIdentifier),
                "name": str(h.objectName),
            }
            for h in found
        ]

    async def dcc(
        self, *, address: str, state: str, minutes: int | None = None, password: str | None = None
    ) -> Any:
        req = DeviceCommunicationControlRequest(enableDisable=state, destination=Address(address))
        if minutes is not None:
            req.timeDuration = minutes
        if password is not None:
            req.password = password
        await self.request(req)
        return "ack"

    async def reinit(self, *, address: str, state: str, password: str | None = None) -> Any:
        req = ReinitializeDeviceRequest(
            reinitializedStateOfDevice=state, destination=Address(address)
        )
        if password is not None:
            req.password = password
        await self.request(req)
        return "ack"

    async def timesync(self, *, address: str, utc: bool = False) -> Any:
        cls = UTCTimeSynchronizationRequest if utc else TimeSynchronizationRequest
        now = time.gmtime() if utc else time.localtime()
        stamp = DateTime(
            date=Date((now.tm_year - 1900, now.tm_mon, now.tm_mday, now.tm_wday + 1)),
            time=Time((now.tm_hour, now.tm_min, now.tm_sec, 0)),
        )
        await self.app.request(cls(time=stamp, destination=Address(address)))
        return "sent"

    async def rfdt(self, *, address: str) -> Any:
        entries = await self.bvll.read_foreign_device_table(IPv4Address(address))
        if entries is None:
            raise RequestFailedError({"kind": "NoResponse"})
        return [
            {"address": str(e.fdAddress), "ttl": e.fdTTL, "remain": e.fdRemain} for e in entries
        ]

    async def raw(self, *, host: str, port: int, hex: str, wait: float = 0.0) -> Any:
        """Send bytes from a throwaway socket; return what comes back within `wait` seconds."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            sock.sendto(bytes.fromhex(hex), (host, port))
            replies = []
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), left)
                except TimeoutError:
                    break
                replies.append(data.hex())
            return replies

    async def ackalarm(
        self,
        *,
        address: str,
        object: str,
        state: str,
        stamp: list[list[int]],
        source: str = "test peer",
        process: int = 1,
    ) -> Any:
        from bacpypes3.basetypes import EventState, TimeStamp

        now = time.localtime()
        req = AcknowledgeAlarmRequest(
            acknowledgingProcessIdentifier=process,
            eventObjectIdentifier=self.oid(object),
            eventStateAcknowledged=EventState(state),
            timeStamp=TimeStamp(
                dateTime=DateTime(date=Date(tuple(stamp[0])), time=Time(tuple(stamp[1])))
            ),
            acknowledgmentSource=CharacterString(source),
            timeOfAcknowledgment=TimeStamp(
                dateTime=DateTime(
                    date=Date((now.tm_year - 1900, now.tm_mon, now.tm_mday, now.tm_wday + 1)),
                    time=Time((now.tm_hour, now.tm_min, now.tm_sec, 0)),
                )
            ),
            destination=Address(address),
        )
        await self.request(req)
        return "ack"

    async def eventinfo(self, *, address: str, after: str | None = None) -> Any:
        req = GetEventInformationRequest(destination=Address(address))
        if after is not None:
            req.lastReceivedObjectIdentifier = self.oid(after)
        ack = await self.request(req)
        return {
            "more": bool(ack.moreEvents),
            "events": [
                {
                    "object": to_json(e.objectIdentifier),
                    "state": str(e.eventState),
                    "acked": to_json(e.acknowledgedTransitions),
                    "stamps": [stamp_json(t) for t in e.eventTimeStamps],
                    "notify_type": str(e.notifyType),
                    "enable": to_json(e.eventEnable),
                    "priorities": list(e.eventPriorities),
                }
                for e in ack.listOfEventSummaries
            ],
        }

    async def alarmsummary(self, *, address: str) -> Any:
        ack = await self.request(GetAlarmSummaryRequest(destination=Address(address)))
        return [
            {
                "object": to_json(a.objectIdentifier),
                "state": str(a.alarmState),
                "acked": to_json(a.acknowledgedTransitions),
            }
            for a in ack.listOfAlarmSummaries
        ]

    async def write_recipients(
        self, *, address: str, object: str, recipients: list[dict[str, Any]]
    ) -> Any:
        """Write a Notification Class's Recipient_List: entries with "address" (host:port)
        or "device", "process" and "confirmed"."""
        from bacpypes3.basetypes import (
            DaysOfWeek,
            Destination,
            DeviceAddress,
            EventTransitionBits,
            Recipient,
        )
        from bacpypes3.constructeddata import ListOf
        from bacpypes3.primitivedata import OctetString

        entries = []
        for r in recipients:
            if "device" in r:
                who = Recipient(device=ObjectIdentifier(("device", r["device"])))
            else:
                mac = Address(r["address"]).addrAddr
                who = Recipient(address=DeviceAddress(networkNumber=0, macAddress=OctetString(mac)))
            entries.append(
                Destination(
                    validDays=DaysOfWeek([1] * 7),
                    fromTime=Time((0, 0, 0, 0)),
                    toTime=Time((23, 59, 59, 99)),
                    recipient=who,
                    processIdentifier=r.get("process", 0),
                    issueConfirmedNotifications=r.get("confirmed", True),
                    transitions=EventTransitionBits([1, 1, 1]),
                )
            )
        req = WritePropertyRequest(
            objectIdentifier=self.oid(object),
            propertyIdentifier=PropertyIdentifier("recipientList"),
            propertyValue=AnyValue(ListOf(Destination)(entries)),
            destination=Address(address),
        )
        await self.request(req)
        return "ack"

    async def exchange(self, *, host: str, port: int, packets: list[str], wait: float = 2.0) -> Any:
        """Send each datagram and wait for one reply before the next (None if none came)."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            replies: list[str | None] = []
            for packet in packets:
                sock.sendto(bytes.fromhex(packet), (host, port))
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 65535), wait)
                except TimeoutError:
                    replies.append(None)
                    continue
                replies.append(data.hex())
            return replies

    async def set_ack(self, *, enabled: bool) -> Any:
        ClientApp.ack_confirmed = enabled
        return enabled


async def sockets_bound(app: Any) -> None:
    """bacpypes3 binds its UDP sockets in background tasks: a peer that says "ready" before
    they are bound loses the first datagrams sent to it (seen under CPU load)."""
    tasks: list[Any] = []
    for link in app.link_layers.values():
        tasks.extend(getattr(link.server, "_transport_tasks", ()))  # bacpypes3 0.0.110
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks), 10.0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", type=int, default=599)
    parser.add_argument("--address", default="127.0.0.1/8")
    args = parser.parse_args()

    device = DeviceObject(
        objectIdentifier=("device", args.instance),
        objectName="test client",
        vendorIdentifier=999,
        # Like a BMS workstation: room for a whole device's "all" answer as the catalog grows
        # (bacpypes3's default is 16 segments).
        maxSegmentsAccepted=64,
    )
    port = NetworkPortObject(
        f"{args.address}:{args.port}", objectIdentifier=("network-port", 1), objectName="port"
    )
    app = ClientApp.from_object_list([device, port])
    await sockets_bound(app)
    peer = Peer(app)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "ready", "port": args.port})
    tasks = set()
    while line := await reader.readline():
        cmd = json.loads(line)
        task = asyncio.ensure_future(run(peer, cmd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    app.close()


async def run(peer: Peer, cmd: dict[str, Any]) -> None:
    ident = cmd.pop("id")
    op = cmd.pop("op")
    try:
        result = await getattr(peer, op)(**cmd)
        emit({"id": ident, "result": result})
    except RequestFailedError as exc:
        emit({"id": ident, "error": exc.detail})
    except BaseException as exc:
        emit({"id": ident, "error": {"kind": type(exc).__name__, "detail": str(exc)}})


if __name__ == "__main__":
    asyncio.run(main())
