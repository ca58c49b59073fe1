"""Commands to sensors end to end: the real daemon, a real mosquitto, a BACnet client in its own
process and a Modbus client, with each network server's documented topics and JSON.

The network server and the sensor are played by the test: it listens where the network server
would take the downlink, answers with the server's documented events, and sends the sensor's
settings echo as its next uplink.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from bacnet_peer.harness import Peer, PeerError, free_udp_port
from helpers.broker import MosquittoBroker, free_port
from helpers.daemon import LORAWAN_SENSORS, Daemon, new_http_port
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

from gateway import control_token
from gateway.cli import main as cli

HALL = "24e124538c000001"
LAB = "24e124538c000002"
DEVICE = 121000
HALL_INTERVAL_AV = "analog-value,1060"  # sensor number 1, catalog offset 60
HALL_INTERVAL_REGISTER = 1 * 200 + 120
LAB_INTERVAL_REGISTER = 2 * 200 + 120


class Broker:
    """Test side of the broker: publishes, and collects what arrives on a topic filter."""

    def __init__(self, port: int, listen: str, name: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_a, **_k: c.subscribe(listen, qos=1)
        self.client.on_subscribe = lambda *_a, **_k: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def send(self, topic: str, body: object) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(topic, data, qos=1).wait_for_publish(10)

    def next(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        topic, body = self.messages.get(timeout=timeout)
        doc: dict[str, Any] = json.loads(body)
        return topic, doc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def config(
    state_dir: Path,
    *,
    mqtt_port: int,
    http_port: int,
    subscription: str,
    bacnet_port: int | None = None,
    modbus_port: int | None = None,
    downlinks: str = "",
) -> str:
    bacnet = (
        f"[bacnet]\nenabled = true\nport = {bacnet_port}\n"
        if bacnet_port
        else "[bacnet]\nenabled = false\n"
    )
    modbus = (
        f'[modbus.tcp]\nenabled = true\nhost = "127.0.0.1"\nport = {modbus_port}\n'
        if modbus_port
        else "[modbus.tcp]\nenabled = false\n"
    )
    return (
        f'[gateway]\nstate_dir = "{state_dir}"\nlog_level = "info"\n'
        f"{bacnet}{modbus}"
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f"[downlinks]\n{downlinks}\n"
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
        f'client_id = "gw-{state_dir.parent.name}"\nkeepalive = 5\nreconnect_max = 2\n'
        f"{subscription}\n{LORAWAN_SENSORS}"
    )


def started(tmp_path: Path, text_for: Any) -> Daemon:
    port = new_http_port()
    daemon = Daemon(tmp_path, text_for(port), http_port=port)
    daemon.start()
    daemon.wait_mqtt()
    return daemon


def commands(daemon: Daemon) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(daemon.get("/api/commands"))
    return records


def state_of(daemon: Daemon, command_id: str) -> str:
    record: dict[str, Any] = json.loads(daemon.get(f"/api/commands/{command_id}"))
    return str(record["state"])


def post(daemon: Daemon, path: str, body: object) -> tuple[int, str]:
    """POST as a local operator would: with the control token the gateway left in its state."""
    url = f"http://127.0.0.1:{daemon.http_port}{path}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    token = control_token.read(daemon.workdir / "state")
    if token is not None:
        request.add_header(control_token.HEADER, token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def payload_of(body: dict[str, Any], key: str = "data") -> str:
    return base64.b64decode(body[key]).hex()


# --- ChirpStack, a BMS and a PLC ---------------------------------------------------------------

CS_SUB = """
[[mqtt.subscriptions]]
name = "cs"
topic = "application/+/device/+/event/+"
envelope = "chirpstack"
"""


def cs_uplink(fcnt: int, payload: str, *, rssi: int = -97, snr: float = 4.5) -> dict[str, Any]:
    return {
        "deduplicationId": f"dedup-{fcnt}",
        "time": "2026-03-12T06:10:30Z",
        "deviceInfo": {"applicationId": "a", "devEui": HALL, "deviceClassEnabled": "CLASS_A"},
        "fCnt": fcnt,
        "fPort": 85,
        "data": base64.b64encode(bytes.fromhex(payload)).decode(),
        "rxInfo": [
            {"gatewayId": "g1", "rssi": rssi, "snr": snr},
            {"gatewayId": "g2", "rssi": -110, "snr": -3.0},
        ],
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {"spreadingFactor": 9}}},
    }


def cs_event(kind: str, **fields: object) -> tuple[str, dict[str, Any]]:
    body = {"deviceInfo": {"applicationId": "a", "devEui": HALL}, "queueItemId": "q1", **fields}
    return f"application/a/device/{HALL}/event/{kind}", body


@contextlib.contextmanager
def chirpstack_site(
    tmp_path: Path, broker_port: int, ns_name: str, *, modbus: bool = True
) -> Iterator[tuple[Daemon, Broker, int, int | None]]:
    """The gateway on ChirpStack with BACnet (and Modbus TCP), and the network server's side
    that receives its downlinks: (daemon, network server, BACnet port, Modbus port)."""
    bacnet_port, modbus_port = free_udp_port(), free_port() if modbus else None
    daemon = started(
        tmp_path,
        lambda http: config(
            tmp_path / "state",
            mqtt_port=broker_port,
            http_port=http,
            subscription=CS_SUB,
            bacnet_port=bacnet_port,
            modbus_port=modbus_port,
        ),
    )
    ns = Broker(broker_port, "application/+/device/+/command/down", ns_name)
    try:
        yield daemon, ns, bacnet_port, modbus_port
    finally:
        ns.close()
        if daemon.running():
            assert daemon.stop() == 0


@pytest.fixture
def cs_rig(
    tmp_path: Path, mqtt_broker: MosquittoBroker
) -> Iterator[tuple[Daemon, Broker, int, int]]:
    with chirpstack_site(tmp_path, mqtt_broker.port, "test-cs-ns") as (daemon, ns, bacnet, modbus):
        assert modbus is not None
        yield daemon, ns, bacnet, modbus


@pytest.mark.asyncio
async def test_bms_write_of_the_interval_is_sent_acknowledged_and_echoed(
    cs_rig: tuple[Daemon, Broker, int, int],
) -> None:
    daemon, ns, bacnet_port, modbus_port = cs_rig
    ns.send(f"application/a/device/{HALL}/event/up", cs_uplink(10, "04c9030800a106cd05"))
    daemon.wait_until(lambda: daemon.values("hall").get("people_count_all") == 3, what="uplink")
    hall = daemon.status()["sensors"]["hall"]
    # The radio link and the device facts from the envelope.
    assert {k: hall["values"][k] for k in ("rssi", "snr", "spreading_factor")} == {
        "rssi": -97,
        "snr": 4.5,
        "spreading_factor": 9,
    }
    assert (hall["values"]["gateway_count"], hall["values"]["frame_counter"]) == (2, 10)
    assert hall["device"]["lorawan_class"] == "A"
    assert hall["values"]["lorawan_class_code"] == 0
    # The guide's device-information report: serial, hardware 1.0, firmware 31.7.0.75.
    ns.send(
        f"application/a/device/{HALL}/event/up",
        cs_uplink(9, "ff0101ff086600b0940976ff090100ff1f1f07004b"),
    )
    daemon.wait_until(
        lambda: "sn" in daemon.status()["sensors"]["hall"]["device"], what="device facts"
    )
    hall = daemon.status()["sensors"]["hall"]
    assert hall["device"] == {
        "lorawan_class": "A",
        "protocol_version": "1",
        "sn": "6600b0940976",
        "hardware_version": "1.0",
        "firmware_version": "31.7.0.75",
    }
    assert (hall["values"]["hardware_version_code"], hall["values"]["firmware_version_code"]) == (
        100,
        310700,
    )

    peer = await Peer.start("client.py")
    try:
        target = f"127.0.0.1:{bacnet_port}"
        await peer.call(
            "write",
            address=target,
            object=HALL_INTERVAL_AV,
            property="presentValue",
            value=1200.0,
            type="real",
        )
        topic, body = ns.next()
        assert topic == f"application/a/device/{HALL}/command/down"
        assert body == {"devEui": HALL, "confirmed": True, "fPort": 85, "data": "/wOwBA=="}
        assert payload_of(body) == "ff03b004"
        [record] = commands(daemon)
        assert record["state"] == "queued"
        assert record["requester"] == f"bacnet:127.0.0.1:{peer.port}"
        assert daemon.values("hall")["config_status"] == 1  # on its way

        # The network server hands it to a gateway, then the device acknowledges the frame.
        ns.send(*cs_event("txack", downlinkId=7, fCntDown=3, gatewayId="g1"))
        daemon.wait_until(lambda: state_of(daemon, record["id"]) == "sent", what="sent")
        ns.send(*cs_event("ack", acknowledged=True, fCntDown=3))
        daemon.wait_until(lambda: state_of(daemon, record["id"]) == "confirmed", what="ack")
        assert daemon.values("hall")["config_status"] == 2

        # The written value shows once the sensor echoes it, not before.
        read = await peer.call(
            "read", address=target, object=HALL_INTERVAL_AV, property="presentValue"
        )
        assert read["value"] != 1200.0
        ns.send(f"application/a/device/{HALL}/event/up", cs_uplink(11, "ff03b004"))
        daemon.wait_until(
            lambda: daemon.values("hall").get("reporting_interval") == 1200, what="echo"
        )
        assert json.loads(daemon.get(f"/api/commands/{record['id']}"))["echoed"] is True
        read = await peer.call(
            "read", address=target, object=HALL_INTERVAL_AV, property="presentValue"
        )
        assert read["value"] == 1200.0

        # A sensor that cannot be reached now is refused at once, with the reason logged.
        with pytest.raises(PeerError) as refused:
            await peer.call(
                "write",
                address=target,
                object="analog-value,2060",
                property="presentValue",
                value=900.0,
                type="real",
            )
        assert (refused.value.error_class, refused.value.code) == ("device", "operational-problem")
        # Out of the command's own range: refused before anything is sent.
        with pytest.raises(PeerError) as out_of_range:
            await peer.call(
                "write",
                address=target,
                object=HALL_INTERVAL_AV,
                property="presentValue",
                value=4.0,
                type="real",
            )
        assert out_of_range.value.code == "value-out-of-range"
    finally:
        await peer.stop()
    assert "BACnet write to Lab Reporting Interval refused: no uplink received" in daemon.log_text()

    # A PLC writes the same setting over Modbus.
    client = AsyncModbusTcpClient("127.0.0.1", port=modbus_port, timeout=5, retries=0)
    assert await client.connect()
    try:
        reply = await client.write_register(HALL_INTERVAL_REGISTER, 600)
        assert not reply.isError()
        topic, body = ns.next()
        assert payload_of(body) == "ff035802"
        assert commands(daemon)[-1]["requester"].startswith("modbus-tcp:127.0.0.1:")
        refused_reply = await client.write_register(LAB_INTERVAL_REGISTER, 600)
        assert refused_reply.isError()
        assert refused_reply.exception_code == 4
    finally:
        client.close()
    assert "Modbus write to lab.reporting_interval = 600 failed" in daemon.log_text()
    assert ns.messages.empty()  # nothing was sent for the refused writes
    assert daemon.metric("vs121gw_downlinks_total", sensor="lab", outcome="refused") == 2


def test_nack_and_api_refusals(cs_rig: tuple[Daemon, Broker, int, int]) -> None:
    daemon, ns, _, _ = cs_rig
    ns.send(f"application/a/device/{HALL}/event/up", cs_uplink(20, "04c9030800a106cd05"))
    daemon.wait_until(lambda: daemon.status()["sensors"]["hall"]["online"], what="uplink")

    status, text = post(daemon, "/api/sensors/hall/commands", {"command": "reboot"})
    assert status == 202, text
    record = json.loads(text)
    assert record["requester"] == "api:anonymous@127.0.0.1"
    assert payload_of(ns.next()[1]) == "ff10ff"
    ns.send(*cs_event("ack", acknowledged=False))
    daemon.wait_until(lambda: state_of(daemon, record["id"]) == "failed", what="nack")
    assert daemon.values("hall")["config_status"] == 4

    assert post(daemon, "/api/sensors/foyer/commands", {"command": "reboot"}) == (
        409,
        "refused: not supported for this model (vs121-p): the VS121-P takes its settings from "
        "its web interface or Milesight DeviceHub, not from this gateway\n",
    )
    status, text = post(daemon, "/api/sensors/hall/commands", {"command": "reporting_interval"})
    assert status == 400
    assert "seconds" in text
    assert post(daemon, "/api/sensors/nope/commands", {"command": "reboot"})[0] == 404
    assert ns.messages.empty()


# --- The Things Stack: failure events ----------------------------------------------------------

TTS_SUB = """
[[mqtt.subscriptions]]
name = "tts"
topic = "v3/+/devices/+/#"
envelope = "tts"
"""


def tts_uplink(fcnt: int, payload: str) -> dict[str, Any]:
    return {
        "end_device_ids": {
            "device_id": "hall-sensor",
            "application_ids": {"application_id": "people"},
            "dev_eui": HALL.upper(),
        },
        "received_at": "2026-03-12T06:10:30Z",
        "uplink_message": {
            "session_key_id": "AY7Zr9x3b0Q5mWn2cKpLhA==",
            "f_port": 85,
            "f_cnt": fcnt,
            "frm_payload": base64.b64encode(bytes.fromhex(payload)).decode(),
            "rx_metadata": [{"gateway_ids": {"gateway_id": "g"}, "rssi": -80, "snr": 7.25}],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}},
        },
    }


def test_tts_push_and_its_failure_events(tmp_path: Path, mqtt_broker: MosquittoBroker) -> None:
    daemon = started(
        tmp_path,
        lambda http: config(
            tmp_path / "state", mqtt_port=mqtt_broker.port, http_port=http, subscription=TTS_SUB
        ),
    )
    ns = Broker(mqtt_broker.port, "v3/+/devices/+/down/push", "test-tts-ns")
    base = "v3/people@ttn/devices/hall-sensor"
    try:
        ns.send(f"{base}/up", tts_uplink(5, "04c9030800a106cd05"))
        daemon.wait_until(lambda: daemon.values("hall").get("rssi") == -80, what="uplink")

        assert (
            cli(
                [
                    "send",
                    "hall",
                    '{"command": "trigger_report", "enable": true}',
                    "--config",
                    str(daemon.config),
                ]
            )
            == 0
        )
        topic, body = ns.next()
        assert topic == f"{base}/down/push"
        [downlink] = body["downlinks"]
        assert payload_of(downlink, "frm_payload") == "f93d01"
        [correlation] = downlink["correlation_ids"]
        [record] = commands(daemon)
        assert record["requester"] == "cli:anonymous@127.0.0.1"
        ids = {"device_id": "hall-sensor", "dev_eui": HALL.upper()}
        ns.send(f"{base}/down/queued", {"end_device_ids": ids, "correlation_ids": [correlation]})
        ns.send(f"{base}/down/sent", {"end_device_ids": ids, "correlation_ids": [correlation]})
        daemon.wait_until(lambda: state_of(daemon, record["id"]) == "sent", what="sent")
        ns.send(
            f"{base}/down/failed",
            {
                "end_device_ids": ids,
                "downlink_failed": {
                    "downlink": {"correlation_ids": [correlation]},
                    "error": {"message_format": "no device session"},
                },
            },
        )
        daemon.wait_until(lambda: state_of(daemon, record["id"]) == "failed", what="failed")
        assert json.loads(daemon.get(f"/api/commands/{record['id']}"))["reason"] == (
            "no device session"
        )
        assert "trigger_report, asked by cli:anonymous@127.0.0.1) failed: no device session" in (
            daemon.log_text()
        )
    finally:
        ns.close()
        assert daemon.stop() == 0


# --- Milesight: its own topic notation, ACK notification, timeout, restart ---------------------

MS_SUB = """
[[mqtt.subscriptions]]
name = "ms"
topic = "/eg/#"
envelope = "milesight"
downlink_topic = "/eg/downlink/$deveui/"
"""


def ms_uplink(fcnt: int, payload: str) -> dict[str, Any]:
    return {
        "devEUI": HALL,
        "fPort": 85,
        "fCnt": fcnt,
        "data": base64.b64encode(bytes.fromhex(payload)).decode(),
        "rxInfo": [{"loRaSNR": 12.2, "rssi": -57}],
        "txInfo": {"dataRate": {"spreadFactor": 10}},
    }


def test_milesight_ack_timeout_and_restart(tmp_path: Path, mqtt_broker: MosquittoBroker) -> None:
    def text(http: int) -> str:
        return config(
            tmp_path / "state",
            mqtt_port=mqtt_broker.port,
            http_port=http,
            subscription=MS_SUB,
            downlinks="timeout = 4",
        )

    daemon = started(tmp_path, text)
    ns = Broker(mqtt_broker.port, "/eg/downlink/#", "test-ms-ns")
    downlink_topic = f"/eg/downlink/{HALL.upper()}/"
    try:
        ns.send("/eg/uplink", ms_uplink(1, "04c9030800a106cd05"))
        daemon.wait_until(lambda: daemon.values("hall").get("snr") == 12.2, what="uplink")

        status, text_ = post(daemon, "/api/sensors/hall/commands", {"command": "reboot"})
        assert status == 202
        first = json.loads(text_)
        topic, body = ns.next()
        assert topic == downlink_topic
        assert (body["fPort"], payload_of(body)) == (85, "ff10ff")
        ack = {"acknowledged": True, "applicationID": 1, "devEUI": HALL, "fcnt": 4996}
        ns.send("/eg/ack", ack)
        daemon.wait_until(lambda: state_of(daemon, first["id"]) == "confirmed", what="ack")

        status, text_ = post(
            daemon, "/api/sensors/hall/commands", {"command": "reporting_interval", "seconds": 300}
        )
        assert status == 202
        second = json.loads(text_)
        assert ns.next()[0] == downlink_topic
        assert daemon.stop() == 0

        # A restart keeps the command waiting and never publishes it again.
        daemon.start()
        daemon.wait_mqtt()
        assert state_of(daemon, second["id"]) in ("queued", "timed_out")
        daemon.wait_until(
            lambda: state_of(daemon, second["id"]) == "timed_out", timeout=15, what="timeout"
        )
        assert daemon.values("hall")["config_status"] == 8
        assert ns.messages.empty()

        # The sensor takes the setting late: its echo still confirms the command.
        ns.send("/eg/uplink", ms_uplink(2, "ff032c01"))
        daemon.wait_until(lambda: state_of(daemon, second["id"]) == "confirmed", what="echo")
        assert daemon.values("hall")["reporting_interval"] == 300
        assert daemon.metric("vs121gw_downlinks_total", sensor="hall", outcome="timed_out") == 1
    finally:
        ns.close()
        if daemon.running():
            assert daemon.stop() == 0


# --- The demo: the simulator plays network server and sensor -----------------------------------

DEMO_SENSOR = """
[[sensors]]
id = "demo-lobby"
name = "Demo Lobby"
number = 1
model = "vs121"
dev_eui = "24e124538c000001"
region_count = 4
report_interval = 10
"""


@pytest.mark.asyncio
async def test_demo_bms_write_is_sent_acknowledged_and_echoed(tmp_path: Path) -> None:
    bacnet_port, http_port = free_udp_port(), new_http_port()
    text = (
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        f"[bacnet]\nport = {bacnet_port}\n"
        "[modbus.tcp]\nenabled = false\n"
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        "[simulate]\nenabled = true\nperiod = 0.5\n"
        f"{DEMO_SENSOR}"
    )
    daemon = Daemon(tmp_path, text, http_port=http_port)
    daemon.start()
    peer = await Peer.start("client.py")
    try:
        daemon.wait_until(lambda: daemon.status()["sensors"]["demo-lobby"]["online"], what="demo")
        await peer.call(
            "write",
            address=f"127.0.0.1:{bacnet_port}",
            object=HALL_INTERVAL_AV,
            property="presentValue",
            value=1200.0,
            type="real",
        )
        [record] = commands(daemon)
        assert record["payload"] == "ff03b004"
        assert record["topic"] == f"application/demo/device/{HALL}/command/down"
        daemon.wait_until(
            lambda: daemon.values("demo-lobby").get("reporting_interval") == 1200, what="echo"
        )
        done = json.loads(daemon.get(f"/api/commands/{record['id']}"))
        assert done["state"] == "confirmed"
        assert (done["acknowledged"], done["echoed"]) == (True, True)
        assert [step[0] for step in done["history"]] == [
            "publishing",
            "queued",
            "sent",
            "confirmed",
        ]
    finally:
        await peer.stop()
        assert daemon.stop() == 0


# --- `vs121-gateway simulate --answer-downlinks` as the network server ------------------------

SIM_SUBS = {
    "chirpstack": CS_SUB,
    "tts": TTS_SUB,
    "milesight": """
