"""A paho client that publishes test messages to the loopback broker, waiting for each (QoS 1)."""

from __future__ import annotations

import base64
import json
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Publisher:
    def __init__(self, port: int, client_id: str) -> None:
        self.client_id = client_id
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        connected = threading.Event()
        self.client.on_connect = lambda *_a, **_k: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(10)

    def publish(self, topic: str, body: bytes) -> None:
        self.client.publish(topic, body, qos=1).wait_for_publish(10)

    def publish_json(self, topic: str, doc: dict[str, object]) -> None:
        self.publish(topic, json.dumps(doc).encode())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ChirpStackUplinks(Publisher):
    """ChirpStack v4 uplink events (application "a", fPort 85), one frame counter for all."""

    def __init__(self, port: int, client_id: str) -> None:
        super().__init__(port, client_id)
        self.fcnt = 0

    def send(
        self, dev_eui: str, *, obj: dict[str, object] | None = None, data: bytes | None = None
    ) -> None:
        """An uplink carrying a decoded `obj` (as a codec in ChirpStack makes), raw `data`, or
        both."""
        self.fcnt += 1
        body: dict[str, object] = {
            "deduplicationId": f"{self.client_id}-{self.fcnt}",
            "deviceInfo": {"devEui": dev_eui, "applicationId": "a"},
            "fCnt": self.fcnt,
            "fPort": 85,
        }
        if obj is not None:
            body["object"] = obj
        if data is not None:
            body["data"] = base64.b64encode(data).decode()
        self.publish_json(f"application/a/device/{dev_eui}/event/up", body)
