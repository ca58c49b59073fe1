"""Network-server messages about downlinks, and the uplink details the gateway now reads
(radio link, Milesight payload-codec bodies, Milesight's own downlink topic notation)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.downlink_events import CORRELATION_PREFIX, Event, parse_event
from gateway.envelopes import downlink_message, parse_milesight
from gateway.errors import EnvelopeError

NS = Path(__file__).parent / "data" / "ns"
EUI = "24e124527f418093"
CS_DEVICE = {"devEui": EUI, "applicationId": "a1", "deviceClassEnabled": "CLASS_A"}


def _json(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((NS / name).read_text())
    return loaded


def _keys_of_verbatim(name: str) -> set[str]:
    """The top-level keys of a documented body that carries // comments (not JSON)."""
    return set(re.findall(r'^\s*"(\w+)":', (NS / name).read_text(), re.M))


# --- uplinks: radio link, payload-codec mode ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "milesight-building-gw-uplink-combined.json",
            {"gateway_count": 1.0, "rssi": -57.0, "snr": 12.2, "spreading_factor": 10.0},
        ),
        (
            "milesight-support-uplink.json",
            {"gateway_count": 1.0, "rssi": -51.0, "snr": 13.8, "spreading_factor": 7.0},
        ),
    ],
)
def test_milesight_uplinks_carry_the_radio_link(name: str, expected: dict[str, float]) -> None:
    uplink = parse_milesight("/mqtttest", (NS / name).read_bytes())
    assert uplink.meta == expected


def test_milesight_payload_codec_body_without_data_is_accepted() -> None:
    body = _json("milesight-support-uplink.json")
    del body["data"]
    body |= {"people_count_all": 4, "region_count": 2}
    uplink = parse_milesight("/mqtttest", json.dumps(body).encode())
    assert uplink.payload is None
    assert uplink.decoded == {"people_count_all": 4, "region_count": 2}


def test_milesight_payload_codec_object_is_accepted() -> None:
    body = _json("milesight-support-uplink.json")
    del body["data"]
    body["object"] = {"people_count_all": 3}
    uplink = parse_milesight("/mqtttest", json.dumps(body).encode())
    assert uplink.decoded == {"people_count_all": 3}


def test_bad_radio_metadata_never_refuses_an_uplink() -> None:
    body = _json("milesight-support-uplink.json")
    body["rxInfo"] = [{"rssi": "strong"}, 7]
    body["txInfo"] = "fast"
    uplink = parse_milesight("/mqtttest", json.dumps(body).encode())
    assert uplink.meta == {"gateway_count": 2.0}
    assert uplink.payload is not None


# --- downlinks as each server documents them -----------------------------------------------


def test_milesight_deveui_wildcard_topic_as_documented() -> None:
    wildcard = (NS / "milesight-building-gw-downlink-deveui-wildcard.txt").read_text()
    documented_topic = re.search(r"Topic in the gateway: (\S+)", wildcard)
    published_to = re.search(r"Publish to:\s+(\S+)", wildcard)
    assert documented_topic is not None
    assert published_to is not None
    topic, body = downlink_message(
        "milesight", EUI, 85, b"\xff\x10\xff", topic_template=documented_topic.group(1)
    )
    assert topic == published_to.group(1) == "/eg/downlink/24E124527F418093/"
    fields = json.loads(body)
    documented = _json("milesight-building-gw-downlink-no-wildcard.json")
    assert set(fields) == set(documented)
    assert base64.b64decode(fields["data"]) == bytes.fromhex("ff10ff")


def test_chirpstack_command_has_the_documented_fields() -> None:
    topic, body = downlink_message("chirpstack", EUI, 85, b"\xff\x03\xb0\x04", app="a1")
    assert topic == f"application/a1/device/{EUI}/command/down"
    fields = json.loads(body)
    # Everything we send is documented; `object` is the alternative to `data`.
    assert set(fields) == _keys_of_verbatim("chirpstack-docs-command-down.verbatim.txt") - {
        "object",
        "temperatureSensor",
        "humiditySensor",
    }


def test_chirpstack_command_topic_is_configurable() -> None:
    topic, _ = downlink_message(
        "chirpstack", EUI, 85, b"\x01", app="a1", topic_template="cs/{app}/{DEV_EUI}/down"
    )
    assert topic == f"cs/a1/{EUI.upper()}/down"


