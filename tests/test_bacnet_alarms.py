"""Alarms the BMS sees: intrinsic reporting on the alarm rules' Overcrowded inputs.

A bacpypes3 client in another process is the BMS: it is a recipient in the Notification Class,
receives Confirmed/UnconfirmedEventNotifications, acknowledges them (AcknowledgeAlarm) and reads
GetEventInformation / GetAlarmSummary. Where installed, bacnet-stack's bacge and bacackalarm do
the same from the C reference stack.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bacnet_peer.calls import read
from bacnet_peer.harness import Peer, PeerError
from bacnet_peer.rig import DEVICE_INSTANCE, SENSORS, Rig
from bacpypes3.apdu import ComplexAckPDU, GetAlarmSummaryACK
from bacpypes3.pdu import PDU
from helpers import bacstack
from pydantic import ValidationError

from gateway.pointdocs import render_ede
from gateway.settings import SensorSection
from objects.catalog import Model
from objects.pointmap import RuleSpec, SensorSpec, resolve

pytestmark = pytest.mark.asyncio

RULE = RuleSpec(id="crowd", name="Lobby Crowd", number=1)
ALARM = "binary-input,500"  # rule 1's Overcrowded input
NC = "notification-class,7"


def make_rig(tmp_path: Path, bms: Peer | None, **notification: Any) -> Rig:
    recipients = [] if bms is None else [{"address": bms.address, "process": 42}]
    return Rig(
        tmp_path,
        sensors=SENSORS,
        rules=(RULE,),
        notification={"instance": 7, "recipients": recipients, **notification},
    )


@pytest.fixture
def bms(client: Peer) -> Peer:
    """The building management system: the shared BACnet client."""
    return client


@pytest_asyncio.fixture
async def rig(tmp_path: Path, bms: Peer) -> AsyncIterator[Rig]:
    r = make_rig(tmp_path, bms)
    await r.start()
    r.publish({"rule_1_alarm": 0})
    yield r
    await r.stop()


def notification(event: dict[str, Any]) -> bool:
    return event.get("event") == "notification"


async def empty_alarm_summary(client: Peer, rig: Rig) -> bool:
    """GetAlarmSummary answered with an empty list, checked on the wire: bacpypes3's client side
    cannot decode it (see test_bacpypes3_cannot_decode_an_empty_alarm_summary)."""
    request = bytes.fromhex("810a000a010400050703")  # BVLC, NPDU, APDU invoke 7
    [reply] = await client.call("raw", host="127.0.0.1", port=rig.port, hex=request.hex(), wait=1.0)
    return bytes.fromhex(reply).endswith(bytes.fromhex("300703"))


async def test_overcrowding_is_notified_acknowledged_and_cleared(rig: Rig, bms: Peer) -> None:
    assert await read(bms, rig, ALARM, "eventState") == "normal"
    rig.publish({"rule_1_alarm": 1})
    alarm = await bms.next_event(notification)
    assert alarm["confirmed"] is True
    assert alarm["process"] == 42
    assert alarm["device"] == rig.device
    assert alarm["object"] == ALARM
    assert (alarm["event_type"], alarm["notify_type"]) == ("change-of-state", "alarm")
    assert (alarm["from"], alarm["to"]) == ("normal", "offnormal")
    assert alarm["new_state"] == "active"
    assert alarm["status_flags"] == [1, 0, 0, 0]  # in alarm
    assert alarm["ack_required"] == 1
    assert (alarm["notification_class"], alarm["priority"]) == (7, 64)
    assert "Lobby Crowd Overcrowded" in alarm["message"]

    assert await read(bms, rig, ALARM, "eventState") == "offnormal"
    assert await read(bms, rig, ALARM, "statusFlags") == [1, 0, 0, 0]
    assert await read(bms, rig, ALARM, "ackedTransitions") == [0, 1, 1]
    info = await bms.call("eventinfo", address=rig.address)
    assert info["more"] is False
    [event] = info["events"]
    assert (event["object"], event["state"], event["acked"]) == (ALARM, "offnormal", [0, 1, 1])
    assert event["stamps"][0] == alarm["stamp"]
    assert event["priorities"] == [64, 64, 200]
    summary = await bms.call("alarmsummary", address=rig.address)
    assert summary == [{"object": ALARM, "state": "offnormal", "acked": [0, 1, 1]}]

    # A wrong timestamp or state is refused; the right one acknowledges.
    wrong = [alarm["stamp"][0], [0, 0, 0, 0]]
    with pytest.raises(PeerError) as err:
        await bms.call(
            "ackalarm", address=rig.address, object=ALARM, state="offnormal", stamp=wrong
        )
    assert err.value.code == "invalid-time-stamp"
    with pytest.raises(PeerError) as err:
        await bms.call(
            "ackalarm", address=rig.address, object=ALARM, state="fault", stamp=alarm["stamp"]
        )
    assert err.value.code == "invalid-time-stamp"
    await bms.call(
        "ackalarm", address=rig.address, object=ALARM, state="offnormal", stamp=alarm["stamp"]
    )
    acked = await bms.next_event(notification)
    assert (acked["notify_type"], acked["to"]) == ("ack-notification", "offnormal")
    assert acked["stamp"] == alarm["stamp"]
    assert await read(bms, rig, ALARM, "ackedTransitions") == [1, 1, 1]

    rig.publish({"rule_1_alarm": 0})
    normal = await bms.next_event(notification)
    assert (normal["from"], normal["to"], normal["new_state"]) == (
        "offnormal",
        "normal",
        "inactive",
    )
    assert normal["ack_required"] == 0  # to-normal needs no acknowledgement by default
    assert normal["priority"] == 200
    assert (await bms.call("eventinfo", address=rig.address))["events"] == []
    assert await empty_alarm_summary(bms, rig)
    stamps = await read(bms, rig, ALARM, "eventTimeStamps")
    assert len(stamps) == 3


async def test_event_states_survive_a_restart_without_repeating(tmp_path: Path, bms: Peer) -> None:
    rig = make_rig(tmp_path, bms)
    await rig.start()
    try:
        rig.publish({"rule_1_alarm": 1})
        alarm = await bms.next_event(notification)
        await rig.restart()  # still overcrowded, not acknowledged
        assert await read(bms, rig, ALARM, "eventState") == "offnormal"
        assert await read(bms, rig, ALARM, "ackedTransitions") == [0, 1, 1]
        info = await bms.call("eventinfo", address=rig.address)
        assert info["events"][0]["stamps"][0] == alarm["stamp"]
        assert rig.server.events is not None
        assert rig.server.events.sent == 0  # not repeated
        # The alarm cleared while the gateway was down: reported at start.
        await rig.stop()
        rig.state.gateway_values["rule_1_alarm"] = 0
        await rig.restart()
        cleared = await bms.next_event(notification)
        assert (cleared["from"], cleared["to"]) == ("offnormal", "normal")
        # The earlier alarm can still be acknowledged after the restarts.
        await bms.call(
            "ackalarm", address=rig.address, object=ALARM, state="offnormal", stamp=alarm["stamp"]
        )
        assert await read(bms, rig, ALARM, "ackedTransitions") == [1, 1, 1]
    finally:
        await rig.stop()


@pytest.mark.parametrize("state", ["disable-initiation", "disable"])
async def test_alarms_while_communication_was_off_are_reported_when_it_is_back(
    rig: Rig, bms: Peer, state: str
) -> None:
    events = rig.server.events
    assert events is not None
    await bms.call("dcc", address=rig.address, state=state)
    rig.publish({"rule_1_alarm": 1})
    rig.publish({"rule_1_alarm": 0})
    rig.publish({"rule_1_alarm": 1})
    assert events.transitions == 3
    assert events.sent == 0  # nothing may leave while disabled
    await bms.call("dcc", address=rig.address, state="enable")
    # The latest transition of each kind, in the order they happened: the BMS ends offnormal.
    first = await bms.next_event(notification)
    second = await bms.next_event(notification)
    assert (first["from"], first["to"]) == ("offnormal", "normal")
    assert (second["from"], second["to"]) == ("normal", "offnormal")
    assert second["ack_required"] == 1
    assert events.sent == 2
    # The held alarm carries its own time, so it can be acknowledged as usual.
    info = await bms.call("eventinfo", address=rig.address)
    assert info["events"][0]["stamps"][0] == second["stamp"]
    await bms.call(
        "ackalarm", address=rig.address, object=ALARM, state="offnormal", stamp=second["stamp"]
    )
    assert await read(bms, rig, ALARM, "ackedTransitions") == [1, 1, 1]


async def test_notification_class_object(rig: Rig, bms: Peer) -> None:
    objects = await read(bms, rig, rig.device, "objectList")
    assert NC in objects
    assert await read(bms, rig, NC, "notificationClass") == 7
    assert await read(bms, rig, NC, "priority") == [64, 64, 200]
    assert await read(bms, rig, NC, "ackRequired") == [1, 1, 0]
    [entry] = await read(bms, rig, NC, "recipientList")
    assert entry["processIdentifier"] == 42
    assert entry["issueConfirmedNotifications"] == 1
    assert await read(bms, rig, ALARM, "notificationClass") == 7
    props = await read(bms, rig, NC, "propertyList")
    assert "object-name" not in props
    assert "recipient-list" in props
    # Writable only where the catalog says so: the priorities are not.
    with pytest.raises(PeerError) as err:
        await bms.call(
            "write",
            address=rig.address,
            object=NC,
            property="notificationClass",
            value=3,
            type="unsigned",
        )
    assert err.value.code == "write-access-denied"


async def test_written_recipient_list_is_used_and_kept(tmp_path: Path, bms: Peer) -> None:
    other = await Peer.start("client.py")
    rig = make_rig(tmp_path, bms)
    await rig.start()
    try:
        rig.publish({"rule_1_alarm": 0})
        await bms.call(
            "write_recipients",
            address=rig.address,
            object=NC,
            recipients=[{"address": other.address, "process": 9, "confirmed": False}],
        )
        await rig.restart()
        [entry] = await read(bms, rig, NC, "recipientList")
        assert entry["processIdentifier"] == 9
        rig.publish({"rule_1_alarm": 1})
        alarm = await other.next_event(notification)
        assert (alarm["confirmed"], alarm["process"], alarm["to"]) == (False, 9, "offnormal")
        assert [e for e in bms.events if notification(e)] == []
    finally:
        await rig.stop()
        await other.stop()


async def test_unconfirmed_recipients_and_transition_filters(tmp_path: Path, bms: Peer) -> None:
    rig = Rig(
        tmp_path,
        rules=(RULE,),
        notification={
            "instance": 7,
            "ack_required": [],
            "recipients": [
                {
                    "address": bms.address,
                    "process": 5,
                    "confirmed": False,
                    "transitions": ["to-normal"],
                }
            ],
        },
    )
    await rig.start()
    try:
        rig.publish({"rule_1_alarm": 0})
        rig.publish({"rule_1_alarm": 1})
        rig.publish({"rule_1_alarm": 0})
        only = await bms.next_event(notification)
        assert (only["confirmed"], only["to"], only["ack_required"]) == (False, "normal", 0)
        info = await bms.call("eventinfo", address=rig.address)
        assert info["events"] == []  # nothing needs acknowledging
    finally:
        await rig.stop()


# -- bacnet-stack ------------------------------------------------------------------------------


def bacnet_stamp(stamp: list[list[int]]) -> str:
    """Our date-time stamp in bacackalarm's argument syntax."""
    (year, month, day, _), (hour, minute, second, hundredths) = stamp
    return f"{1900 + year}/{month}/{day}-{hour}:{minute}:{second}.{hundredths}"


