"""The real daemon against a real mosquitto: every envelope end to end, and bad input."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import Daemon, gateway_config, new_http_port, start_mqtt_daemon
from helpers.publisher import Publisher
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sim_publish import uplink_body, uplink_topic

HALL = "24e124538c000001"
LAB = "24e124538c000002"
CS_TOPIC = f"application/a/device/{HALL}/event/up"


@pytest.fixture
def gateway(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[Daemon]:
    daemon = start_mqtt_daemon(tmp_path, mqtt_broker.port)
    yield daemon
    if daemon.running():
        assert daemon.stop() == 0


@pytest.fixture
def publisher(mqtt_broker: MosquittoBroker) -> Iterator[Publisher]:
    pub = Publisher(mqtt_broker.port, "test-publisher")
    yield pub
    pub.close()


@pytest.mark.parametrize("envelope", ["chirpstack", "tts", "milesight", "raw"])
def test_each_lorawan_envelope_end_to_end(
    envelope: str, gateway: Daemon, publisher: Publisher
) -> None:
    payload = bytes.fromhex("04c9030800a106cd05")  # the guide's example: 3 people, regions 1, 6, 8
    publisher.publish(uplink_topic(envelope, HALL), uplink_body(envelope, HALL, 1, payload, 1e9))
    gateway.wait_until(lambda: gateway.values("hall").get("people_count_all") == 3, what="count")
    values = gateway.values("hall")
    assert values["region_1"] == 1
    assert values["region_2"] == 0
    assert "region_6" not in values  # only 4 regions are mapped for this sensor
    assert gateway.status()["sensors"]["hall"]["online"] is True
    source = "raw" if envelope == "raw" else envelope
    assert (
        gateway.metric("vs121gw_messages_total", source=f"mqtt:{source}", outcome="accepted") == 1
    )


def test_vs121p_json_end_to_end(gateway: Daemon, publisher: Publisher) -> None:
    report = json.loads(
        (Path(__file__).parent / "data" / "vs121p" / "region_interval_counts.json").read_text()
    )
    publisher.publish("vs121p/foyer", json.dumps(report).encode())
    gateway.wait_until(lambda: "people_count_all" in gateway.values("foyer"), what="foyer")
    values = gateway.values("foyer")
    assert values["people_count_all"] == report["current_total"]
    assert values["region_1_count"] == report["current_counted"][0]


def test_pre_decoded_object_is_used_without_payload(gateway: Daemon, publisher: Publisher) -> None:
    body = {
        "deduplicationId": "x-1",
        "deviceInfo": {"devEui": LAB, "applicationId": "a"},
        "fCnt": 3,
        "fPort": 85,
        "object": {"people_count_all": 11, "region_2_count": 4},
    }
    publisher.publish(f"application/a/device/{LAB}/event/up", json.dumps(body).encode())
    gateway.wait_until(lambda: gateway.values("lab").get("people_count_all") == 11, what="object")
    assert gateway.values("lab")["region_2_count"] == 4


BAD_INPUTS = [
    (CS_TOPIC, b"{not json", "envelope_error", "chirpstack"),
    (
        CS_TOPIC,
        json.dumps({"deviceInfo": {"devEui": HALL}, "fPort": "85", "data": "BMk="}).encode(),
        "envelope_error",
        "chirpstack",
    ),
    (
        CS_TOPIC,
        json.dumps({"fPort": 85, "data": "BMk="}).encode(),
        "envelope_error",
        "chirpstack",
    ),
    (CS_TOPIC, b"x" * 1_000_000, "envelope_error", "chirpstack"),
    (
        CS_TOPIC,
        bytes(range(256)) * 4,
        "envelope_error",
        "chirpstack",
    ),
    (
        uplink_topic("chirpstack", "ffffffffffffffff"),
        uplink_body("chirpstack", "ffffffffffffffff", 1, b"\x06\xcd\x01", 0),
        "unknown_device",
        "chirpstack",
    ),
    (
        CS_TOPIC,
        json.dumps(
            {"deviceInfo": {"devEui": HALL}, "fCnt": 9, "fPort": 0, "data": "BMk="}
        ).encode(),
        "mac_only",  # fPort 0 carries MAC commands only
        "chirpstack",
    ),
    (
        CS_TOPIC,
        json.dumps(
            {"deviceInfo": {"devEui": HALL}, "fCnt": 9, "fPort": 85, "data": "@@@"}
        ).encode(),
        "envelope_error",
        "chirpstack",
    ),
    ("vs121p/foyer", b"\x00\xff garbage", "decode_error", "vs121p"),
]


def test_bad_input_is_counted_logged_and_valid_traffic_still_lands(
    gateway: Daemon, publisher: Publisher
) -> None:
    for i, (topic, body, _outcome, _source) in enumerate(BAD_INPUTS):
        publisher.publish(topic, body)
        # Valid traffic interleaved with the bad: every valid one must land.
        good = bytes([0x06, 0xCD, i + 1])
        publisher.publish(
            uplink_topic("chirpstack", LAB), uplink_body("chirpstack", LAB, 100 + i, good, 0)
        )
    last = len(BAD_INPUTS)
    gateway.wait_until(
        lambda: gateway.values("lab").get("people_count_max") == last, what="valid traffic"
    )
    for _topic, _body, outcome, source in BAD_INPUTS:
        assert (
            gateway.metric("vs121gw_messages_total", source=f"mqtt:{source}", outcome=outcome) >= 1
        )
    assert (
        gateway.metric("vs121gw_messages_total", source="mqtt:chirpstack", outcome="accepted")
        == last
    )
    assert gateway.running()
    log = gateway.log_text()
    assert "Traceback" not in log
    assert "unknown device dev_eui ffffffffffffffff" in log
    assert "fPort must be an integer" in log


def test_region_that_does_not_exist_is_reported_and_rest_used(
    gateway: Daemon, publisher: Publisher
) -> None:
    report = {
        "event": "Region People Counting",
        "report_type": "interval",
        "device_info": {"device_sn": "369362028335"},
        "time_info": {
            "timezone": "UTC+0:00",
            "start_time": "2024/01/01 10:00:00",
            "end_time": "2024/01/01 10:10:00",
        },
        "current_total": 5,
        "max_counted": 6,
        "total_mapped_regions": 3,
        "numbering_regions": [1, 2, 3],
        "current_counted": [1, 1, 3],
    }
    publisher.publish("vs121p/foyer", json.dumps(report).encode())
    gateway.wait_until(lambda: gateway.values("foyer").get("people_count_all") == 5, what="report")
    assert "region_3_count" not in gateway.values("foyer")
    assert "sensor foyer: region_3_count=3 for a region that is not mapped" in gateway.log_text()


def test_http_post_vs121p(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    port = new_http_port()
    daemon = Daemon(
        tmp_path, gateway_config(tmp_path / "st", mqtt_port=None, http_port=port), http_port=port
    )
    daemon.start()
    try:
        report = (Path(__file__).parent / "data" / "vs121p" / "line_interval.json").read_bytes()
        url = f"http://127.0.0.1:{port}/vs121p"
        with urllib.request.urlopen(urllib.request.Request(url, data=report), timeout=5) as r:
            assert r.status == 200
        assert daemon.values("foyer")["gateway_total_in"] == 10  # durable before the 200
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{oops"), timeout=5)
        assert bad.value.code == 400
        assert "not valid JSON" in bad.value.read().decode()
        with pytest.raises(urllib.error.HTTPError) as big:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x" * 2_000_000), timeout=5)
        assert big.value.code == 413
    finally:
        assert daemon.stop() == 0


def test_reset_counts_publishes_downlink(
    gateway: Daemon, publisher: Publisher, mqtt_broker: MosquittoBroker
) -> None:
    got: list[tuple[str, bytes]] = []
    arrived = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-downlink-listener")
    subscribed = threading.Event()
    sub.on_connect = lambda c, *_a, **_k: c.subscribe("milesight/downlink/#", qos=1)
    sub.on_subscribe = lambda *_a, **_k: subscribed.set()

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        got.append((m.topic, bytes(m.payload)))
        arrived.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", mqtt_broker.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        line = bytes.fromhex("05cc05000200")
        publisher.publish(
            uplink_topic("milesight", HALL), uplink_body("milesight", HALL, 1, line, 0)
        )
        gateway.wait_until(lambda: gateway.values("hall").get("gateway_total_in") == 5, what="line")
        from gateway.cli import main

        assert main(["reset-counts", "hall", "--config", str(gateway.config)]) == 0
        assert gateway.values("hall")["gateway_total_in"] == 0
        assert arrived.wait(10)
        topic, body = got[0]
        assert topic == f"milesight/downlink/{HALL}"
        assert base64.b64decode(json.loads(body)["data"]) == bytes.fromhex("ff51ff")
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_systemd_notifications_and_clean_shutdown(tmp_path: Path) -> None:
    port = new_http_port()
    state_dir = tmp_path / "st"
    daemon = Daemon(
        tmp_path, gateway_config(state_dir, mqtt_port=None, http_port=port), http_port=port
    )
    # READY=1 is awaited by start(); the watchdog must then be fed at half the interval.
    daemon.start(env={"WATCHDOG_USEC": "400000"})
    daemon.wait_notify("WATCHDOG=1", timeout=10)
    report = (Path(__file__).parent / "data" / "vs121p" / "line_interval.json").read_bytes()
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/vs121p", data=report)
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 200
    daemon.terminate()
    daemon.wait_notify("STOPPING=1", timeout=10)
    assert daemon.wait_exit() == 0
    # A clean stop leaves complete snapshots and an empty journal.
    assert (state_dir / "journal.jsonl").read_bytes() == b""
    snapshot = json.loads((state_dir / "sensors" / "foyer.json").read_text())
    assert snapshot["lines"]["total_in"] == 10
    log = daemon.log_text()
    assert "vs121-gateway stopped; state saved" in log
    assert "Traceback" not in log
