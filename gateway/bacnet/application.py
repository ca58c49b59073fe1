"""The bacpypes3 application: the BACnet services the gateway executes.

bacpypes3 provides the protocol stack (BVLL, network layer, segmentation, transactions) and the
Device object; the services that touch our objects are implemented here, over `PointObject`s,
so that reads are cheap, writes go through the catalog's rules, and COV is ours (see cov.py).
"""

from __future__ import annotations

import asyncio
import calendar
import hmac
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bacpypes3.apdu import (
    APDU,
    AbortPDU,
    APCISequence,
    ComplexAckPDU,
    ConfirmedRequestPDU,
    DeviceCommunicationControlRequest,
    IAmRequest,
    ReadPropertyACK,
    ReadPropertyMultipleACK,
    ReadPropertyMultipleRequest,
    ReadPropertyRequest,
    ReinitializeDeviceRequest,
    RejectPDU,
    SimpleAckPDU,
    SubscribeCOVPropertyRequest,
    SubscribeCOVRequest,
    TimeSynchronizationRequest,
    UTCTimeSynchronizationRequest,
    WhoHasRequest,
    WritePropertyRequest,
    confirmed_request_types,
)
from bacpypes3.app import Application
from bacpypes3.appservice import ApplicationServiceAccessPoint, ServerSSM
from bacpypes3.basetypes import (
    ErrorType,
    PropertyIdentifier,
    ProtocolLevel,
    ReadAccessResult,
    ReadAccessResultElement,
    ReadAccessResultElementChoice,
)
from bacpypes3.comm import bind
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.constructeddata import Array
from bacpypes3.errors import (
    ExecutionError,
    InconsistentParameters,
    ObjectError,
    PropertyError,
    UnrecognizedService,
)
from bacpypes3.netservice import NetworkServiceAccessPoint, NetworkServiceElement
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectType, Unsigned

from gateway.access import AllowList, bacnet_source_host
from gateway.bacnet.alarm_services import AlarmServices
from gateway.bacnet.cov import CovManager
from gateway.bacnet.device import services_supported
from gateway.bacnet.events import EventManager
from gateway.bacnet.fastread import READ_PROPERTY, READ_PROPERTY_MULTIPLE, FastReader
from gateway.bacnet.notification import GatewayNotificationClass
from gateway.bacnet.objects import PointObject, optional_properties, required_properties
from gateway.bacnet.reject import reject_reason
from gateway.bacnet.writes import ValidWrite, validate_write
from gateway.commands import REQUESTER

log = logging.getLogger("gateway.bacnet")

WILDCARD_DEVICE = 4194303
_SPECIAL = {"all", "required", "optional"}
# The service's enumeration as printed -> the spelling bacpypes3's access point compares with.
_DCC_STATES = {"enable": "enable", "disable": "disable", "disable-initiation": "disableInitiation"}

# Confirmed services a device still executes while communication is disabled (clause 16.1).
_ALLOWED_WHILE_DISABLED = frozenset({17, 20})  # DeviceCommunicationControl, ReinitializeDevice

WriteHandler = Callable[[PointObject, ValidWrite], Awaitable[None]]
ReinitHandler = Callable[[str], None]


class GatewayAccessPoint(ApplicationServiceAccessPoint):  # type: ignore[misc]  # untyped
    """The stock access point, with DeviceCommunicationControl done right.

    bacpypes3's own check, once communication is disabled, reads APDU fields off the raw PDU
    and raises for every datagram, so not even the DCC that re-enables gets through. Here the
    stock state stays "enable" and incoming requests are filtered on their first bytes;
    outgoing requests are filtered in `GatewayApplication.request`."""

    communication = "enable"  # enable, disable or disableInitiation
    fast: FastReader | None = None  # set by `GatewayApplication.serve`

    async def confirmation(self, pdu: Any) -> None:
        data = pdu.pduData
        if self.communication == "disable" and not _allowed_while_disabled(data):
            return  # a disabled device does not answer, not even with an abort
        if not data or data[0] >> 4 != 0:
            await super().confirmation(pdu)
            return
        # A confirmed request. One sent to a broadcast address is ignored (clause 5.4.5.1):
        # every device would answer it and the requester cannot tell the answers apart.
        if pdu.pduDestination is not None and pdu.pduDestination.addrType in _BROADCASTS:
            return
        try:
            apdu = APDU.decode(pdu)  # the APCI only; the service data stays raw bytes
        except Exception:  # a header cut short: nothing to answer it with
            log.debug("BACnet: undecodable request header from %s", pdu.pduSource)
            return
        if not isinstance(apdu, ConfirmedRequestPDU):
            return
        for tr in self.serverTransactions:
            if apdu.apduInvokeID == tr.invokeID and apdu.pduSource == tr.pdu_address:
                break
        else:
            tr = GatewayServerSSM(self, apdu.pduSource)
            self.serverTransactions.append(tr)
        await tr.indication(apdu)

    def fast_reply(self, service: int, data: bytes) -> bytes | None:
        """The reply's service data when the fast path can answer the request, else None."""
        fast = self.fast
        if fast is None:
            return None
        if service == READ_PROPERTY:
            return fast.read_property(data)
        if service == READ_PROPERTY_MULTIPLE:
            return fast.read_property_multiple(data)
        return None


