"""Every metric the README names moves when its event happens, in the real daemon.

A counter that is registered but never incremented looks like "all is well" on a dashboard; each
test makes the event happen (real mosquitto, real HTTP) and reads /metrics.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.broker import MosquittoBroker, free_port
from helpers.daemon import ALL_SUBSCRIPTIONS, Daemon, gateway_config, new_http_port
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sim_publish import uplink_body, uplink_topic

HALL = "24e124538c000001"
DATA = Path(__file__).parent / "data" / "vs121p"


def _start(tmp_path: Path, mqtt_port: int, extra_mqtt: str = "") -> Daemon:
    port = new_http_port()
    cfg = gateway_config(
        tmp_path / "state",
        mqtt_port=mqtt_port,
        http_port=port,
        subscriptions=extra_mqtt + ALL_SUBSCRIPTIONS,
    )
    daemon = Daemon(tmp_path, cfg, http_port=port)
    daemon.start()
    return daemon


class Publisher:
    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{port}-{id(self)}")
        connected = threading.Event()
        self.client.on_connect = lambda *_a, **_k: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(10)

    def send(self, topic: str, body: bytes, qos: int = 1) -> None:
        self.client.publish(topic, body, qos=qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[Daemon]:
    daemon = _start(tmp_path, mqtt_broker.port)
    daemon.wait_until(lambda: daemon.metric("vs121gw_mqtt_connected") == 1, what="MQTT")
    yield daemon
    if daemon.running():
        daemon.stop()


@pytest.fixture
def publisher(mqtt_broker: MosquittoBroker) -> Iterator[Publisher]:
    pub = Publisher(mqtt_broker.port)
    yield pub
    pub.close()


def test_mqtt_connect_and_received_counters_move(gateway: Daemon, publisher: Publisher) -> None:
    assert gateway.metric("vs121gw_mqtt_events_total", event="connected") == 1
    payload = bytes.fromhex("04c9030800a106cd05")
    for fcnt in (1, 2):
        body = uplink_body("chirpstack", HALL, fcnt, payload, 1e9 + fcnt)
        publisher.send(uplink_topic("chirpstack", HALL), body)
    publisher.send("vs121p/foyer", b"{not json")
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_mqtt_events_total", event="received") == 3,
        what="received counted",
    )
    assert gateway.metric("vs121gw_messages_total", source="mqtt:chirpstack", outcome="accepted")
    assert gateway.metric("vs121gw_messages_total", source="mqtt:vs121p", outcome="decode_error")
    # Received and applied is not yet written: the journal batch follows a moment later.
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_state_writes_total") >= 1, what="state write counted"
    )


def test_duplicates_and_unknown_devices_counted(gateway: Daemon, publisher: Publisher) -> None:
    payload = bytes.fromhex("04c9030800a106cd05")
    body = uplink_body("chirpstack", HALL, 7, payload, 1e9)
    publisher.send(uplink_topic("chirpstack", HALL), body)
    publisher.send(uplink_topic("chirpstack", HALL), body)
    other = "24e124538c0000ff"
    publisher.send(
        uplink_topic("chirpstack", other), uplink_body("chirpstack", other, 1, payload, 1e9)
    )
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_duplicates_total", sensor="hall") == 1, what="duplicate"
    )
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_unknown_devices_total") == 1, what="unknown device"
    )


def test_disconnect_counted_when_the_broker_goes(
    gateway: Daemon, mqtt_broker: MosquittoBroker
) -> None:
    mqtt_broker.restart()
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_mqtt_events_total", event="disconnected") >= 1,
        what="disconnect counted",
    )
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_mqtt_events_total", event="connected") >= 2,
        what="reconnect counted",
    )


def test_connect_failures_counted(tmp_path: Path) -> None:
    daemon = _start(tmp_path, free_port())  # nothing listens there
    try:
        daemon.wait_until(
            lambda: daemon.metric("vs121gw_mqtt_events_total", event="connect_failed") >= 2,
            what="connect failures counted",
        )
        assert daemon.metric("vs121gw_mqtt_connected") == 0
    finally:
        daemon.stop()


def test_queue_overflow_counted(tmp_path: Path, mqtt_broker: MosquittoBroker) -> None:
    daemon = _start(tmp_path, mqtt_broker.port, extra_mqtt="queue_size = 10\n")
    daemon.wait_until(lambda: daemon.metric("vs121gw_mqtt_connected") == 1, what="MQTT")
    report = (DATA / "region_interval_counts.json").read_bytes()
    pub = Publisher(mqtt_broker.port)
    try:
        # QoS 0, as fast as the broker takes them: far more than ten arrive between two turns
        # of the event loop.
        for n in range(3000):
            doc = json.loads(report)
            doc["timestamp"] = 1671534952 + n
            pub.client.publish("vs121p/foyer", json.dumps(doc).encode(), qos=0)
        pub.send("vs121p/foyer", b"{}", qos=1)
        daemon.wait_until(
            lambda: daemon.metric("vs121gw_queue_overflow_total", source="mqtt") >= 1,
            what="overflow counted",
        )
    finally:
        pub.close()
        daemon.stop()


def test_acknowledgement_delays_are_observed(gateway: Daemon, publisher: Publisher) -> None:
    report = json.loads((DATA / "region_interval_counts.json").read_text())
    publisher.send("vs121p/foyer", json.dumps(report).encode())
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_ack_seconds_count", source="mqtt") == 1,
        what="MQTT acknowledgement observed",
    )
    assert gateway.metric("vs121gw_ack_seconds_sum", source="mqtt") > 0
    assert gateway.metric("vs121gw_ack_seconds_bucket", source="mqtt", le="+Inf") == 1
    # QoS 0 has nothing to acknowledge: applied, and not observed.
    later = dict(report, time_info=dict(report["time_info"], end_time="2022/11/02 10:00:00"))
    publisher.send("vs121p/foyer", json.dumps(later).encode(), qos=0)
    gateway.wait_until(
        lambda: (
            gateway.metric("vs121gw_messages_total", source="mqtt:vs121p", outcome="accepted") == 2
        ),
        what="QoS 0 report applied",
    )
    assert gateway.metric("vs121gw_ack_seconds_count", source="mqtt") == 1
    # HTTP: observed before the 200 is sent.
    line = (DATA / "line_interval.json").read_bytes()
    post = urllib.request.Request(f"http://127.0.0.1:{gateway.http_port}/vs121p", data=line)
    with urllib.request.urlopen(post, timeout=10) as answer:
        assert answer.status == 200
    assert gateway.metric("vs121gw_ack_seconds_count", source="http") == 1
    assert gateway.metric("vs121gw_ack_seconds_sum", source="http") > 0
