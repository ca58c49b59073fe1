"""Network-server envelopes: realistic uplinks from each server, every class of bad input, and
downlinks built and read back."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelopes import (
    ENVELOPES,
    MAX_BODY_BYTES,
    TopicPattern,
    Uplink,
    downlink_message,
    normalise_dev_eui,
    parse_chirpstack,
    parse_envelope,
    parse_milesight,
    parse_raw,
    parse_rfc3339,
    parse_tts,
)
from gateway.errors import ConfigError, EncodeError, EnvelopeError

EUI = "24e124538b223213"
PAYLOAD = bytes.fromhex("04c9030800a106cd05")  # people count 3, occupancy, max 5
PAYLOAD_B64 = base64.b64encode(PAYLOAD).decode()
T0 = 1712634600  # 2024-04-09T03:50:00Z
DECODED: Final[dict[str, object]] = {
    "people_count_all": 3,
    "region_count": 8,
    "region_1": 1,
    "people_count_max": 5,
}

CS_APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
CS_TOPIC = f"application/{CS_APP}/device/{EUI}/event/up"
CHIRPSTACK_UP: Final[dict[str, Any]] = {
    "deduplicationId": "5f0e0b8c-3d9a-4a57-9a0e-2f0b6c1d7e42",
    "time": "2024-04-09T03:50:00.123456789+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "Facilities",
        "applicationId": CS_APP,
        "applicationName": "people-counting",
        "deviceProfileId": "0b4dc5e1-7a35-4c8e-9d0e-96e3f1b8a2c4",
        "deviceProfileName": "Milesight VS121",
        "deviceName": "lobby-vs121",
        "devEui": EUI,
        "tags": {"floor": "1"},
    },
    "devAddr": "01a2b3c4",
    "adr": True,
    "dr": 5,
    "fCnt": 1234,
    "fPort": 85,
    "confirmed": False,
    "data": PAYLOAD_B64,
    "object": DECODED,
    "rxInfo": [
        {
            "gatewayId": "24e124fffef4a1b2",
            "uplinkId": 51234,
            "rssi": -57,
            "snr": 9.5,
            "channel": 2,
            "context": "AAAAAA==",
            "metadata": {"region_config_id": "eu868"},
            "crcStatus": "CRC_OK",
        }
    ],
    "txInfo": {
        "frequency": 868500000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}},
    },
}

TTS_TOPIC = "v3/people-counting@ttn/devices/lobby-vs121/up"
TTS_UP: Final[dict[str, Any]] = {
    "end_device_ids": {
        "device_id": "lobby-vs121",
        "application_ids": {"application_id": "people-counting"},
        "dev_eui": EUI.upper(),
        "join_eui": "24E124C0002A0001",
        "dev_addr": "260B4C1D",
    },
    "correlation_ids": [
        "as:up:01HV3X8K2M9Q4R7T1W5Y6Z0ABC",
        "gs:conn:01HV2QW7Y1R5T8M3N6P9S0V4XA",
        "gs:uplink:01HV3X8K1F2G3H4J5K6M7N8P9Q",
        "ns:uplink:01HV3X8K2J7N3P6S0V4X5Y9ZQD",
        "rpc:/ttn.lorawan.v3.NsAs/HandleUplink:01HV3X8K2KQ1W2E3R4T5Y6U7I8",
    ],
    "received_at": "2024-04-09T03:50:00.123456789Z",
    "uplink_message": {
        "session_key_id": "AY7Zr9x3b0Q5mWn2cKpLhA==",
        "f_port": 85,
        "f_cnt": 1234,
        "frm_payload": PAYLOAD_B64,
        "decoded_payload": DECODED,
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "lobby-gw", "eui": "24E124FFFEF4A1B2"},
                "rssi": -57,
                "channel_rssi": -57,
                "snr": 9.5,
                "received_at": "2024-04-09T03:50:00.098765432Z",
            }
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
            "frequency": "868500000",
        },
        "received_at": "2024-04-09T03:50:00.101Z",
        "consumed_airtime": "0.061696s",
        "network_ids": {"net_id": "000013", "tenant_id": "ttn", "cluster_id": "eu1"},
    },
}

MS_TOPIC = "site/lobby-gw/uplink"  # user-set in the gateway
MILESIGHT_UP: Final[dict[str, Any]] = {
    "applicationID": "1",
    "applicationName": "people-counting",
    "deviceName": "lobby-vs121",
    "devEUI": EUI,
    "time": "2024-04-09T11:50:00.123456+08:00",
    "fCnt": 1234,
    "fPort": 85,
    "data": PAYLOAD_B64,
    "rssi": -57,
    "loRaSNR": 9.5,
    "frequency": 868500000,
    "dataRate": "SF7BW125",
    "adr": True,
    "confirmed": False,
    "gatewayID": "24e124fffef4a1b2",
}

# kind -> (topic, sample, paths of: devEUI, fPort, fCnt, data, time)
SAMPLES: Final[dict[str, tuple[str, dict[str, Any], tuple[str, str, str, str, str]]]] = {
    "chirpstack": (CS_TOPIC, CHIRPSTACK_UP, ("deviceInfo.devEui", "fPort", "fCnt", "data", "time")),
    "tts": (
        TTS_TOPIC,
        TTS_UP,
        (
            "end_device_ids.dev_eui",
            "uplink_message.f_port",
            "uplink_message.f_cnt",
            "uplink_message.frm_payload",
            "received_at",
        ),
    ),
    "milesight": (MS_TOPIC, MILESIGHT_UP, ("devEUI", "fPort", "fCnt", "data", "time")),
}
JSON_KINDS = list(SAMPLES)

_DELETE: Final = object()


def edited(doc: dict[str, Any], path: str, value: object) -> bytes:
    """The sample as JSON bytes with the dotted `path` set to `value` (or removed)."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return json.dumps(doc).encode()


