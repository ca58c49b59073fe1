"""Unwrap network-server MQTT messages into one `Uplink` shape, and build their downlinks.

Kinds: "chirpstack" (ChirpStack v4), "tts" (The Things Stack v3 / TTN), "milesight" (the
Milesight gateway's built-in network server) and "raw" (the payload alone, as hex or base64
text, with the device EUI taken from the topic).

Rules every parser follows:
- A body over `max_bytes` is refused before it is decoded, so a flood of huge messages costs
  nothing but a length check.
- A field that is absent or JSON null becomes None. A field that is present but malformed (wrong
  type, out of range, bad base64, unreadable time) is an error rather than being dropped: an fPort
  sent as the string "85" means the message is not what we think it is.
- Every EnvelopeError is one line naming the kind, the device when known, and the field.
"""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final, Literal, NoReturn, Protocol

from gateway.errors import ConfigError, EncodeError, EnvelopeError

__all__ = [
    "DEV_EUI_LEVEL",
    "ENVELOPES",
    "MAX_BODY_BYTES",
    "MILESIGHT_EUI_WILDCARD",
    "EnvelopeParser",
    "RawEncoding",
    "TopicPattern",
    "Uplink",
    "downlink_message",
    "normalise_dev_eui",
    "parse_chirpstack",
    "parse_envelope",
    "parse_milesight",
    "parse_raw",
    "parse_rfc3339",
    "parse_tts",
]

MAX_BODY_BYTES: Final = 64 * 1024
"""Default body size limit; VS121 envelopes are a few kilobytes at most."""

_FCNT_MAX: Final = 0xFFFF_FFFF
_DOWNLINK_FPORTS: Final = range(1, 224)  # 0 carries MAC commands, 224 and up are reserved


@dataclass(frozen=True, slots=True, kw_only=True)
class Uplink:
    """One uplink as the gateway sees it, whichever network server delivered it.

    `payload` is the raw application payload; `decoded` is the server's own decoding of it and is
    meant to be used only when `payload` is None. The last three fields are the server's own
    names for the device, kept because downlinks are addressed by them (a TTS device id is not
    its EUI); they are None where the server does not give them.
    """

    dev_eui: str
    fport: int | None
    fcnt: int | None
    dedup_id: str | None
    received_at: float | None
    payload: bytes | None
    decoded: dict[str, object] | None
    source: str
    application_id: str | None = None
    tenant_id: str | None = None
    device_id: str | None = None
    # Radio link and device facts the network server reports beside the payload (see
    # `_lora_meta`): rssi, snr, spreading_factor, gateway_count (numbers), lorawan_class (text).
    meta: Mapping[str, float | str] | None = None


class EnvelopeParser(Protocol):
    """What every entry of `ENVELOPES` is: (topic, body) -> Uplink, or EnvelopeError."""

    def __call__(self, topic: str, body: bytes, /, *, max_bytes: int = ...) -> Uplink: ...


# --- shared value parsing -------------------------------------------------------------------

_EUI_SEPARATORS: Final = str.maketrans("", "", "-: ")
_EUI_RE: Final = re.compile(r"[0-9a-f]{16}")


def normalise_dev_eui(text: str) -> str:
    """Return the EUI as 16 lowercase hex digits; accepts any case and '-', ':' or ' ' separators.

    Raises ValueError (not EnvelopeError) so configuration validators can use it too.
    """
    eui = text.translate(_EUI_SEPARATORS).lower()
    if _EUI_RE.fullmatch(eui) is None:
        raise ValueError(f"{_show(text)} is not a 16-hex-digit EUI")
    return eui


# [0-9] rather than \d: \d also matches non-ASCII digits, which int() would then accept.
_RFC3339_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_rfc3339(text: str) -> float:
    """Unix seconds from an RFC 3339 time such as "2024-04-09T03:50:00.123456789Z".

    Not datetime.fromisoformat: it drops digits past microseconds, and it reads a time without
    an offset as naive local time where RFC 3339 requires one. Raises ValueError.
    """
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{_show(text)} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10)
    # RFC 3339 allows a leap second (:60) that datetime refuses; count it as the next second.
    leap = 0
    if second == 60:
        second, leap = 59, 1
    try:
        whole = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{_show(text)} is not a valid time ({exc})") from exc
    offset = 0
    if sign is not None:
        hours, minutes = int(offset_hours), int(offset_minutes)
        if hours > 23 or minutes > 59:
            raise ValueError(f"{_show(text)} has an invalid UTC offset")
        offset = (hours * 3600 + minutes * 60) * (1 if sign == "+" else -1)
    return int(whole.timestamp()) + leap - offset + (float(fraction) if fraction else 0.0)