async def test_bacnet_stack_reads_and_acknowledges_the_alarm(rig: Rig, bms: Peer) -> None:
    bacstack.require("bacge")
    rig.publish({"rule_1_alarm": 1})
    alarm = await bms.next_event(notification)

    info = await bacstack.run("bacge", str(DEVICE_INSTANCE), server_port=rig.port)
    assert info.returncode == 0, info.stderr
    # bacge prints device, object type number (3 binary-input), instance and the state's
    # abbreviation (ON offnormal).
    assert re.search(rf"^{DEVICE_INSTANCE}\s+3\s+500\s+ON$", info.stdout, flags=re.M), info.stdout
    assert re.search(r"^1\s+Total", info.stdout, flags=re.M), info.stdout

    ack = await bacstack.run(
        "bacackalarm",
        "--mac",
        rig.address,
        "--dnet",
        "0",
        str(DEVICE_INSTANCE),
        "1",
        "binary-input",
        "500",
        "offnormal",
        bacnet_stamp(alarm["stamp"]),
        "bacnet-stack",
        bacnet_stamp(alarm["stamp"]),
        server_port=rig.port,
    )
    assert ack.returncode == 0, ack.stdout + ack.stderr
    assert await read(bms, rig, ALARM, "ackedTransitions") == [1, 1, 1]
    told = await bms.next_event(notification)
    assert told["notify_type"] == "ack-notification"


