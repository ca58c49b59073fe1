"""Downlink events of the network servers: what became of a downlink the gateway asked for.

Read from the same MQTT subscriptions as the uplinks (widen the filter to cover them):
- ChirpStack v4 `application/<app>/device/<devEUI>/event/<type>`: `txack` (a gateway took the
  downlink for transmission: sent), `ack` (`acknowledged` true: the device confirmed it; false:
  it did not, or the confirmation timed out) and `log` events whose `code` is about a downlink
  (DOWNLINK_PAYLOAD_SIZE, DOWNLINK_GATEWAY, F_CNT_DOWN, EXPIRED): failed. Other events (join,
  status, location, integration, other logs) are not downlink events and are skipped quietly.
- The Things Stack v3 `v3/<app>[@<tenant>]/devices/<id>/down/<type>` with type queued, sent,
  ack, nack or failed; its `correlation_ids` carry the id the gateway put into the push.
- Milesight gateway network server: its "ACK Notification" (`acknowledged`, `devEUI`, `fcnt`)
  and "Error Notification" (`devEUI`, `error`), on topics the user sets.

`parse_event` returns None for a message that is not a downlink event (an uplink, say), an
`Event` with kind "ignored" for a known event type without meaning here, and raises EnvelopeError
for one that looks like a downlink event but cannot be read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from gateway.envelopes import normalise_dev_eui
from gateway.errors import EnvelopeError

EventKind = Literal["queued", "sent", "ack", "nack", "failed", "ignored"]

CORRELATION_PREFIX: Final = "vs121-gateway:cmd:"
"""Prefix of the correlation id the gateway puts into a TTS push: the command id follows."""

_CS_TOPIC: Final = re.compile(r"application/[^/]+/device/([^/]+)/event/([^/]+)")
_TTS_TOPIC: Final = re.compile(r"v3/[^/]+/devices/([^/]+)/down/([^/]+)")
_CS_DOWNLINK_LOGS: Final = frozenset(
    {"DOWNLINK_PAYLOAD_SIZE", "DOWNLINK_GATEWAY", "DOWNLINK_CODEC", "F_CNT_DOWN", "EXPIRED"}
)
_TTS_KINDS: Final[dict[str, EventKind]] = {
    "queued": "queued",
    "sent": "sent",
    "ack": "ack",
    "nack": "nack",
    "failed": "failed",
}
_MAX_IDS: Final = 64  # correlation ids looked at per event: bounded work on hostile input


@dataclass(frozen=True, slots=True)
class Event:
    """One downlink event. `dev_eui` or `device_id` names the device (TTS may give only its own
    device id); `command_id` is set when the event names the gateway's command itself."""

    kind: EventKind
    source: str
    dev_eui: str | None = None
    device_id: str | None = None
    command_id: str | None = None
    reason: str = ""


def parse_event(envelope: str, topic: str, body: bytes) -> Event | None:
    """The downlink event in this message, if it is one (see the module docstring)."""
    if envelope == "chirpstack":
        match = _CS_TOPIC.fullmatch(topic)
        if match is None or match.group(2) == "up":
            return None
        return _chirpstack(match.group(2), _load(envelope, body))
    if envelope == "tts":
        match = _TTS_TOPIC.fullmatch(topic)
        if match is None:
            return None
        return _tts(match.group(1), match.group(2), _load(envelope, body))
    if envelope == "milesight":
        if b'"acknowledged"' not in body and b'"error"' not in body:
            return None  # cheap test first: uplinks are far more common than notifications
        return _milesight(_load(envelope, body))
    return None


def _load(envelope: str, body: bytes) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"{envelope} downlink event: body is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise EnvelopeError(f"{envelope} downlink event: body must be a JSON object")
    return doc


