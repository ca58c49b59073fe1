"""A simulated network server for `vs121-gateway simulate --answer-downlinks`.

It takes the gateway's downlinks from the broker where the real server would (ChirpStack's
command topic, TTS's `down/push`, `milesight/downlink/<eui>` for the simulator's Milesight
topics), answers each with that server's documented events (ChirpStack `txack` then `ack`, TTS
`down/sent` then `down/ack` carrying the push's correlation ids, a Milesight ACK notification on
`milesight/uplink/ack`), and hands the payload to the traffic plan so the simulated sensor echoes
the setting in its next uplink, as a VS121 does.
"""

from __future__ import annotations

import base64
import binascii
import json
import queue
import re
from dataclasses import dataclass
from typing import Any, Final

from gateway.envelopes import normalise_dev_eui

DOWNLINK_FILTERS: Final = {
    "chirpstack": "application/+/device/+/command/down",
    "tts": "v3/+/devices/+/down/push",
    "milesight": "milesight/downlink/+",
}
MILESIGHT_ACK_TOPIC: Final = "milesight/uplink/ack"
_TTS_PUSH: Final = re.compile(r"(v3/[^/]+/devices/[^/]+)/down/push")
_CS_DOWN: Final = re.compile(r"(application/[^/]+/device/([^/]+))/command/down")


@dataclass(frozen=True, slots=True)
class Downlink:
    dev_eui: str | None  # None for TTS: its topic names the device id
    device_topic: str  # the topic prefix the device's events go under
    payload: bytes
    correlation_ids: tuple[str, ...] = ()


class SimulatedNetworkServer:
    """Collects downlinks (from paho's thread) and produces the events that answer them."""

    def __init__(self, envelope: str) -> None:
        if envelope not in DOWNLINK_FILTERS:
            raise ValueError(f"no simulated network server for envelope {envelope!r}")
        self.envelope = envelope
        self.filter = DOWNLINK_FILTERS[envelope]
        self._inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.answered = 0

    def take(self, topic: str, body: bytes) -> None:
        """Called from paho's thread with every message on `filter`."""
        self._inbox.put((topic, body))

    def pending(self) -> list[Downlink]:
        out: list[Downlink] = []
        while True:
            try:
                topic, body = self._inbox.get_nowait()
            except queue.Empty:
                return out
            downlink = self._read(topic, body)
            if downlink is not None:
                out.append(downlink)

    def _read(self, topic: str, body: bytes) -> Downlink | None:
        try:
            doc: Any = json.loads(body)
            if self.envelope == "chirpstack":
                match = _CS_DOWN.fullmatch(topic)
                if match is None:
                    return None
                eui = normalise_dev_eui(match.group(2))
                return Downlink(eui, match.group(1), base64.b64decode(doc["data"]))
            if self.envelope == "tts":
                match = _TTS_PUSH.fullmatch(topic)
                if match is None:
                    return None
                [item] = doc["downlinks"]
                ids = tuple(str(c) for c in item.get("correlation_ids", ()))
                return Downlink(None, match.group(1), base64.b64decode(item["frm_payload"]), ids)
            eui = normalise_dev_eui(str(doc["devEUI"]))
            return Downlink(eui, "milesight", base64.b64decode(doc["data"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None  # not a downlink this simulator understands

    def events(self, downlink: Downlink) -> list[tuple[str, bytes]]:
        """The server's answers to one downlink: handed to a gateway, then acknowledged."""
        self.answered += 1
        if self.envelope == "chirpstack":
            info = {"devEui": downlink.dev_eui}
            txack = {"deviceInfo": info, "queueItemId": f"sim-{self.answered}", "fCntDown": 1}
            ack = {"deviceInfo": info, "queueItemId": f"sim-{self.answered}", "acknowledged": True}
            return [
                (f"{downlink.device_topic}/event/txack", json.dumps(txack).encode()),
                (f"{downlink.device_topic}/event/ack", json.dumps(ack).encode()),
            ]
        if self.envelope == "tts":
            ids = list(downlink.correlation_ids)
            return [
                (
                    f"{downlink.device_topic}/down/{kind}",
                    json.dumps({"correlation_ids": ids, f"downlink_{kind}": {}}).encode(),
                )
                for kind in ("sent", "ack")
            ]
        notification = {"acknowledged": True, "devEUI": downlink.dev_eui, "fcnt": self.answered}
        return [(MILESIGHT_ACK_TOPIC, json.dumps(notification).encode())]