def parse_sample(kind: str, path: str | None = None, value: object = None) -> Uplink:
    topic, sample, _ = SAMPLES[kind]
    body = edited(sample, path, value) if path else json.dumps(sample).encode()
    return parse_envelope(kind, topic, body)


def field_path(kind: str, index: int) -> str:
    return SAMPLES[kind][2][index]


def error_of(kind: str, path: str, value: object, doc: dict[str, Any] | None = None) -> str:
    """The one-line EnvelopeError message for the sample (or `doc`) with `path` set to `value`."""
    topic, sample, _ = SAMPLES[kind]
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(kind, topic, edited(sample if doc is None else doc, path, value))
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the three servers' samples ----------------------------------------------------------


def test_chirpstack_sample() -> None:
    uplink = parse_chirpstack(CS_TOPIC, json.dumps(CHIRPSTACK_UP).encode())

    assert uplink == Uplink(
        dev_eui=EUI,
        fport=85,
        fcnt=1234,
        dedup_id="5f0e0b8c-3d9a-4a57-9a0e-2f0b6c1d7e42",
        received_at=uplink.received_at,
        payload=PAYLOAD,
        decoded=DECODED,
        source="chirpstack",
        application_id=CS_APP,
        tenant_id="52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        meta={"gateway_count": 1.0, "rssi": -57.0, "snr": 9.5, "spreading_factor": 7.0},
    )
    assert uplink.received_at == pytest.approx(T0 + 0.123456789, abs=1e-6)


def test_tts_sample() -> None:
    uplink = parse_tts(TTS_TOPIC, json.dumps(TTS_UP).encode())

    assert uplink == Uplink(
        dev_eui=EUI,
        fport=85,
        fcnt=1234,
        dedup_id="AY7Zr9x3b0Q5mWn2cKpLhA==:1234",
        received_at=uplink.received_at,
        payload=PAYLOAD,
        decoded=DECODED,
        source="tts",
        application_id="people-counting",
        tenant_id="ttn",
        device_id="lobby-vs121",
        meta={"gateway_count": 1.0, "rssi": -57.0, "snr": 9.5, "spreading_factor": 7.0},
    )
    assert uplink.received_at == pytest.approx(T0 + 0.123456789, abs=1e-6)


def test_milesight_sample() -> None:
    uplink = parse_milesight(MS_TOPIC, json.dumps(MILESIGHT_UP).encode())

    assert uplink == Uplink(
        dev_eui=EUI,
        fport=85,
        fcnt=1234,
        dedup_id=None,
        received_at=uplink.received_at,
        payload=PAYLOAD,
        decoded=None,
        source="milesight",
    )
    assert uplink.received_at == pytest.approx(T0 + 0.123456, abs=1e-6)


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_only_the_device_eui_is_required(kind: str) -> None:
    topic, _, (eui_path, *_) = SAMPLES[kind]
    *parents, last = eui_path.split(".")
    doc: dict[str, Any] = {last: EUI.upper()}
    for key in reversed(parents):
        doc = {key: doc}
    if kind == "tts":
        doc["uplink_message"] = {}

    uplink = parse_envelope(kind, topic, json.dumps(doc).encode())

    assert (uplink.dev_eui, uplink.source) == (EUI, kind)
    assert (uplink.fport, uplink.fcnt, uplink.payload, uplink.decoded) == (None, None, None, None)
    assert uplink.received_at is None


