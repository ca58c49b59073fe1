"""A paho client that publishes test messages to the loopback broker, waiting for each (QoS 1)."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Publisher:
    def __init__(self, port: int, client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        connected = threading.Event()
        self.client.on_connect = lambda *_a, **_k: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(10)

    def publish_json(self, topic: str, doc: dict[str, object]) -> None:
        self.client.publish(topic, json.dumps(doc).encode(), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
