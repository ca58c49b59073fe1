"""The mosquitto fixture carries QoS 1 messages and survives a restart under a connected client."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.broker import BrokerError, MosquittoBroker, free_port
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 10.0


class Subscriber:
    """A client that subscribes on every (re)connect and records what it receives."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.topic = topic
        self.connects = 0
        self.subscribed = threading.Event()
        self.received = threading.Event()
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4()}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        # Retry every second, so a restarted broker is found again quickly.
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            return
        self.connects += 1
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if not any(code.is_failure for code in reason_codes):
            self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.messages.append(message)
        self.received.set()


def publish_once(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    """Publish one QoS 1 message and return once the broker has acknowledged it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published(), "the broker never acknowledged the QoS 1 publish"
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def subscriber(mqtt_broker: MosquittoBroker) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_broker, f"test/{uuid.uuid4()}/up")
    try:
        assert sub.subscribed.wait(TIMEOUT), "no SUBACK from the broker"
        yield sub
    finally:
        sub.close()


def test_qos1_message_round_trip(mqtt_broker: MosquittoBroker, subscriber: Subscriber) -> None:
    assert mqtt_broker.host == "127.0.0.1"

    publish_once(mqtt_broker, subscriber.topic, b"\x04\xc9\x03")

    assert subscriber.received.wait(TIMEOUT), "the message never arrived"
    [message] = subscriber.messages
    assert (message.topic, message.payload, message.qos) == (subscriber.topic, b"\x04\xc9\x03", 1)


def test_restart_keeps_port_and_clients_reconnect(
    mqtt_broker: MosquittoBroker, subscriber: Subscriber
) -> None:
    old_pid, port = mqtt_broker.pid, mqtt_broker.port
    subscriber.subscribed.clear()

    mqtt_broker.restart()

    assert mqtt_broker.port == port
    assert mqtt_broker.pid != old_pid
    # A fresh SUBACK means the client reconnected to the new process and subscribed again.
    assert subscriber.subscribed.wait(TIMEOUT), "the client did not reconnect after the restart"
    assert subscriber.connects == 2
    publish_once(mqtt_broker, subscriber.topic, b"after restart")
    assert subscriber.received.wait(TIMEOUT), "no message flowed after the restart"
    assert [m.payload for m in subscriber.messages] == [b"after restart"]


def test_missing_executable_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"apt-get install -y mosquitto"):
        MosquittoBroker(tmp_path, executable="no-such-mosquitto-binary")


def test_start_reports_a_broker_that_cannot_bind(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        port = free_port()
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        broker = MosquittoBroker(tmp_path, port=port)
        with pytest.raises(BrokerError, match=r"exited with code \d+ on port"):
            broker.start()
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.pid