async def test_ede_lists_the_notification_class() -> None:
    points = resolve(list(SENSORS), rules=(RULE,))
    ede = render_ede(
        points, device_instance=DEVICE_INSTANCE, device_name="GW", project="t", notification_class=7
    )
    rows = [line.split(";") for line in ede.splitlines()]
    [nc] = [r for r in rows if r[0] == "gateway.notification_class"]
    assert (nc[2], nc[3], nc[4], nc[9]) == ("GW Alarms", "15", "7", "Y")
    without_rules = render_ede(
        resolve(list(SENSORS)),
        device_instance=1,
        device_name="GW",
        project="t",
        notification_class=7,
    )
    assert "notification_class" not in without_rules


async def test_recipient_list_writes_are_checked(
    rig: Rig, bms: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PeerError) as err:
        await bms.call(
            "write",
            address=rig.address,
            object=NC,
            property="recipientList",
            value=1.0,
            type="real",
        )
    assert err.value.code == "invalid-data-type"
    [before] = await read(bms, rig, NC, "recipientList")
    # Not writable when the catalog does not say so.
    monkeypatch.setattr("gateway.bacnet.alarm_services.NOTIFICATION_CLASS_WRITABLE", frozenset())
    with pytest.raises(PeerError) as err:
        await bms.call(
            "write_recipients",
            address=rig.address,
            object=NC,
            recipients=[{"address": "127.0.0.1:1", "process": 1}],
        )
    assert err.value.code == "write-access-denied"
    assert await read(bms, rig, NC, "recipientList") == [before]