@pytest.mark.parametrize(
    ("kind", "data_path", "decoded_path"),
    [
        ("chirpstack", "data", "object"),
        ("tts", "uplink_message.frm_payload", "uplink_message.decoded_payload"),
    ],
)
def test_pre_decoded_object_when_raw_bytes_are_absent(
    kind: str, data_path: str, decoded_path: str
) -> None:
    uplink = parse_sample(kind, data_path, _DELETE)

    assert uplink.payload is None
    assert uplink.decoded == DECODED


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_null_fields_read_as_absent(kind: str) -> None:
    assert parse_sample(kind, field_path(kind, 1), None).fport is None
    assert parse_sample(kind, field_path(kind, 3), None).payload is None


# --- topics ------------------------------------------------------------------------------


def test_chirpstack_topic_eui_in_any_case_matches() -> None:
    topic = CS_TOPIC.replace(EUI, EUI.upper())
    assert parse_chirpstack(topic, json.dumps(CHIRPSTACK_UP).encode()).dev_eui == EUI


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (CS_TOPIC.replace(EUI, "0101010101010101"), r"topic names device '0101010101010101'"),
        (CS_TOPIC.replace(EUI, "not-an-eui"), r"topic names device 'not-an-eui'"),
        (CS_TOPIC.replace(CS_APP, "other-app"), r"topic names application 'other-app'"),
        (CS_TOPIC.replace("event/up", "event/join"), r"topic is a 'join' event, not an uplink"),
    ],
)
def test_chirpstack_topic_must_agree_with_body(topic: str, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=rf"^chirpstack uplink from {EUI}: {reason}"):
        parse_chirpstack(topic, json.dumps(CHIRPSTACK_UP).encode())


def test_chirpstack_custom_topic_uses_the_body() -> None:
    uplink = parse_chirpstack("site/lobby/cs-up", json.dumps(CHIRPSTACK_UP).encode())
    assert (uplink.dev_eui, uplink.application_id) == (EUI, CS_APP)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (TTS_TOPIC.replace("lobby-vs121", "stairs"), r"topic names device 'stairs'"),
        (TTS_TOPIC.replace("people-counting", "other"), r"topic names application 'other'"),
        (TTS_TOPIC.replace("/up", "/down/queued"), r"topic is a 'down/queued' event"),
    ],
)
def test_tts_topic_must_agree_with_body(topic: str, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=rf"^tts uplink from {EUI}: {reason}"):
        parse_tts(topic, json.dumps(TTS_UP).encode())


def test_tts_single_tenant_topic_has_no_tenant() -> None:
    uplink = parse_tts("v3/people-counting/devices/lobby-vs121/up", json.dumps(TTS_UP).encode())
    assert (uplink.application_id, uplink.tenant_id, uplink.device_id) == (
        "people-counting",
        None,
        "lobby-vs121",
    )


def test_tts_custom_topic_uses_the_body() -> None:
    uplink = parse_tts("bridge/tts/lobby", json.dumps(TTS_UP).encode())
    assert (uplink.dev_eui, uplink.application_id, uplink.device_id, uplink.tenant_id) == (
        EUI,
        "people-counting",
        "lobby-vs121",
        None,
    )


def test_tts_device_id_comes_from_the_topic_when_the_body_lacks_it() -> None:
    body = edited(TTS_UP, "end_device_ids.device_id", _DELETE)
    assert parse_tts(TTS_TOPIC, body).device_id == "lobby-vs121"


# --- TTS specifics -----------------------------------------------------------------------


def test_tts_dedup_falls_back_to_the_network_server_correlation_id() -> None:
    uplink = parse_sample("tts", "uplink_message.session_key_id", _DELETE)
    assert uplink.dedup_id == "ns:uplink:01HV3X8K2J7N3P6S0V4X5Y9ZQD"


