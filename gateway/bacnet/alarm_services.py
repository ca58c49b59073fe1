"""Alarm and event services (AE-ACK-B, AE-INFO-B, AE-ASUM-B) over the event manager.

Mixed into `GatewayApplication`; `events` is None when no point reports events, and then the
services answer as for a device without alarms (empty summaries, unknown objects).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bacpypes3.apdu import (
    AcknowledgeAlarmRequest,
    GetAlarmSummaryACK,
    GetAlarmSummaryRequest,
    GetEventInformationACK,
    GetEventInformationRequest,
    SimpleAckPDU,
)
from bacpypes3.basetypes import (
    EventState,
    GetAlarmSummaryAlarmSummary,
    GetEventInformationEventSummary,
    NotifyType,
    TimeStamp,
)
from bacpypes3.constructeddata import SequenceOf
from bacpypes3.errors import ExecutionError, ObjectError, PropertyError
from bacpypes3.primitivedata import Unsigned

from gateway.bacnet.events import EventManager
from gateway.bacnet.eventstate import state_enum, timestamp, transition_bits
from gateway.bacnet.notification import GatewayNotificationClass
from objects.catalog import NOTIFICATION_CLASS_WRITABLE

log = logging.getLogger("gateway.bacnet")

MAX_SUMMARIES = 32  # per GetEventInformation answer; the rest follow with moreEvents


class AlarmServices:
    """The services; the host class provides `response` and sets `events`."""

    events: EventManager | None = None
    response: Callable[[Any], Awaitable[None]]  # the Application's (annotation only)

    async def do_AcknowledgeAlarmRequest(self, apdu: AcknowledgeAlarmRequest) -> None:  # noqa: N802
        if self.events is None:
            raise ObjectError("unknownObject")
        self.events.acknowledge(
            apdu.eventObjectIdentifier,
            str(apdu.eventStateAcknowledged),
            apdu.timeStamp,
            str(apdu.acknowledgmentSource),
            int(apdu.acknowledgingProcessIdentifier),
        )
        await self.response(SimpleAckPDU(context=apdu))

    async def do_GetEventInformationRequest(  # noqa: N802
        self, apdu: GetEventInformationRequest
    ) -> None:
        active = self.events.active() if self.events is not None else []
        after = apdu.lastReceivedObjectIdentifier
        if after is not None:
            ids = [o.identifier for o in active]
            active = active[ids.index(after) + 1 :] if after in ids else []
        more = len(active) > MAX_SUMMARIES
        summaries = []
        assert self.events is not None or not active
        for obj in active[:MAX_SUMMARIES]:
            record = obj.events
            priorities = self.events.routing.priority if self.events is not None else [0, 0, 0]
            summaries.append(
                GetEventInformationEventSummary(
                    objectIdentifier=obj.identifier,
                    eventState=EventState(state_enum(record.state)),
                    acknowledgedTransitions=transition_bits(record.acked),
                    eventTimeStamps=SequenceOf(TimeStamp)([timestamp(s) for s in record.stamps]),
                    notifyType=NotifyType("alarm"),
                    eventEnable=transition_bits([True, True, True]),
                    eventPriorities=SequenceOf(Unsigned)([Unsigned(p) for p in priorities]),
                )
            )
        await self.response(
            GetEventInformationACK(
                listOfEventSummaries=SequenceOf(GetEventInformationEventSummary)(summaries),
                moreEvents=more,
                context=apdu,
            )
        )

    async def do_GetAlarmSummaryRequest(self, apdu: GetAlarmSummaryRequest) -> None:  # noqa: N802
        alarms = self.events.in_alarm() if self.events is not None else []
        summaries = [
            GetAlarmSummaryAlarmSummary(
                objectIdentifier=o.identifier,
                alarmState=EventState(state_enum(o.events.state)),
                acknowledgedTransitions=transition_bits(o.events.acked),
            )
            for o in alarms
        ]
        await self.response(
            GetAlarmSummaryACK(
                listOfAlarmSummaries=SequenceOf(GetAlarmSummaryAlarmSummary)(summaries),
                context=apdu,
            )
        )

    @staticmethod
    def write_notification_class(obj: GatewayNotificationClass, attr: str, value: Any) -> None:
        """WriteProperty on the Notification Class: only what the catalog allows."""
        if attr not in NOTIFICATION_CLASS_WRITABLE:
            if obj.get_property_type(attr) is None:
                raise PropertyError("unknownProperty")
            raise PropertyError("writeAccessDenied")
        try:
            obj.write_recipients(value)
        except ValueError as exc:
            log.info("BACnet: Notification Class recipient list refused: %s", exc)
            raise PropertyError("valueOutOfRange") from None
        except ExecutionError:
            raise
        except Exception as exc:  # a value that is not a list of destinations
            raise PropertyError("invalidDataType") from exc