@dataclass(frozen=True, slots=True)
class TransactionSettings:
    """What each transaction copies from the device object when it starts. Read through the
    stock device object (a bacpypes3 local object) those six attributes cost about 0.4 ms per
    request; they never change, so they are read once."""

    numberOfApduRetries: int  # noqa: N815  (bacpypes3 reads these names)
    apduTimeout: int  # noqa: N815
    segmentationSupported: Any  # noqa: N815
    apduSegmentTimeout: int  # noqa: N815
    maxSegmentsAccepted: int  # noqa: N815
    maxApduLengthAccepted: int  # noqa: N815

    @classmethod
    def of(cls, device: Any) -> TransactionSettings:
        return cls(
            numberOfApduRetries=device.numberOfApduRetries,
            apduTimeout=device.apduTimeout,
            segmentationSupported=device.segmentationSupported,
            apduSegmentTimeout=device.apduSegmentTimeout,
            maxSegmentsAccepted=device.maxSegmentsAccepted,
            maxApduLengthAccepted=device.maxApduLengthAccepted,
        )


_BROADCASTS = frozenset(
    {Address.localBroadcastAddr, Address.remoteBroadcastAddr, Address.globalBroadcastAddr}
)


class GatewayServerSSM(ServerSSM):  # type: ignore[misc]  # untyped
    """The stock server transaction, with the request handed to the application our way.

    The stock one decodes the whole request into bacpypes3 objects and answers anything it
    cannot decode with an Abort. Here RP/RPM that the fast path understands are answered from
    bytes (the ack still goes through this transaction, so segmentation and retries stay
    bacpypes3's), unknown services are rejected as unrecognized-service, and undecodable
    requests get the Reject reason a BACnet device gives (clause 18.8)."""

    async def request(self, apdu: Any) -> None:
        if isinstance(apdu, AbortPDU):
            await super().request(apdu)
            return
        sap = self.ssmSAP
        service = apdu.apduService
        data = bytes(apdu.pduData)
        reply = sap.fast_reply(service, data)
        if reply is not None:
            ack = ComplexAckPDU(service, apdu.apduInvokeID)
            ack.put_data(reply)
            ack.pduDestination = self.pdu_address
            ack.pduNetworkPriority = apdu.pduNetworkPriority  # a reply keeps the request's
            await self.confirmation(ack)
            return
        if service not in confirmed_request_types:
            await self._reject(apdu, "unrecognizedService")
            return
        try:
            decoded = APCISequence.decode(apdu)
        except Exception:  # bacpypes3 raises many kinds for bad input
            decoded = None
        reason = reject_reason(service, data, decoded)
        if reason is not None or decoded is None:
            await self._reject(apdu, reason or "other")
            return
        decoded.pduSource = self.pdu_address
        decoded.pduDestination = None
        await sap.sap_request(decoded)

    async def segmented_response_timeout(self) -> None:
        """No Segment-ACK came in time: send the unacknowledged segments again.

        Until the requester's first Segment-ACK there is no window size yet, and bacpypes3
        (0.0.110, appservice.py:1512 calling fill_window, which asserts it at line 367) fails
        every retry with an AssertionError, logged as a traceback, and never sends the first
        segment again (tests/test_bacnet_segments.py shows it). Until that ACK the window is the
        first segment alone, so that is what a retry sends."""
        if self.actualWindowSize is None and self.segmentRetryCount < self.numberOfApduRetries:
            self.segmentRetryCount += 1
            self.start_timer(self.segmentTimeout)
            await self.response(self.get_segment(0))
            return
        await super().segmented_response_timeout()

    async def _reject(self, apdu: Any, reason: str) -> None:
        reject = RejectPDU(apdu.apduInvokeID, reason)
        reject.pduDestination = self.pdu_address
        reject.pduNetworkPriority = apdu.pduNetworkPriority
        await self.confirmation(reject)