def test_tts_dedup_is_none_without_either_id() -> None:
    doc = copy.deepcopy(TTS_UP)
    del doc["uplink_message"]["session_key_id"]
    doc["correlation_ids"] = ["as:up:01HV3X8K2M9Q4R7T1W5Y6Z0ABC"]
    assert parse_tts(TTS_TOPIC, json.dumps(doc).encode()).dedup_id is None


def test_tts_received_at_falls_back_to_the_network_server_time() -> None:
    uplink = parse_sample("tts", "received_at", _DELETE)
    assert uplink.received_at == pytest.approx(T0 + 0.101, abs=1e-6)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("uplink_message", _DELETE, "uplink_message is missing"),
        ("uplink_message", [], "uplink_message must be an object, got array"),
        ("correlation_ids", "ns:uplink:x", "correlation_ids must be an array of strings"),
    ],
)
def test_tts_structure_errors(path: str, value: object, reason: str) -> None:
    doc = copy.deepcopy(TTS_UP)
    del doc["uplink_message"]["session_key_id"]  # so correlation_ids are read
    assert reason in error_of("tts", path, value, doc)


# --- bad input, every kind ----------------------------------------------------------------


@pytest.mark.parametrize("kind", [*JSON_KINDS, "raw"])
def test_oversized_body_is_refused_before_parsing(kind: str) -> None:
    # Not valid JSON, hex or base64: only the size check can produce this message.
    body = b"\xff" * (MAX_BODY_BYTES + 1)
    with pytest.raises(EnvelopeError, match=rf"body is {MAX_BODY_BYTES + 1} bytes, over the"):
        parse_envelope(kind, f"up/{EUI}", body)


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_size_limit_is_a_parameter_and_inclusive(kind: str) -> None:
    topic, sample, _ = SAMPLES[kind]
    body = json.dumps(sample).encode()
    assert parse_envelope(kind, topic, body, max_bytes=len(body)).dev_eui == EUI
    with pytest.raises(EnvelopeError, match="over the"):
        parse_envelope(kind, topic, body, max_bytes=len(body) - 1)


@pytest.mark.parametrize("kind", JSON_KINDS)
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", r"body is not JSON"),
        (b'{"devEUI": ', r"body is not JSON"),
        (b'{"a": "\xff"}', r"body is not JSON"),
        (b'{"fPort": NaN}', r"body is not JSON \(NaN is not valid JSON\)"),
        (b"[" * 30_000 + b"]" * 30_000, r"body is not JSON"),
        (b'{"fCnt": 1' + b"0" * 5000 + b"}", r"body is not JSON"),
        (b"[1, 2]", r"body must be a JSON object, got array"),
        (b'"text"', r"body must be a JSON object, got string"),
        (b"null", r"body must be a JSON object, got null"),
    ],
    ids=["empty", "cut", "bad-utf8", "nan", "deep", "huge-int", "array", "string", "null"],
)
def test_body_that_is_not_a_json_object(kind: str, body: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=rf"^{kind} uplink: {reason}") as caught:
        parse_envelope(kind, SAMPLES[kind][0], body)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kind", JSON_KINDS)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_DELETE, "is missing"),
        (None, "is missing"),
        (2400124538, "must be a string, got number"),
        ("24e124538b2232", "'24e124538b2232' is not a 16-hex-digit EUI"),
        ("24e124538b22321g", "is not a 16-hex-digit EUI"),
        ("", "is not a 16-hex-digit EUI"),
    ],
)
def test_bad_device_eui(kind: str, value: object, reason: str) -> None:
    path = field_path(kind, 0)
    message = error_of(kind, path, value)
    assert message.startswith(f"{kind} uplink: {path} "), message
    assert reason in message