def _show(value: object, limit: int = 60) -> str:
    """A short one-line rendering of a received value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_size(kind: str, body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise EnvelopeError(
            f"{kind} uplink: body is {len(body)} bytes, over the {max_bytes}-byte limit"
        )


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _load_object(kind: str, body: bytes, max_bytes: int) -> dict[str, object]:
    _check_size(kind, body, max_bytes)
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    # ValueError covers bad JSON, bad UTF-8 and over-long integers; RecursionError deep nesting.
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"{kind} uplink: body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise EnvelopeError(f"{kind} uplink: body must be a JSON object, got {_json_type(doc)}")
    return doc


class _Fields:
    """Typed access to one decoded JSON body; every failure names the message and the field."""

    def __init__(self, kind: str, doc: dict[str, object]) -> None:
        self._doc = doc
        self.where = f"{kind} uplink"

    @property
    def raw(self) -> dict[str, object]:
        return self._doc

    def fail(self, field: str, reason: str) -> NoReturn:
        raise EnvelopeError(f"{self.where}: {field} {reason}")

    def get(self, path: str) -> object:
        """The value at a dotted path; None when any level of it is absent or null."""
        node: object = self._doc
        keys = path.split(".")
        for depth, key in enumerate(keys):
            if node is None:
                return None
            if not isinstance(node, dict):
                parent = ".".join(keys[:depth])
                self.fail(parent, f"must be an object, got {_json_type(node)}")
            node = node.get(key)
        return node

    def dev_eui(self, path: str) -> str:
        """The required device EUI; later errors from this message name the device."""
        value = self.get(path)
        if value is None:
            self.fail(path, "is missing")
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_json_type(value)}")
        try:
            eui = normalise_dev_eui(value)
        except ValueError as exc:
            self.fail(path, str(exc))
        self.where += f" from {eui}"
        return eui

    def integer(self, path: str, low: int, high: int) -> int | None:
        value = self.get(path)
        if value is None:
            return None
        # bool is an int subclass in Python, but `true` is no port number.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {_json_type(value)} {_show(value)}")
        if not low <= value <= high:
            self.fail(path, f"must be in {low}..{high}, got {value}")
        return value

    def text(self, path: str) -> str | None:
        value = self.get(path)
        if value is not None and not isinstance(value, str):
            self.fail(path, f"must be a string, got {_json_type(value)}")
        return value

    def base64(self, path: str) -> bytes | None:
        value = self.text(path)
        if value is None:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII text
            self.fail(path, f"is not valid base64 ({exc})")

    def obj(self, path: str) -> dict[str, object] | None:
        value = self.get(path)
        if value is not None and not isinstance(value, dict):
            self.fail(path, f"must be an object, got {_json_type(value)}")
        return value

    def strings(self, path: str) -> list[str]:
        value = self.get(path)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(path, "must be an array of strings")
        return value

    def time(self, path: str) -> float | None:
        value = self.text(path)
        if value is None:
            return None
        try:
            return parse_rfc3339(value)
        except ValueError as exc:
            self.fail(path, str(exc))


def _dig(node: object, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if -1e6 < value < 1e6 else None


def _lora_meta(
    doc: object,
    *,
    rx: str,
    snr: str,
    sf: tuple[str, ...],
    lorawan_class: tuple[str, ...] = (),
) -> dict[str, float | str] | None:
    """The radio link as the network server saw it: best RSSI and SNR over the receiving
    gateways, their number, the spreading factor, and the device class where given.

    Best effort: metadata never decides whether a message is accepted, so a malformed field
    is left out rather than refused.
    """
    meta: dict[str, float | str] = {}
    receptions = _dig(doc, (rx,))
    if isinstance(receptions, list) and receptions:
        meta["gateway_count"] = float(len(receptions))
        rssis = [v for r in receptions if (v := _number(_dig(r, ("rssi",)))) is not None]
        snrs = [v for r in receptions if (v := _number(_dig(r, (snr,)))) is not None]
        if rssis:
            meta["rssi"] = max(rssis)
        if snrs:
            meta["snr"] = max(snrs)
    factor = _number(_dig(doc, sf))
    if factor is not None and 5 <= factor <= 12:
        meta["spreading_factor"] = factor
    if lorawan_class:
        text = _dig(doc, lorawan_class)
        if isinstance(text, str) and text:
            meta["lorawan_class"] = text.removeprefix("CLASS_")[:8]
    return meta or None


def _try_eui(text: str) -> str | None:
    try:
        return normalise_dev_eui(text)
    except ValueError:
        return None


# --- ChirpStack v4 --------------------------------------------------------------------------

_CHIRPSTACK_TOPIC: Final = re.compile(r"application/([^/]+)/device/([^/]+)/event/([^/]+)")


def parse_chirpstack(topic: str, body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> Uplink:
    """A ChirpStack v4 `application/<app>/device/<devEUI>/event/up` message.

    A topic of that shape must agree with the body and be an `up` event; any other topic (a
    customised topic template) is accepted and the body alone is used.
    """
    fields = _Fields("chirpstack", _load_object("chirpstack", body, max_bytes))
    dev_eui = fields.dev_eui("deviceInfo.devEui")
    app = fields.text("deviceInfo.applicationId")
    if match := _CHIRPSTACK_TOPIC.fullmatch(topic):
        topic_app, topic_eui, event = match.groups()
        if event != "up":
            fields.fail("topic", f"is a {event!r} event, not an uplink")
        if _try_eui(topic_eui) != dev_eui:
            fields.fail("topic", f"names device {topic_eui!r} but deviceInfo.devEui is {dev_eui}")
        if app is not None and app != topic_app:
            fields.fail(
                "topic", f"names application {topic_app!r} but deviceInfo.applicationId is {app!r}"
            )
        app = topic_app
    return Uplink(
        dev_eui=dev_eui,
        fport=fields.integer("fPort", 0, 255),
        fcnt=fields.integer("fCnt", 0, _FCNT_MAX),
        dedup_id=fields.text("deduplicationId"),
        received_at=fields.time("time"),
        payload=fields.base64("data"),
        decoded=fields.obj("object"),
        source="chirpstack",
        application_id=app,
        tenant_id=fields.text("deviceInfo.tenantId"),
        meta=_lora_meta(
            fields.raw,
            rx="rxInfo",
            snr="snr",
            sf=("txInfo", "modulation", "lora", "spreadingFactor"),
            lorawan_class=("deviceInfo", "deviceClassEnabled"),
        ),
    )


# --- The Things Stack v3 --------------------------------------------------------------------

# The tenant part is absent on single-tenant (open source) deployments.
_TTS_TOPIC: Final = re.compile(r"v3/([^/@]+)(?:@([^/]+))?/devices/([^/]+)/(.+)")


def parse_tts(topic: str, body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> Uplink:
    """A The Things Stack v3 `v3/<app>@<tenant>/devices/<device id>/up` message.

    `dedup_id` is "<session_key_id>:<f_cnt>": within one session the frame counter never repeats,
    so the pair names one frame, and it stays the same however often the message is delivered
    (or the frame retransmitted). Without a session key id (console-simulated uplinks) the
    network server's "ns:uplink:<id>" correlation id is used instead.
    """
    fields = _Fields("tts", _load_object("tts", body, max_bytes))
    dev_eui = fields.dev_eui("end_device_ids.dev_eui")
    device_id = fields.text("end_device_ids.device_id")
    app = fields.text("end_device_ids.application_ids.application_id")
    tenant = None
    if match := _TTS_TOPIC.fullmatch(topic):
        topic_app, tenant, topic_device, event = match.groups()
        if event != "up":
            fields.fail("topic", f"is a {event!r} event, not an uplink")
        if device_id is not None and device_id != topic_device:
            fields.fail(
                "topic",
                f"names device {topic_device!r} but end_device_ids.device_id is {device_id!r}",
            )
        if app is not None and app != topic_app:
            fields.fail("topic", f"names application {topic_app!r} but the body names {app!r}")
        device_id, app = topic_device, topic_app
    if fields.obj("uplink_message") is None:
        fields.fail("uplink_message", "is missing")
    fcnt = fields.integer("uplink_message.f_cnt", 0, _FCNT_MAX)
    received_at = fields.time("received_at")
    if received_at is None:
        received_at = fields.time("uplink_message.received_at")
    return Uplink(
        dev_eui=dev_eui,
        fport=fields.integer("uplink_message.f_port", 0, 255),
        fcnt=fcnt,
        dedup_id=_tts_dedup_id(fields, fcnt),
        received_at=received_at,
        payload=fields.base64("uplink_message.frm_payload"),
        decoded=fields.obj("uplink_message.decoded_payload"),
        source="tts",
        application_id=app,
        tenant_id=tenant,
        device_id=device_id,
        meta=_lora_meta(
            fields.raw.get("uplink_message"),
            rx="rx_metadata",
            snr="snr",
            sf=("settings", "data_rate", "lora", "spreading_factor"),
        ),
    )


def _tts_dedup_id(fields: _Fields, fcnt: int | None) -> str | None:
    session = fields.text("uplink_message.session_key_id")
    if session is not None and fcnt is not None:
        return f"{session}:{fcnt}"
    for correlation_id in fields.strings("correlation_ids"):
        if correlation_id.startswith("ns:uplink:"):
            return correlation_id
    return None


# --- Milesight gateway network server -------------------------------------------------------


def parse_milesight(topic: str, body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> Uplink:
    """The Milesight gateway's built-in network server; its topic is user-set, so unchecked.

    It runs on a single gateway and gives no deduplication id: `dedup_id` is None and
    duplicates are recognised by (dev_eui, fcnt).
    """
    fields = _Fields("milesight", _load_object("milesight", body, max_bytes))
    dev_eui = fields.dev_eui("devEUI")
    payload = fields.base64("data")
    return Uplink(
        dev_eui=dev_eui,
        fport=fields.integer("fPort", 0, 255),
        fcnt=fields.integer("fCnt", 0, _FCNT_MAX),
        dedup_id=None,
        received_at=fields.time("time"),
        payload=payload,
        decoded=_milesight_decoded(fields) if payload is None else None,
        source="milesight",
        meta=_lora_meta(
            fields.raw,
            rx="rxInfo",
            snr="loRaSNR",
            sf=("txInfo", "dataRate", "spreadFactor"),
        ),
    )


# What the Milesight network server puts around a payload; anything else in a body without
# `data` is a field its payload codec decoded.
_MILESIGHT_ENVELOPE_KEYS: Final = frozenset(
    {
        "applicationID",
        "applicationName",
        "devEUI",
        "devAddr",
        "deviceID",
        "deviceName",
        "fCnt",
        "fPort",
        "gatewaySN",
        "gatewayTime",
        "rxInfo",
        "txInfo",
        "time",
        "metadata",
        "confirmed",
        "adr",
        "object",
    }
)


def _milesight_decoded(fields: _Fields) -> dict[str, object] | None:
    """Payload-codec mode: the decoded fields, in `object` or beside the envelope's own keys."""
    inner = fields.obj("object")
    if inner is not None:
        return inner
    decoded = {k: v for k, v in fields.raw.items() if k not in _MILESIGHT_ENVELOPE_KEYS}
    return decoded or None