async def test_a_damaged_event_file_starts_normal(tmp_path: Path, bms: Peer) -> None:
    (tmp_path / "bacnet_events.json").write_text("{not json")
    rig = make_rig(tmp_path, bms)
    await rig.start()
    try:
        assert await read(bms, rig, ALARM, "eventState") == "normal"
        rig.publish({"rule_1_alarm": 1})
        alarm = await bms.next_event(notification)
        assert alarm["to"] == "offnormal"
    finally:
        await rig.stop()
    # ... and the next start reads the state written since.
    rig = make_rig(tmp_path, bms)
    await rig.start()
    try:
        assert await read(bms, rig, ALARM, "eventState") == "offnormal"
    finally:
        await rig.stop()


# -- high limit on people counts --------------------------------------------------------------


LIMITED = SensorSpec(
    id="lobby",
    name="Lobby",
    number=1,
    model=Model.VS121,
    region_count=2,
    high_limits={"people_count_all": (10.0, 2.0)},
)


async def test_people_count_high_limit_reports_out_of_range(tmp_path: Path, bms: Peer) -> None:
    rig = Rig(
        tmp_path,
        sensors=(LIMITED,),
        notification={"instance": 7, "recipients": [{"address": bms.address, "process": 3}]},
    )
    await rig.start()
    try:
        people = rig.object_id("lobby", "people_count_all")
        region = rig.object_id("lobby", "region_1_count")
        assert await read(bms, rig, people, "highLimit") == 10.0
        assert await read(bms, rig, people, "deadband") == 2.0
        assert await read(bms, rig, people, "limitEnable") == [0, 1]
        assert "high-limit" in await read(bms, rig, people, "propertyList")
        assert "high-limit" not in await read(bms, rig, region, "propertyList")

        rig.report("lobby", {"people_count_all": 10})  # at the limit: not above it
        rig.report("lobby", {"people_count_all": 11})
        alarm = await bms.next_event(notification)
        assert (alarm["event_type"], alarm["from"], alarm["to"]) == (
            "out-of-range",
            "normal",
            "high-limit",
        )
        assert (alarm["exceeding"], alarm["limit"], alarm["deadband"]) == (11.0, 10.0, 2.0)
        assert alarm["status_flags"] == [1, 0, 0, 0]
        assert await read(bms, rig, people, "eventState") == "high-limit"
        summary = await bms.call("alarmsummary", address=rig.address)
        assert summary == [{"object": people, "state": "high-limit", "acked": [0, 1, 1]}]

        rig.report("lobby", {"people_count_all": 8})  # within the deadband: still high
        assert await read(bms, rig, people, "eventState") == "high-limit"
        rig.report("lobby", {"people_count_all": 7})
        normal = await bms.next_event(notification)
        assert (normal["from"], normal["to"], normal["exceeding"]) == ("high-limit", "normal", 7.0)
        await bms.call(
            "ackalarm", address=rig.address, object=people, state="high-limit", stamp=alarm["stamp"]
        )
        assert await read(bms, rig, people, "ackedTransitions") == [1, 1, 1]
    finally:
        await rig.stop()


async def test_high_limit_settings_are_checked() -> None:
    base = {"id": "a", "name": "A", "number": 1, "model": "vs121", "dev_eui": "24e124538c000001"}
    ok = SensorSection(**base, points={"region_3_count": {"high_limit": 4}})
    assert ok.spec().high_limits == {"region_3_count": (4.0, 1.0)}
    with pytest.raises(ValidationError, match=r"points\.people_total_in\.high_limit"):
        SensorSection(**base, points={"people_total_in": {"high_limit": 4}})


async def test_bacpypes3_cannot_decode_an_empty_alarm_summary() -> None:
    """bacpypes3 0.0.110 takes an empty SEQUENCE OF for a missing required element
    (constructeddata.py:485, reached from apdu.py:1061), so a client never gets the empty answer;
    the tests check that answer on the wire instead (empty_alarm_summary)."""
    ack = ComplexAckPDU.decode(PDU(bytes.fromhex("300703")))  # Complex-ACK, GetAlarmSummary
    with pytest.raises(AttributeError, match="listOfAlarmSummaries is a required element"):
        GetAlarmSummaryACK.decode(ack)