@pytest.mark.parametrize("kind", JSON_KINDS)
@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (1, "85", "must be an integer, got string '85'"),
        (1, 85.0, "must be an integer, got number 85.0"),
        (1, True, "must be an integer, got boolean True"),
        (1, 256, "must be in 0..255, got 256"),
        (1, -1, "must be in 0..255, got -1"),
        (2, "1234", "must be an integer, got string '1234'"),
        (2, -1, "must be in 0..4294967295, got -1"),
        (2, 2**32, "must be in 0..4294967295"),
        (3, "BMkD*AChBs0F", "is not valid base64"),
        (3, "BMkDCAChBs0", "is not valid base64"),
        (3, "BMkDCAChBs0F€", "is not valid base64"),
        (3, 12, "must be a string, got number"),
        (4, "2024-04-09 03:50:00", "is not an RFC 3339 time"),
        (4, "2024-04-09T03:50:00", "is not an RFC 3339 time"),
        (4, "2024-02-30T03:50:00Z", "is not a valid time"),
        (4, "2024-04-09T03:50:00+24:00", "has an invalid UTC offset"),
        (4, "yesterday", "is not an RFC 3339 time"),
        (4, 1712634600, "must be a string, got number"),
    ],
)
def test_bad_field_names_device_and_field(
    kind: str, index: int, value: object, reason: str
) -> None:
    path = field_path(kind, index)
    message = error_of(kind, path, value)
    assert message.startswith(f"{kind} uplink from {EUI}: {path} "), message
    assert reason in message


@pytest.mark.parametrize(
    ("kind", "path", "value", "reason"),
    [
        ("chirpstack", "deviceInfo", "x", "deviceInfo must be an object, got string"),
        ("chirpstack", "object", [1], "object must be an object, got array"),
        ("chirpstack", "deduplicationId", 7, "deduplicationId must be a string"),
        ("tts", "end_device_ids", [], "end_device_ids must be an object, got array"),
        ("tts", "uplink_message.decoded_payload", "3", "decoded_payload must be an object"),
        ("tts", "uplink_message.session_key_id", 1, "session_key_id must be a string"),
    ],
)
def test_bad_structure(kind: str, path: str, value: object, reason: str) -> None:
    assert reason in error_of(kind, path, value)


@pytest.mark.parametrize("kind", JSON_KINDS)
@settings(max_examples=200, deadline=None)
@given(
    field=st.integers(0, 4),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=5,
    ),
)
def test_any_field_value_gives_an_uplink_or_an_envelope_error(
    kind: str, field: int, value: object
) -> None:
    outcome: Uplink | str
    try:
        outcome = parse_sample(kind, field_path(kind, field), value)
    except EnvelopeError as exc:
        outcome = str(exc)
    if isinstance(outcome, str):
        assert outcome.startswith(f"{kind} uplink")
        assert "\n" not in outcome
    else:
        assert outcome.dev_eui == EUI


@pytest.mark.parametrize("kind", JSON_KINDS)
@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300))
def test_any_bytes_give_an_envelope_error_not_a_crash(kind: str, body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(kind, SAMPLES[kind][0], body)


# --- raw ---------------------------------------------------------------------------------

RAW_PATTERN = "vs121/{dev_eui}/up"


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (PAYLOAD.hex().encode(), "auto"),
        (PAYLOAD.hex().upper().encode(), "auto"),
        (b" 04 c9 03 08 00 a1 06 cd 05\n", "auto"),
        (PAYLOAD_B64.encode(), "auto"),
        (PAYLOAD.hex().encode(), "hex"),
        (PAYLOAD_B64.encode() + b"\r\n", "base64"),
        (PAYLOAD, "binary"),
    ],
)
def test_raw_payload_encodings(body: bytes, encoding: Any) -> None:
    uplink = parse_raw(f"vs121/{EUI}/up", body, topic_pattern=RAW_PATTERN, encoding=encoding)
    assert uplink == Uplink(
        dev_eui=EUI,
        fport=None,
        fcnt=None,
        dedup_id=None,
        received_at=None,
        payload=PAYLOAD,
        decoded=None,
        source="raw",
    )


def test_raw_auto_reads_hex_looking_text_as_hex_and_base64_can_be_forced() -> None:
    topic = f"vs121/{EUI}/up"
    assert parse_raw(topic, b"AAAA").payload == b"\xaa\xaa"
    assert parse_raw(topic, b"AAAA", encoding="base64").payload == b"\x00\x00\x00"


@pytest.mark.parametrize(
    ("body", "encoding", "reason"),
    [
        (b"", "auto", "body is empty"),
        (b" \n", "auto", "body is empty"),
        (b"", "binary", "body is empty"),
        (PAYLOAD, "auto", "body is not ASCII text"),
        (b"04c9*3", "auto", "body is not valid hex or base64"),
        (b"04c", "hex", "body is not valid hex"),
        (b"zz", "hex", "body is not valid hex"),
        (b"BMkDCAChBs0", "base64", "body is not valid base64"),
    ],
)
def test_raw_bad_bodies(body: bytes, encoding: Any, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=rf"^raw uplink from {EUI}: {reason}"):
        parse_raw(f"vs121/{EUI}/up", body, topic_pattern=RAW_PATTERN, encoding=encoding)