# --- raw payloads ---------------------------------------------------------------------------

DEV_EUI_LEVEL: Final = "{dev_eui}"

RawEncoding = Literal["auto", "hex", "base64", "binary"]
"""How a raw body is read. "auto": hex text if the body is an even number of hex digits, else
base64 text. Base64 made only of hex letters (e.g. "AAAA", three zero bytes) is then misread as
hex: publishers of base64 should say "base64". "binary": the body bytes are the payload."""

_HEX_RE: Final = re.compile(r"(?:[0-9a-fA-F]{2})+")


class TopicPattern:
    """An MQTT-style topic pattern with exactly one `{dev_eui}` level, e.g. `site/+/{dev_eui}/up`.

    `+` matches any one level and a final `#` any number of levels, as in a subscription, so
    `subscription` gives the filter to subscribe with. Raises ConfigError on a bad pattern.
    """

    def __init__(self, pattern: str) -> None:
        levels = pattern.split("/")
        if levels.count(DEV_EUI_LEVEL) != 1:
            raise ConfigError(
                f"raw topic pattern {pattern!r} must have exactly one whole {DEV_EUI_LEVEL} level"
            )
        for position, level in enumerate(levels):
            if level == "#" and position != len(levels) - 1:
                raise ConfigError(f"raw topic pattern {pattern!r}: '#' must be the last level")
            if level not in ("+", "#", DEV_EUI_LEVEL) and any(c in level for c in "+#{}"):
                raise ConfigError(
                    f"raw topic pattern {pattern!r}: level {level!r} mixes text and a wildcard"
                )
        self.pattern = pattern
        self._multi = levels[-1] == "#"
        self._fixed = levels[:-1] if self._multi else levels
        self._eui_index = levels.index(DEV_EUI_LEVEL)

    @property
    def subscription(self) -> str:
        return self.pattern.replace(DEV_EUI_LEVEL, "+")

    def match(self, topic: str) -> str | None:
        """The text of the topic's `{dev_eui}` level, or None if the topic does not match."""
        levels = topic.split("/")
        if len(levels) < len(self._fixed) or (not self._multi and len(levels) > len(self._fixed)):
            return None
        for want, got in zip(self._fixed, levels, strict=False):
            if want not in ("+", DEV_EUI_LEVEL) and want != got:
                return None
        return levels[self._eui_index]