def _allowed_while_disabled(data: bytes) -> bool:
    if len(data) < 4 or data[0] >> 4 != 0:  # only confirmed requests can be let through
        return False
    service_at = 5 if data[0] & 0x08 else 3  # a segmented request has two more header bytes
    return len(data) > service_at and data[service_at] in _ALLOWED_WHILE_DISABLED


class GatewayApplication(AlarmServices, Application):  # type: ignore[misc]  # untyped
    """Services over the gateway's objects. Call `serve` before the first request arrives."""

    points: dict[Any, PointObject]
    names: dict[str, PointObject]
    cov: CovManager
    write_handler: WriteHandler
    password: str | None
    on_reinitialize: ReinitHandler | None
    # Stations allowed to write and manage the device (None: any); set by the server.
    access: AllowList | None = None
    _dcc_timer: asyncio.TimerHandle | None

    @classmethod
    def build(cls, device: Any) -> GatewayApplication:
        """What `Application.from_object_list` does, with our access point."""
        app = cls()
        app.asap = GatewayAccessPoint(TransactionSettings.of(device), app.device_info_cache)
        app.nsap = NetworkServiceAccessPoint()
        app.nse = NetworkServiceElement()
        bind(app.nse, app.nsap)
        bind(app, app.asap, app.nsap)
        app.add_object(device)
        return app

    def request(self, apdu: Any) -> Any:
        """Outgoing requests, less what communication control forbids."""
        state = self.asap.communication
        if state == "disable" or (
            state == "disableInitiation" and not isinstance(apdu, IAmRequest)
        ):
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.cancel()  # not sent; a confirmed notification counts as failed
            return future
        return super().request(apdu)

    def serve(
        self,
        points: Mapping[Any, PointObject],
        cov: CovManager,
        write_handler: WriteHandler,
        *,
        password: str | None,
        on_reinitialize: ReinitHandler | None = None,
        events: EventManager | None = None,
    ) -> None:
        self.events = events
        self.points = dict(points)
        self.names = {o.name: o for o in self.points.values()}
        self.cov = cov
        self.write_handler = write_handler
        self.password = password
        self.on_reinitialize = on_reinitialize
        self._dcc_timer = None

    def serve_fast(self, object_list: Any) -> None:
        """Answer the common reads from bytes (see fastread.py); call after `serve`."""
        device = self.device_object
        self.asap.fast = FastReader(self.points.values(), device.objectIdentifier[1], object_list)

    @property
    def fast_reads(self) -> bool:
        return self.asap.fast is not None

    def disable_fast_reads(self) -> None:
        """Everything through bacpypes3's generic path (to compare the two)."""
        self.asap.fast = None

    def add_network_port(self, port: Any, link: Any, link_address: Any) -> None:
        """Add the Network Port object with a link layer we built ourselves.

        The stock `add_object` would build its own link layer for a BACnet/IP port; with the
        protocol level set to anything else it only registers the object."""
        level = port.protocolLevel
        port.protocolLevel = ProtocolLevel.physical
        try:
            self.add_object(port)
        finally:
            port.protocolLevel = level
        self.link_layers[port.objectIdentifier] = link
        self.nsap.bind(link, address=link_address)

    # -- lookups --------------------------------------------------------------------------------

    def get_object_id(self, objid: Any) -> Any:
        obj = self.points.get(objid)
        return obj if obj is not None else self.objectIdentifier.get(objid)

    def get_object_name(self, objname: Any) -> Any:
        obj = self.names.get(str(objname))
        return obj if obj is not None else self.objectName.get(objname)

    def _resolve(self, objid: Any) -> Any:
        # (An ObjectType compares equal to its enumeration member, not to its name.)
        if objid[0] == ObjectType.device and objid[1] == WILDCARD_DEVICE and self.device_object:
            return self.device_object.objectIdentifier
        return objid

    def get_services_supported(self) -> Any:
        return services_supported()

    # -- ReadProperty ---------------------------------------------------------------------------

    async def do_ReadPropertyRequest(self, apdu: ReadPropertyRequest) -> None:  # noqa: N802
        objid = self._resolve(apdu.objectIdentifier)
        obj = self.get_object_id(objid)
        if obj is None:
            raise ObjectError("unknownObject")
        value = await self._read(obj, apdu.propertyIdentifier, apdu.propertyArrayIndex)
        await self.response(
            ReadPropertyACK(
                objectIdentifier=objid,
                propertyIdentifier=apdu.propertyIdentifier,
                propertyArrayIndex=apdu.propertyArrayIndex,
                propertyValue=value,
                context=apdu,
            )
        )

    async def _read(self, obj: Any, prop: Any, index: int | None) -> Any:
        """A property value wrapped for the wire; raises ExecutionError like a device must."""
        attr = prop.attr
        if attr in _SPECIAL:
            raise PropertyError("unknownProperty")  # only ReadPropertyMultiple expands these
        if isinstance(obj, PointObject):
            return AnyValue(obj.read(attr, index))
        try:
            value = await obj.read_property(attr, index)
        except AttributeError:
            raise PropertyError("unknownProperty") from None
        if value is None:
            raise PropertyError("unknownProperty")
        datatype = obj.get_property_type(attr)
        if index is not None and not (isinstance(datatype, type) and issubclass(datatype, Array)):
            raise PropertyError("propertyIsNotAnArray")
        if index == 0:
            value = Unsigned(value) if not isinstance(value, Unsigned) else value
        return AnyValue(value)

    # -- ReadPropertyMultiple -------------------------------------------------------------------

    async def do_ReadPropertyMultipleRequest(  # noqa: N802
        self, apdu: ReadPropertyMultipleRequest
    ) -> None:
        specs = [(self._resolve(s.objectIdentifier), s) for s in apdu.listOfReadAccessSpecs]
        if not any(self.get_object_id(objid) is not None for objid, _ in specs):
            raise ObjectError("unknownObject")
        results = []
        for objid, spec in specs:
            obj = self.get_object_id(objid)
            elements: list[Any] = []
            for ref in spec.listOfPropertyReferences:
                attr = ref.propertyIdentifier.attr
                if obj is not None and attr in _SPECIAL:
                    for name in self._expand(obj, attr):
                        element = await self._result_element(obj, PropertyIdentifier(name), None)
                        # ALL/REQUIRED/OPTIONAL list what exists: leave out what cannot be read.
                        if element.readResult.propertyAccessError is None:
                            elements.append(element)
                    continue
                elements.append(
                    await self._result_element(obj, ref.propertyIdentifier, ref.propertyArrayIndex)
                )
            results.append(ReadAccessResult(objectIdentifier=objid, listOfResults=elements))
        await self.response(ReadPropertyMultipleACK(listOfReadAccessResults=results, context=apdu))

    async def _result_element(self, obj: Any, prop: Any, index: int | None) -> Any:
        choice = ReadAccessResultElementChoice()
        if obj is None:
            choice.propertyAccessError = ErrorType(errorClass="object", errorCode="unknownObject")
        else:
            try:
                choice.propertyValue = await self._read(obj, prop, index)
            except ExecutionError as err:
                choice.propertyAccessError = ErrorType(
                    errorClass=err.errorClass, errorCode=err.errorCode
                )
        return ReadAccessResultElement(
            propertyIdentifier=prop, propertyArrayIndex=index, readResult=choice
        )

    @staticmethod
    def _expand(obj: Any, which: str) -> list[str]:
        """Property names for ALL, REQUIRED or OPTIONAL (Property_List is never among them)."""
        if isinstance(obj, PointObject):
            if which == "all":
                names = list(obj.properties)
            elif which == "required":
                names = list(required_properties(obj))
            else:
                names = list(optional_properties(obj))
            return [n for n in names if n != "propertyList"]
        present = [n for n in obj._elements if inspect.getattr_static(obj, n, None) is not None]
        required: set[str] = {"objectIdentifier", "objectName", "objectType"}
        for cls in type(obj).__mro__:
            required.update(getattr(cls, "_required", ()))
        if which == "required":
            present = [n for n in present if n in required]
        elif which == "optional":
            present = [n for n in present if n not in required]
        return [n for n in present if n != "propertyList"]

    # -- WriteProperty --------------------------------------------------------------------------

    async def do_WritePropertyRequest(self, apdu: WritePropertyRequest) -> None:  # noqa: N802
        self._check_access(apdu, PropertyError("writeAccessDenied"))
        obj = self.get_object_id(self._resolve(apdu.objectIdentifier))
        if obj is None:
            raise ObjectError("unknownObject")
        attr = apdu.propertyIdentifier.attr
        if isinstance(obj, GatewayNotificationClass):
            self.write_notification_class(obj, attr, apdu.propertyValue)
            await self.response(SimpleAckPDU(context=apdu))
            return
        if not isinstance(obj, PointObject):
            # The device and its network port are configured in the gateway, not over BACnet.
            if obj.get_property_type(attr) is None:
                raise PropertyError("unknownProperty")
            raise PropertyError("writeAccessDenied")
        write = validate_write(
            obj, attr, apdu.propertyArrayIndex, apdu.priority, apdu.propertyValue
        )
        REQUESTER.set(f"bacnet:{apdu.pduSource}")  # logged with any command the write sends
        await self.write_handler(obj, write)
        await self.response(SimpleAckPDU(context=apdu))

    async def do_WritePropertyMultipleRequest(self, apdu: Any) -> None:  # noqa: N802
        # Not in the device profile; refused rather than left to the stock unguarded path.
        raise UnrecognizedService("writePropertyMultiple is not supported")

    async def do_ReadRangeRequest(self, apdu: Any) -> None:  # noqa: N802
        raise UnrecognizedService("readRange is not supported")

    # -- COV ------------------------------------------------------------------------------------

    async def do_SubscribeCOVRequest(self, apdu: SubscribeCOVRequest) -> None:  # noqa: N802
        await self._subscribe(apdu, prop=None, index=None, increment=None)

    async def do_SubscribeCOVPropertyRequest(  # noqa: N802
        self, apdu: SubscribeCOVPropertyRequest
    ) -> None:
        ref = apdu.monitoredPropertyIdentifier
        await self._subscribe(
            apdu,
            prop=ref.propertyIdentifier.attr,
            index=ref.propertyArrayIndex,
            increment=None if apdu.covIncrement is None else float(apdu.covIncrement),
        )

    async def _subscribe(
        self, apdu: Any, *, prop: str | None, index: int | None, increment: float | None
    ) -> None:
        objid = self._resolve(apdu.monitoredObjectIdentifier)
        obj = self.get_object_id(objid)
        cancel = apdu.issueConfirmedNotifications is None and apdu.lifetime is None
        if not isinstance(obj, PointObject):
            if obj is None and not cancel:
                raise ObjectError("unknownObject")
            if obj is not None and not cancel:
                raise ExecutionError("services", "covSubscriptionFailed")
            await self.response(SimpleAckPDU(context=apdu))
            return
        sub = self.cov.subscribe(
            apdu.pduSource,
            apdu.subscriberProcessIdentifier,
            obj,
            prop=prop,
            index=index,
            confirmed=apdu.issueConfirmedNotifications,
            lifetime=apdu.lifetime,
            increment=increment,
        )
        await self.response(SimpleAckPDU(context=apdu))
        if sub is not None:
            # After the acknowledgement: a client learns of its subscription from the ack.
            self.cov.initial(sub, obj)

    # -- Who-Has --------------------------------------------------------------------------------

    async def do_WhoHasRequest(self, apdu: WhoHasRequest) -> None:  # noqa: N802
        device = self.device_object
        if device is None:
            return
        limits = apdu.limits
        if limits is not None:
            low, high = limits.deviceInstanceRangeLowLimit, limits.deviceInstanceRangeHighLimit
            if low is None or high is None:
                raise InconsistentParameters("both instance limits are required")
            if not low <= device.objectIdentifier[1] <= high:
                return
        wanted = apdu.object
        if wanted.objectIdentifier is not None:
            obj = self.get_object_id(wanted.objectIdentifier)
        elif wanted.objectName is not None:
            obj = self.get_object_name(wanted.objectName)
        else:
            raise InconsistentParameters("object identifier or object name required")
        if obj is None:
            return
        if isinstance(obj, PointObject):
            self.i_have(obj.identifier, obj.name, address=apdu.pduSource)
        else:
            self.i_have(obj.objectIdentifier, obj.objectName, address=apdu.pduSource)

    # -- device management ----------------------------------------------------------------------

    def _check_access(self, apdu: Any, refusal: Exception) -> None:
        if self.access is not None and not self.access.permits(bacnet_source_host(apdu.pduSource)):
            raise refusal

    def _check_password(self, given: Any) -> None:
        # Without a configured password the parameter is ignored (clause 16.1.3.1).
        if self.password is None:
            return
        if given is None or not hmac.compare_digest(str(given).encode(), self.password.encode()):
            raise ExecutionError("security", "passwordFailure")

    async def do_DeviceCommunicationControlRequest(  # noqa: N802
        self, apdu: DeviceCommunicationControlRequest
    ) -> None:
        self._check_access(apdu, ExecutionError("services", "serviceRequestDenied"))
        self._check_password(apdu.password)
        state = _DCC_STATES.get(str(apdu.enableDisable or "enable"), "enable")
        minutes = apdu.timeDuration
        await self.response(SimpleAckPDU(context=apdu))
        self._set_communication(state)
        if state != "enable" and minutes:
            loop = asyncio.get_running_loop()
            self._dcc_timer = loop.call_later(minutes * 60, self._set_communication, "enable")
        log.warning(
            "BACnet: communication control from %s: %s%s",
            apdu.pduSource,
            state,
            f" for {minutes} min" if state != "enable" and minutes else "",
        )

    def _set_communication(self, state: str) -> None:
        if self._dcc_timer is not None:
            self._dcc_timer.cancel()
            self._dcc_timer = None
        self.asap.communication = state
        # COV subscribers and event recipients get what changed while they could not be told.
        if state == "enable":
            self.cov.resume()
            if self.events is not None:
                self.events.resume()
        else:
            self.cov.suspend()
            if self.events is not None:
                self.events.suspend()

    @property
    def communication(self) -> str:
        return str(self.asap.communication)

    async def do_ReinitializeDeviceRequest(  # noqa: N802
        self, apdu: ReinitializeDeviceRequest
    ) -> None:
        self._check_access(apdu, ExecutionError("services", "serviceRequestDenied"))
        self._check_password(apdu.password)
        state = str(apdu.reinitializedStateOfDevice)
        if state not in ("coldstart", "warmstart", "activate-changes", "activateChanges"):
            raise ExecutionError("services", "optionalFunctionalityNotSupported")
        await self.response(SimpleAckPDU(context=apdu))
        log.warning("BACnet: reinitialize (%s) requested by %s", state, apdu.pduSource)
        if state in ("coldstart", "warmstart"):
            self._set_communication("enable")
            self.i_am()
            if self.on_reinitialize is not None:
                self.on_reinitialize(state)

    # -- time synchronization -------------------------------------------------------------------

    async def do_TimeSynchronizationRequest(  # noqa: N802
        self, apdu: TimeSynchronizationRequest
    ) -> None:
        self._time_sync(apdu, utc=False)

    async def do_UTCTimeSynchronizationRequest(  # noqa: N802
        self, apdu: UTCTimeSynchronizationRequest
    ) -> None:
        self._time_sync(apdu, utc=True)

    @staticmethod
    def _time_sync(apdu: Any, *, utc: bool) -> None:
        """Accepted and compared: the gateway never sets the system clock (chrony/NTP's job),
        but a clock far off skews report timestamps, so a large difference is reported."""
        try:
            d, t = apdu.time.date, apdu.time.time
            fields = (d[0] + 1900, d[1], d[2], t[0], t[1], t[2], 0, 0, -1)
            theirs = calendar.timegm(fields) if utc else time.mktime(fields)
        except (TypeError, ValueError, OverflowError, IndexError):
            log.info("BACnet: time synchronization from %s with an unusable time", apdu.pduSource)
            return
        offset = theirs - time.time()
        level = logging.WARNING if abs(offset) > 60 else logging.DEBUG
        log.log(
            level,
            "BACnet: time synchronization from %s: their clock is %+.0f s from ours "
            "(the gateway does not set the system clock)",
            apdu.pduSource,
            offset,
        )