@pytest.mark.parametrize(
    ("topic", "pattern", "expected"),
    [
        (f"vs121/{EUI.upper()}/up", RAW_PATTERN, EUI),
        ("vs121/24-E1-24-53-8B-22-32-13/up", RAW_PATTERN, EUI),
        (f"site/a/{EUI}", "site/+/{dev_eui}", EUI),
        (f"site/{EUI}/data/raw", "site/{dev_eui}/#", EUI),
        (f"site/{EUI}", "site/{dev_eui}/#", EUI),
        (f"gw/up/{EUI}/lobby", None, EUI),
    ],
)
def test_raw_device_eui_from_topic(topic: str, pattern: str | None, expected: str) -> None:
    uplink = parse_envelope("raw", topic, b"04c9", raw_topic_pattern=pattern)
    assert uplink.dev_eui == expected


@pytest.mark.parametrize(
    ("topic", "pattern", "reason"),
    [
        (f"other/{EUI}/up", RAW_PATTERN, r"does not match 'vs121/\{dev_eui\}/up'"),
        (f"vs121/{EUI}/up/extra", RAW_PATTERN, "does not match"),
        (f"vs121/{EUI}", RAW_PATTERN, "does not match"),
        ("vs121/lobby/up", RAW_PATTERN, r"\{dev_eui\} 'lobby' is not a 16-hex"),
        ("vs121/lobby/up", None, "has no device EUI level; set a raw topic pattern"),
        (f"gw/24e124fffef4a1b2/{EUI}", None, "has more than one device EUI level"),
    ],
)
def test_raw_topic_errors(topic: str, pattern: str | None, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=rf"^raw uplink: topic .*{reason}"):
        parse_envelope("raw", topic, b"04c9", raw_topic_pattern=pattern)


def test_raw_topic_with_the_same_eui_twice_is_not_ambiguous() -> None:
    assert parse_raw(f"{EUI}/{EUI.upper()}", b"04c9").dev_eui == EUI


@pytest.mark.parametrize(
    "pattern",
    ["vs121/up", "{dev_eui}/{dev_eui}", "a/#/{dev_eui}", "a/x{dev_eui}", "a/b+/{dev_eui}"],
)
def test_bad_topic_patterns_are_config_errors(pattern: str) -> None:
    with pytest.raises(ConfigError, match="raw topic pattern"):
        TopicPattern(pattern)


def test_topic_pattern_gives_its_subscription_filter() -> None:
    assert TopicPattern("site/+/{dev_eui}/#").subscription == "site/+/+/#"


# --- registry ----------------------------------------------------------------------------


def test_registry_has_every_kind() -> None:
    assert set(ENVELOPES) == {"chirpstack", "tts", "milesight", "raw"}


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_parse_envelope_dispatches_by_kind(kind: str) -> None:
    topic, sample, _ = SAMPLES[kind]
    uplink = ENVELOPES[kind](topic, json.dumps(sample).encode())
    assert uplink == parse_envelope(kind, topic, json.dumps(sample).encode())
    assert uplink.source == kind


def test_wrong_kind_for_a_message_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="milesight uplink: devEUI is missing"):
        parse_envelope("milesight", CS_TOPIC, json.dumps(CHIRPSTACK_UP).encode())


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown envelope kind 'loriot'; expected one of"):
        parse_envelope("loriot", "t", b"{}")


# --- shared value parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [EUI, EUI.upper(), "24-E1-24-53-8B-22-32-13", "24:e1:24:53:8b:22:32:13", "24e1 2453 8b22 3213"],
)
def test_normalise_dev_eui(text: str) -> None:
    assert normalise_dev_eui(text) == EUI


@pytest.mark.parametrize("text", ["", "24e124538b22321", "24e124538b2232130", "0x24e124538b2232"])
def test_normalise_dev_eui_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a 16-hex-digit EUI"):
        normalise_dev_eui(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-04-09T03:50:00Z", T0),
        ("2024-04-09t03:50:00z", T0),
        ("2024-04-09 03:50:00Z", T0),
        ("2024-04-09T03:50:00.5Z", T0 + 0.5),
        ("2024-04-09T03:50:00.123456789Z", T0 + 0.123456789),
        ("2024-04-09T05:50:00+02:00", T0),
        ("2024-04-08T22:20:00-05:30", T0),
        ("2016-12-31T23:59:60Z", 1483228800),  # leap second
    ],
)
def test_parse_rfc3339(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)