@lru_cache(maxsize=32)
def _topic_pattern(pattern: str) -> TopicPattern:
    return TopicPattern(pattern)


def parse_raw(
    topic: str,
    body: bytes,
    *,
    topic_pattern: str | None = None,
    encoding: RawEncoding = "auto",
    max_bytes: int = MAX_BODY_BYTES,
) -> Uplink:
    """A bare payload; the device EUI comes from the topic.

    With `topic_pattern` the EUI is its `{dev_eui}` level; without one, the topic must have
    exactly one level that reads as an EUI. fport, fcnt and times are unknown here (None).
    """
    _check_size("raw", body, max_bytes)
    dev_eui = _raw_dev_eui(topic, topic_pattern)
    return Uplink(
        dev_eui=dev_eui,
        fport=None,
        fcnt=None,
        dedup_id=None,
        received_at=None,
        payload=_raw_payload(body, encoding, f"raw uplink from {dev_eui}"),
        decoded=None,
        source="raw",
    )


def _raw_dev_eui(topic: str, pattern: str | None) -> str:
    if pattern is None:
        euis = {eui for level in topic.split("/") if (eui := _try_eui(level)) is not None}
        if len(euis) != 1:
            how_many = "no" if not euis else "more than one"
            raise EnvelopeError(
                f"raw uplink: topic {_show(topic)} has {how_many} device EUI level; "
                "set a raw topic pattern with {dev_eui}"
            )
        return euis.pop()
    level = _topic_pattern(pattern).match(topic)
    if level is None:
        raise EnvelopeError(f"raw uplink: topic {_show(topic)} does not match {pattern!r}")
    try:
        return normalise_dev_eui(level)
    except ValueError as exc:
        raise EnvelopeError(f"raw uplink: topic level {DEV_EUI_LEVEL} {exc}") from exc


