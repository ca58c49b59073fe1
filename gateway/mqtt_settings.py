"""Configuration of the MQTT source: the broker connection and what to subscribe to.

Validation happens at load time wherever it can (topic filters, TLS files, option combinations),
so a typo is reported with its key before the daemon starts rather than as a silent subscription
that never matches. The password file is the exception: it is read when the source connects, so
a credential provisioned at service start (systemd LoadCredential) works.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal, Self

from paho.mqtt.client import topic_matches_sub
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.envelopes import MILESIGHT_EUI_WILDCARD, TopicPattern
from gateway.errors import ConfigError

__all__ = ["Envelope", "MqttSection", "MqttSubscription", "MqttTls"]

Envelope = Literal["chirpstack", "tts", "milesight", "raw", "vs121p"]

_MAX_TOPIC_BYTES = 65535  # MQTT strings carry a 16-bit length


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_levels(topic: str, *, wildcards: bool) -> None:
    """Raise ValueError unless `topic` is a sound MQTT topic (or filter, with `wildcards`)."""
    if not topic:
        raise ValueError("must not be empty")
    if len(topic.encode()) > _MAX_TOPIC_BYTES:
        raise ValueError(f"longer than {_MAX_TOPIC_BYTES} bytes")
    if "\0" in topic:
        raise ValueError("must not contain a NUL character")
    levels = topic.split("/")
    # Empty levels are legal MQTT, but "a//b" or "a/b/" is nearly always a typo that silently
    # matches nothing; a leading "/" is common enough on NS gateways to keep.
    if any(level == "" for level in levels[1:]):
        raise ValueError("has an empty level ('//' or a trailing '/')")
    for position, level in enumerate(levels):
        if not wildcards and any(c in level for c in "+#"):
            raise ValueError("must not contain the wildcards '+' or '#'")
        if level == "#" and position != len(levels) - 1:
            raise ValueError("'#' is allowed only as the last level")
        if level not in ("+", "#") and any(c in level for c in "+#"):
            raise ValueError(f"level {level!r} mixes text with a wildcard; use a whole level")


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"malformed template ({exc})") from exc


class MqttSubscription(_Strict):
    """One topic filter and how to read the messages that arrive on it."""

    name: str = Field(min_length=1, max_length=64)
    topic: str
    envelope: Envelope
    # raw only: where the device EUI sits in the topic, e.g. "sensors/{dev_eui}/up".
    raw_topic_pattern: str | None = None
    # Where downlinks go. Milesight (required for its downlinks): the downlink topic set in the
    # gateway, with {dev_eui}, {DEV_EUI} (upper case) or its own `$deveui`; a trailing '/' as
    # Milesight documents it is kept. ChirpStack and TTS: overrides their default command topic
    # and may also use {app}, {tenant} and {device_id}.
    downlink_topic: str | None = None
    chirpstack_application: str | None = Field(None, min_length=1)
    tts_application: str | None = Field(None, min_length=1)
    tts_tenant: str | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _milesight_notation(cls, data: object) -> object:
        # Milesight writes its topics with `$deveui` for the device level and a trailing '/'
        # (`/eg/uplink/$deveui/`); as a filter that device level is a '+'.
        if isinstance(data, dict) and data.get("envelope") == "milesight":
            topic = data.get("topic")
            if isinstance(topic, str) and MILESIGHT_EUI_WILDCARD in topic:
                data = {**data, "topic": topic.replace(MILESIGHT_EUI_WILDCARD, "+")}
        return data

    @field_validator("topic")
    @classmethod
    def _filter(cls, v: str) -> str:
        # A trailing '/' is checked with the envelope (see _per_envelope).
        _check_levels(v[:-1] if len(v) > 1 and v.endswith("/") else v, wildcards=True)
        return v

    @field_validator("downlink_topic")
    @classmethod
    def _downlink(cls, v: str | None) -> str | None:
        if v is None:
            return None
        sample = v.replace(MILESIGHT_EUI_WILDCARD, "{DEV_EUI}")
        allowed = {"dev_eui", "DEV_EUI", "app", "tenant", "device_id"}
        unknown = _placeholders(sample) - allowed
        if unknown:
            raise ValueError(
                f"unknown placeholder {', '.join(sorted(unknown))}; use {{dev_eui}}, {{DEV_EUI}}, "
                f"{MILESIGHT_EUI_WILDCARD}, {{app}}, {{tenant}} or {{device_id}}"
            )
        for name in allowed:
            sample = sample.replace("{" + name + "}", "x")
        # Milesight documents its topics with a trailing '/' (`/eg/downlink/$deveui/`).
        _check_levels(sample.removesuffix("/") or sample, wildcards=False)
        return v

    @model_validator(mode="after")
    def _per_envelope(self) -> Self:
        only = {
            "raw_topic_pattern": "raw",
            "chirpstack_application": "chirpstack",
            "tts_application": "tts",
            "tts_tenant": "tts",
        }
        for field, envelope in only.items():
            if getattr(self, field) is not None and self.envelope != envelope:
                raise ValueError(
                    f"subscription {self.name!r}: {field} applies only to envelope {envelope!r}"
                )
        if self.topic.endswith("/") and len(self.topic) > 1 and self.envelope != "milesight":
            # Only Milesight documents topics that end in '/'; elsewhere it is a typo.
            raise ValueError(
                f"subscription {self.name!r}: topic {self.topic!r} has an empty level "
                "('//' or a trailing '/')"
            )
        if self.envelope == "raw":
            self._check_raw_pattern()
        if self.downlink_topic is not None and self.envelope not in (
            "milesight",
            "chirpstack",
            "tts",
        ):
            raise ValueError(
                f"subscription {self.name!r}: downlink_topic applies only to envelopes "
                "'milesight', 'chirpstack' and 'tts'"
            )
        if self.envelope == "milesight" and self.downlink_topic is not None:
            names = _placeholders(self.downlink_topic.replace(MILESIGHT_EUI_WILDCARD, "{DEV_EUI}"))
            if names - {"dev_eui", "DEV_EUI"}:
                raise ValueError(
                    f"subscription {self.name!r}: a Milesight downlink_topic can only use the "
                    f"device EUI ({{dev_eui}}, {{DEV_EUI}} or {MILESIGHT_EUI_WILDCARD})"
                )
        return self

    def _check_raw_pattern(self) -> None:
        # A raw body carries no device id, so the topic must.
        pattern = self.raw_topic_pattern
        if pattern is None:
            raise ValueError(
                f"subscription {self.name!r}: envelope 'raw' needs raw_topic_pattern, "
                "e.g. 'sensors/{dev_eui}/up'"
            )
        try:
            TopicPattern(pattern)
        except ConfigError as exc:
            raise ValueError(f"subscription {self.name!r}: {exc}") from exc
        sample = "/".join(
            "0" * 16 if level == "{dev_eui}" else ("x" if level in ("+", "#") else level)
            for level in pattern.split("/")
        )
        if not topic_matches_sub(self.topic, sample):
            raise ValueError(
                f"subscription {self.name!r}: topics of raw_topic_pattern {pattern!r} "
                f"are not matched by the filter {self.topic!r}"
            )


class MqttTls(_Strict):
    """TLS to the broker; files are PEM. Without ca_file the system's CAs are trusted."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file {str(v)!r} does not exist or is not a file")
        return v

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self