# --- downlinks ---------------------------------------------------------------------------


def test_chirpstack_downlink_round_trip() -> None:
    topic, body = downlink_message(
        "chirpstack", EUI.upper(), 85, bytes.fromhex("ff51ff"), app=CS_APP, confirmed=True
    )

    assert topic == f"application/{CS_APP}/device/{EUI}/command/down"
    assert json.loads(body) == {"devEui": EUI, "confirmed": True, "fPort": 85, "data": "/1H/"}
    assert base64.b64decode(json.loads(body)["data"]) == bytes.fromhex("ff51ff")


def test_tts_downlink_round_trip_from_an_uplink() -> None:
    uplink = parse_tts(TTS_TOPIC, json.dumps(TTS_UP).encode())

    topic, body = downlink_message(
        "tts",
        uplink.dev_eui,
        85,
        bytes.fromhex("ff51ff"),
        app=uplink.application_id,
        tenant=uplink.tenant_id,
        device_id=uplink.device_id,
    )

    assert topic == "v3/people-counting@ttn/devices/lobby-vs121/down/push"
    [downlink] = json.loads(body)["downlinks"]
    assert downlink == {
        "f_port": 85,
        "frm_payload": "/1H/",
        "priority": "NORMAL",
        "confirmed": False,
    }


def test_tts_downlink_single_tenant_topic() -> None:
    topic, _ = downlink_message("tts", EUI, 85, b"\x01", app="people", device_id="lobby")
    assert topic == "v3/people/devices/lobby/down/push"


def test_milesight_downlink_round_trip() -> None:
    topic, body = downlink_message(
        "milesight", EUI, 85, bytes.fromhex("ff51ff"), topic_template="site/down/{dev_eui}"
    )

    assert topic == f"site/down/{EUI}"
    fields = json.loads(body)
    assert fields == {"devEUI": EUI, "fPort": 85, "data": "/1H/", "confirmed": False}
    # The Milesight uplink parser reads the same field names back.
    echoed = parse_milesight(topic, body)
    assert (echoed.dev_eui, echoed.fport, echoed.payload) == (EUI, 85, bytes.fromhex("ff51ff"))


def test_topic_template_overrides_the_default() -> None:
    topic, _ = downlink_message(
        "chirpstack", EUI, 85, b"\x01", app="a1", topic_template="cs/{app}/{dev_eui}/down"
    )
    assert topic == f"cs/a1/{EUI}/down"


@pytest.mark.parametrize(
    ("kind", "args", "options", "reason"),
    [
        ("chirpstack", ("bad-eui", 85), {"app": "a"}, "dev_eui 'bad-eui' is not a 16-hex"),
        ("chirpstack", (EUI, 0), {"app": "a"}, "fport must be an integer 1..223, got 0"),
        ("chirpstack", (EUI, 224), {"app": "a"}, "fport must be an integer 1..223, got 224"),
        ("chirpstack", (EUI, True), {"app": "a"}, "fport must be an integer 1..223, got True"),
        ("chirpstack", (EUI, 85), {}, "app is required by topic"),
        ("chirpstack", (EUI, 85), {"app": "a/b"}, "app 'a/b' cannot be an MQTT topic level"),
        ("chirpstack", (EUI, 85), {"app": "#"}, "app '#' cannot be an MQTT topic level"),
        ("tts", (EUI, 85), {"app": "a", "tenant": "ttn"}, "device_id is required by topic"),
        ("milesight", (EUI, 85), {}, "needs topic_template"),
        ("milesight", (EUI, 85), {"topic_template": "d/{eui}"}, "uses unknown eui"),
        ("milesight", (EUI, 85), {"topic_template": "d/{dev_eui"}, "is malformed"),
        ("milesight", (EUI, 85), {"topic_template": "d/+/x"}, "not a topic one can publish"),
        ("raw", (EUI, 85), {}, "no downlink format for envelope kind 'raw'"),
    ],
)
def test_downlink_errors(
    kind: str, args: tuple[Any, int], options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(EncodeError, match=re.escape(reason)) as caught:
        downlink_message(kind, *args, b"\x01", **options)
    assert "\n" not in str(caught.value)