def _raw_payload(body: bytes, encoding: RawEncoding, where: str) -> bytes:
    if encoding == "binary":
        if not body:
            raise EnvelopeError(f"{where}: body is empty")
        return body
    try:
        # Whitespace is dropped so "04 c9 03" and line-wrapped base64 are both accepted.
        text = "".join(body.decode("ascii").split())
    except UnicodeDecodeError:
        raise EnvelopeError(f"{where}: body is not ASCII text; publish hex or base64") from None
    if not text:
        raise EnvelopeError(f"{where}: body is empty")
    if encoding == "hex" or (encoding == "auto" and _HEX_RE.fullmatch(text)):
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise EnvelopeError(f"{where}: body is not valid hex") from None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        expected = "hex or base64" if encoding == "auto" else "base64"
        raise EnvelopeError(f"{where}: body is not valid {expected} ({exc})") from exc


# --- registry -------------------------------------------------------------------------------

ENVELOPES: Final[dict[str, EnvelopeParser]] = {
    "chirpstack": parse_chirpstack,
    "tts": parse_tts,
    "milesight": parse_milesight,
    "raw": parse_raw,
}


def parse_envelope(
    kind: str,
    topic: str,
    body: bytes,
    *,
    raw_topic_pattern: str | None = None,
    raw_encoding: RawEncoding = "auto",
    max_bytes: int = MAX_BODY_BYTES,
) -> Uplink:
    """Parse with the parser registered for `kind`; the raw_* options apply to "raw" only.

    An unknown kind is a ConfigError (the kind comes from configuration, not from the message).
    """
    if kind not in ENVELOPES:
        raise ConfigError(f"unknown envelope kind {kind!r}; expected one of {', '.join(ENVELOPES)}")
    if kind == "raw":
        return parse_raw(
            topic, body, topic_pattern=raw_topic_pattern, encoding=raw_encoding, max_bytes=max_bytes
        )
    return ENVELOPES[kind](topic, body, max_bytes=max_bytes)