[[mqtt.subscriptions]]
name = "ms"
topic = "milesight/uplink/+"
envelope = "milesight"
downlink_topic = "milesight/downlink/{dev_eui}"
""",
}


@pytest.mark.parametrize("envelope", ["chirpstack", "tts", "milesight"])
def test_simulate_answers_downlinks_like_the_network_server(
    envelope: str, tmp_path: Path, mqtt_broker: MosquittoBroker
) -> None:
    daemon = started(
        tmp_path,
        lambda http: config(
            tmp_path / "state",
            mqtt_port=mqtt_broker.port,
            http_port=http,
            subscription=SIM_SUBS[envelope],
        ),
    )
    args = ["simulate", "--config", str(daemon.config), "--port", str(mqtt_broker.port)]
    args += ["--envelope", envelope, "--rounds", "40", "--interval", "0.2", "--answer-downlinks"]
    simulator = threading.Thread(target=cli, args=(args,))
    simulator.start()
    try:
        daemon.wait_until(lambda: daemon.status()["sensors"]["hall"]["online"], what="traffic")
        command = '{"command": "reporting_interval", "seconds": 900}'
        send = ["send", "hall", command, "--config", str(daemon.config), "--wait", "20"]
        assert cli(send) == 0  # returns once the command is confirmed
        [record] = commands(daemon)
        daemon.wait_until(
            lambda: daemon.values("hall").get("reporting_interval") == 900, what="echo"
        )
        done = json.loads(daemon.get(f"/api/commands/{record['id']}"))
        assert done["state"] == "confirmed"
        assert (done["acknowledged"], done["echoed"]) == (True, True)
    finally:
        simulator.join(60)
        assert daemon.stop() == 0