class MqttSection(_Strict):
    """The broker connection. QoS 1 with a persistent session by default, so the broker keeps
    messages for us while the gateway restarts; that only works with a stable client_id."""

    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str = Field("vs121-gateway", min_length=1, max_length=256)
    keepalive: int = Field(30, ge=1, le=65535)
    username: str | None = Field(None, min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: MqttTls | None = None
    # 1 is the one to use. paho keeps its half of a QoS 2 handshake in memory only, so a crash
    # between PUBREC and processing loses the message; QoS 0 has no redelivery at all.
    qos: Literal[0, 1, 2] = 1
    status_topic: str = "vs121-gateway/status"
    queue_size: int = Field(1000, ge=10, le=100_000)
    reconnect_min: float = Field(1.0, gt=0, le=3600)
    reconnect_max: float = Field(60.0, gt=0, le=3600)
    subscriptions: list[MqttSubscription] = []

    @field_validator("status_topic")
    @classmethod
    def _status(cls, v: str) -> str:
        _check_levels(v, wildcards=False)
        if v.startswith("$"):
            raise ValueError("topics starting with '$' are reserved for the broker")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            # MQTT 3.1.1 forbids a password without a user name.
            raise ValueError("a password needs a username")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        seen: set[str] = set()
        for sub in self.subscriptions:
            if sub.name in seen:
                raise ValueError(f"subscription name {sub.name!r} is used twice")
            seen.add(sub.name)
        return self

    def read_password(self) -> str | None:
        """The password, from the config or from password_file (trailing newline dropped).

        Reads a file, so call it off the event loop. Raises ConfigError naming the file.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"mqtt.password_file {str(self.password_file)!r} cannot be read: {reason}"
            ) from None
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError(f"mqtt.password_file {str(self.password_file)!r} is empty")
        return password