def test_tts_push_carries_our_correlation_id_as_documented() -> None:
    _, body = downlink_message(
        "tts", EUI, 85, b"\xbe\xef", app="a", device_id="d", correlation_id="c-1"
    )
    [sent] = json.loads(body)["downlinks"]
    documented_push: dict[str, list[dict[str, object]]] = json.loads(
        (NS / "tts-docs-down-push-confirmed.json").read_text()
    )
    [documented] = documented_push["downlinks"]
    assert set(sent) == set(documented)
    assert sent["correlation_ids"] == ["c-1"]


# --- downlink events -------------------------------------------------------------------------


def _cs(event: str, **fields: object) -> Event | None:
    body = {"deviceInfo": CS_DEVICE, "time": "2026-03-12T06:10:30Z", **fields}
    return parse_event(
        "chirpstack", f"application/a1/device/{EUI}/event/{event}", json.dumps(body).encode()
    )


def test_chirpstack_events() -> None:
    assert _cs("txack", queueItemId="q", fCntDown=7) == Event("sent", "chirpstack", dev_eui=EUI)
    assert _cs("ack", queueItemId="q", acknowledged=True) == Event("ack", "chirpstack", dev_eui=EUI)
    nack = _cs("ack", queueItemId="q", acknowledged=False)
    assert nack is not None
    assert nack.kind == "nack"
    omitted = _cs("ack", queueItemId="q")  # before 4.1 a false value was left out
    assert omitted is not None
    assert omitted.kind == "nack"
    failed = _cs("log", level="ERROR", code="DOWNLINK_PAYLOAD_SIZE", description="too big")
    assert failed == Event(
        "failed", "chirpstack", dev_eui=EUI, reason="DOWNLINK_PAYLOAD_SIZE: too big"
    )
    joined = _cs("join", devAddr="01020304")
    assert joined is not None
    assert joined.kind == "ignored"
    assert parse_event("chirpstack", f"application/a1/device/{EUI}/event/up", b"{}") is None


def _tts(kind: str, body: Mapping[str, object]) -> Event | None:
    ids = {"device_id": "lobby", "dev_eui": EUI.upper()}
    doc = {"end_device_ids": ids, **body}
    return parse_event("tts", f"v3/app@ttn/devices/lobby/down/{kind}", json.dumps(doc).encode())


@pytest.mark.parametrize("kind", ["queued", "sent", "ack", "nack"])
def test_tts_events_name_our_command(kind: str) -> None:
    body = {
        "correlation_ids": ["as:downlink:01H", CORRELATION_PREFIX + "abc123"],
        f"downlink_{kind}": {"f_port": 85, "frm_payload": "/wOwBA=="},
    }
    event = _tts(kind, body)
    assert event is not None
    assert (event.kind, event.dev_eui, event.device_id, event.command_id) == (
        kind,
        EUI,
        "lobby",
        "abc123",
    )


def test_tts_failed_event_gives_the_reason() -> None:
    body = {
        "downlink_failed": {
            "downlink": {"f_port": 85, "correlation_ids": [CORRELATION_PREFIX + "x9"]},
            "error": {"namespace": "pkg/networkserver", "message_format": "device not found"},
        }
    }
    event = _tts("failed", body)
    assert event == Event(
        "failed", "tts", dev_eui=EUI, device_id="lobby", command_id="x9", reason="device not found"
    )


def test_milesight_ack_and_error_notifications() -> None:
    ack = {
        "acknowledged": True,
        "applicationID": 1,
        "devEUI": EUI,
        "deviceID": 22,
        "fcnt": 4996,
        "time": "2026-03-12T06:10:30Z",
    }
    assert parse_event("milesight", "/ack", json.dumps(ack).encode()) == Event(
        "ack", "milesight", dev_eui=EUI
    )
    error = {"devEUI": EUI, "error": "downlink error,device offline", "deviceID": 22}
    event = parse_event("milesight", "/err", json.dumps(error).encode())
    assert event is not None
    assert (event.kind, event.reason) == (
        "failed",
        "downlink error,device offline",
    )
    uplink = (NS / "milesight-support-uplink.json").read_bytes()
    assert parse_event("milesight", "/mqtttest", uplink) is None


def test_unreadable_event_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="no device EUI"):
        parse_event(
            "chirpstack", f"application/a1/device/{EUI}/event/ack", b'{"acknowledged":true}'
        )
    with pytest.raises(EnvelopeError, match="not JSON"):
        parse_event("tts", "v3/a/devices/d/down/ack", b"{oops")