def _eui(envelope: str, value: object) -> str:
    if not isinstance(value, str):
        raise EnvelopeError(f"{envelope} downlink event: no device EUI")
    try:
        return normalise_dev_eui(value)
    except ValueError as exc:
        raise EnvelopeError(f"{envelope} downlink event: {exc}") from None


def _chirpstack(event: str, doc: dict[str, object]) -> Event:
    if event not in ("ack", "txack", "log"):
        return Event("ignored", "chirpstack")
    info = doc.get("deviceInfo")
    eui = _eui("chirpstack", info.get("devEui") if isinstance(info, dict) else None)
    if event == "txack":
        return Event("sent", "chirpstack", dev_eui=eui)
    if event == "ack":
        acknowledged = doc.get("acknowledged")
        if not isinstance(acknowledged, bool):
            # ChirpStack before 4.1 omitted false values from its JSON: absent means false.
            acknowledged = False
        if acknowledged:
            return Event("ack", "chirpstack", dev_eui=eui)
        return Event("nack", "chirpstack", dev_eui=eui, reason="not acknowledged by the device")
    code = doc.get("code")
    if isinstance(code, str) and code in _CS_DOWNLINK_LOGS:
        description = doc.get("description")
        detail = f": {description}" if isinstance(description, str) else ""
        return Event("failed", "chirpstack", dev_eui=eui, reason=f"{code}{detail}"[:200])
    return Event("ignored", "chirpstack")


def _tts(device_id: str, kind: str, doc: dict[str, object]) -> Event:
    event_kind = _TTS_KINDS.get(kind)
    if event_kind is None:
        return Event("ignored", "tts")
    ids = doc.get("end_device_ids")
    eui = None
    if isinstance(ids, dict) and isinstance(ids.get("dev_eui"), str):
        eui = _eui("tts", ids["dev_eui"])
    command_id = next(
        (
            cid[len(CORRELATION_PREFIX) :]
            for cid in _strings(doc)
            if cid.startswith(CORRELATION_PREFIX)
        ),
        None,
    )
    reason = ""
    if event_kind in ("failed", "nack"):
        reason = _tts_reason(doc) or ("not acknowledged by the device" if kind == "nack" else "")
    return Event(
        event_kind, "tts", dev_eui=eui, device_id=device_id, command_id=command_id, reason=reason
    )


def _tts_reason(doc: dict[str, object]) -> str:
    failed = doc.get("downlink_failed")
    if isinstance(failed, dict):
        error = failed.get("error")
        if isinstance(error, dict):
            text = error.get("message_format") or error.get("name")
            if isinstance(text, str):
                return text[:200]
    return ""


def _strings(node: object, depth: int = 0) -> Iterator[str]:
    """Every string inside any `correlation_ids` list of the event, at bounded depth."""
    found = 0
    stack: list[tuple[object, int]] = [(node, depth)]
    while stack and found < _MAX_IDS:
        item, level = stack.pop()
        if level > 6:
            continue
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "correlation_ids" and isinstance(value, list):
                    for cid in value[:_MAX_IDS]:
                        if isinstance(cid, str):
                            found += 1
                            yield cid
                elif isinstance(value, dict | list):
                    stack.append((value, level + 1))
        elif isinstance(item, list):
            stack.extend((value, level + 1) for value in item[:_MAX_IDS])


def _milesight(doc: dict[str, object]) -> Event | None:
    if "acknowledged" in doc:
        eui = _eui("milesight", doc.get("devEUI"))
        if doc["acknowledged"] is True:
            return Event("ack", "milesight", dev_eui=eui)
        return Event("nack", "milesight", dev_eui=eui, reason="not acknowledged by the device")
    error = doc.get("error")
    if isinstance(error, str) and "data" not in doc:
        eui = _eui("milesight", doc.get("devEUI"))
        if "downlink" in error.lower():
            return Event("failed", "milesight", dev_eui=eui, reason=error[:200])
        return Event("ignored", "milesight", dev_eui=eui, reason=error[:200])
    return None