# --- downlinks ------------------------------------------------------------------------------

MILESIGHT_EUI_WILDCARD: Final = "$deveui"
"""How the Milesight gateway's downlink topic marks the EUI level (e.g. `/eg/downlink/$deveui/`)."""

_DEFAULT_DOWN_TOPICS: Final[dict[str, str]] = {
    "chirpstack": "application/{app}/device/{dev_eui}/command/down",
    "tts": "v3/{app}@{tenant}/devices/{device_id}/down/push",
    "tts-single-tenant": "v3/{app}/devices/{device_id}/down/push",
}


def downlink_message(
    kind: str,
    dev_eui: str,
    fport: int,
    payload: bytes,
    *,
    app: str | None = None,
    tenant: str | None = None,
    device_id: str | None = None,
    topic_template: str | None = None,
    confirmed: bool = False,
    correlation_id: str | None = None,
) -> tuple[str, bytes]:
    """The (topic, JSON body) that asks the `kind` network server to send `payload` to a device.

    Topics are addressed by: ChirpStack `app` (application id) and the EUI; TTS `app`, `tenant`
    (omit on single-tenant deployments) and `device_id` (its own device id, not the EUI: see
    Uplink.device_id); Milesight only by `topic_template`, the downlink topic set in the gateway.
    `topic_template` overrides the default topic and may use {app}, {tenant}, {dev_eui} and
    {device_id}, and {DEV_EUI} (or Milesight's own `$deveui`) for the EUI in upper case, as
    Milesight's documentation writes it. `correlation_id` goes into a TTS push, whose events
    then carry it. Raises EncodeError when the downlink cannot be addressed or encoded.
    """
    try:
        eui = normalise_dev_eui(dev_eui)
    except ValueError as exc:
        raise EncodeError(f"{kind} downlink: dev_eui {exc}") from exc
    where = f"{kind} downlink to {eui}"
    if isinstance(fport, bool) or not isinstance(fport, int) or fport not in _DOWNLINK_FPORTS:
        raise EncodeError(f"{where}: fport must be an integer 1..223, got {fport!r}")
    data = base64.b64encode(payload).decode("ascii")
    body: dict[str, object]
    if kind == "chirpstack":
        body = {"devEui": eui, "confirmed": confirmed, "fPort": fport, "data": data}
        default = _DEFAULT_DOWN_TOPICS["chirpstack"]
    elif kind == "tts":
        downlink: dict[str, object] = {"f_port": fport, "frm_payload": data, "priority": "NORMAL"}
        downlink["confirmed"] = confirmed
        if correlation_id is not None:
            downlink["correlation_ids"] = [correlation_id]
        body = {"downlinks": [downlink]}
        default = _DEFAULT_DOWN_TOPICS["tts" if tenant else "tts-single-tenant"]
    elif kind == "milesight":
        body = {"devEUI": eui, "fPort": fport, "data": data, "confirmed": confirmed}
        if topic_template is None:
            raise EncodeError(
                f"{where}: needs topic_template, the downlink topic set in the gateway"
            )
        default = topic_template
    else:
        raise EncodeError(f"{where}: no downlink format for envelope kind {kind!r}")
    values = {
        "app": app,
        "tenant": tenant,
        "dev_eui": eui,
        "DEV_EUI": eui.upper(),
        "device_id": device_id,
    }
    template = (topic_template or default).replace(MILESIGHT_EUI_WILDCARD, "{DEV_EUI}")
    topic = _fill_topic(template, values, where)
    return topic, json.dumps(body, separators=(",", ":")).encode()


def _fill_topic(template: str, values: Mapping[str, str | None], where: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise EncodeError(f"{where}: topic template {template!r} is malformed ({exc})") from exc
    unknown = names - values.keys()
    if unknown:
        raise EncodeError(
            f"{where}: topic template {template!r} uses unknown {', '.join(sorted(unknown))}"
        )
    for name in sorted(names):
        value = values[name]
        if not value:
            raise EncodeError(f"{where}: {name} is required by topic {template!r}")
        # A '/' would shift the levels; '+' and '#' are wildcards, not allowed when publishing.
        if any(char in value for char in "/+#\0"):
            raise EncodeError(f"{where}: {name} {value!r} cannot be an MQTT topic level")
    topic = template.format_map(values)
    if not topic or any(char in topic for char in "+#\0"):
        raise EncodeError(f"{where}: {topic!r} is not a topic one can publish to")
    return topic
