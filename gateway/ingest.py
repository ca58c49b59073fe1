"""From a message body to the sensor state: envelope, codec, sensor lookup, duplicate key.

Sources (MQTT, HTTP, replay) call `Ingest`; it never raises on bad input. Every rejected
message gets one log line naming the source, the sensor when known, and the reason; repeats of
the same fault from the same place are summarised rather than flooding the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.codec.result import DecodeResult
from gateway.codec.vs121_uplink import decode_uplink
from gateway.codec.vs121p import parse_report_bytes, report_identity
from gateway.device_points import derived_values
from gateway.envelopes import Uplink, parse_envelope
from gateway.errors import EnvelopeError
from gateway.settings import SensorSection
from gateway.state import GatewayState, Outcome, Report

log = logging.getLogger("gateway.ingest")

LOG_REPEAT_WINDOW_S = 60.0
SERVER_TIME_TRUST_S = 30 * 86400.0  # older network-server times are taken as a wrong clock


# Decoded fields that add to the gateway's line totals.
_LINE_COUNTS = frozenset({"people_in", "people_out", "line_in", "line_out"})


class Result(StrEnum):
    ACCEPTED = "accepted"
    PARTIAL = "partial"  # decoded with errors; the usable part was applied
    DUPLICATE = "duplicate"
    DECODE_ERROR = "decode_error"
    ENVELOPE_ERROR = "envelope_error"
    UNKNOWN_DEVICE = "unknown_device"
    REJECTED = "rejected"
    MAC_ONLY = "mac_only"  # a LoRaWAN frame with MAC commands only: no application data


@dataclass(frozen=True, slots=True)
class IngestResult:
    result: Result
    sensor_id: str | None = None
    reason: str = ""

    @property
    def applied(self) -> bool:
        """True when the message changed (or had already changed) the state."""
        return self.result in (Result.ACCEPTED, Result.PARTIAL, Result.DUPLICATE)


Counter = Callable[[str, Result, str | None], None]


@dataclass(slots=True)
class Trace:
    """One message as it came in and what was made of it (for an observer such as the
    commissioning page's message list); filled in as the message goes through `Ingest`."""

    source: str
    body: bytes
    topic: str | None = None
    envelope: Uplink | None = None
    decoded: DecodeResult | None = None


Observer = Callable[[Trace, IngestResult], None]


class _Quiet:
    """Logs the first occurrence of a fault per key, then one summary per window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, message: str) -> None:
        now = self._clock()
        first, suppressed = self._seen.get(key, (0.0, -1))
        if suppressed >= 0 and now - first < LOG_REPEAT_WINDOW_S:
            self._seen[key] = (first, suppressed + 1)
            return
        if suppressed > 0:
            message += f" ({suppressed} more like it in the last {now - first:.0f} s)"
        self._seen[key] = (now, 0)
        if len(self._seen) > 10_000:  # bounded: garbage from many topics cannot grow it forever
            self._seen.clear()
        log.warning("%s", message)


class Ingest:
    def __init__(
        self,
        sensors: Sequence[SensorSection],
        state: GatewayState,
        *,
        count: Counter | None = None,
        lines_refused: Callable[[str], None] | None = None,
        observe: Observer | None = None,
    ) -> None:
        self._state = state
        self._refused = lines_refused
        self._observe = observe
        self._trace: Trace | None = None
        self._by_eui = {s.dev_eui: s for s in sensors if s.dev_eui}
        self._by_serial = {s.serial: s for s in sensors if s.serial}
        self._count = count
        self._unknown_logged: set[str] = set()
        self._quiet = _Quiet()
        self.last_uplink: dict[str, Uplink] = {}  # per sensor: addressing for downlinks
        # Sees every decoded LoRaWAN uplink (settings echoes, device facts) before it is applied.
        # Called with (source, sensor id, uplink, decoded data).
        self.on_uplink: Callable[[str, str, Uplink, dict[str, Any]], None] | None = None
        # A VS121-P report that names its serial: (sensor id, serial), for the text object.
        self.on_serial: Callable[[str, str], None] | None = None

    # -- LoRaWAN uplinks ------------------------------------------------------------------

    def uplink(
        self,
        source: str,
        envelope: str,
        topic: str,
        body: bytes,
        *,
        received_at: float | None = None,
        raw_topic_pattern: str | None = None,
    ) -> IngestResult:
        now = time.time() if received_at is None else received_at
        trace = self._trace = Trace(source, body, topic)
        try:
            up = parse_envelope(envelope, topic, body, raw_topic_pattern=raw_topic_pattern)
        except EnvelopeError as exc:
            return self._reject(source, None, Result.ENVELOPE_ERROR, str(exc), topic)
        sensor = self._by_eui.get(up.dev_eui)
        if sensor is None:
            return self._unknown(source, f"dev_eui {up.dev_eui}")
        if sensor.model != "vs121":
            reason = f"LoRaWAN uplink for a {sensor.model} sensor; check its dev_eui"
            return self._reject(source, sensor.id, Result.REJECTED, reason)
        self.last_uplink[sensor.id] = up
        trace.envelope = up
        if _mac_only(up):
            # Routine (a device in rejoin mode sends LinkCheckReq every interval) and carries
            # no counts: counted, not logged, and no sign of life (see the README).
            self._tally(source, Result.MAC_ONLY, sensor.id)
            return IngestResult(Result.MAC_ONLY, sensor.id, "MAC commands only")
        if up.payload is not None:
            decoded = decode_uplink(up.payload, up.fport if up.fport is not None else 85)
            digest = hashlib.sha1(up.payload, usedforsecurity=False).hexdigest()[:16]
        elif up.decoded is not None:
            decoded = {"data": dict(up.decoded), "warnings": [], "errors": []}
            canonical = json.dumps(up.decoded, sort_keys=True, default=str).encode()
            digest = hashlib.sha1(canonical, usedforsecurity=False).hexdigest()[:16]
        else:
            return self._reject(source, sensor.id, Result.DECODE_ERROR, "uplink has no payload")
        trace.decoded = decoded
        if decoded["data"]:
            decoded["data"].update(derived_values(up, decoded["data"]))
            if self.on_uplink is not None:
                self.on_uplink(source, sensor.id, up, decoded["data"])
        key = _uplink_key(up, digest, decoded["data"])
        return self._apply(
            source, sensor.id, decoded, key=key, fcnt=up.fcnt, received_at=_when(up, now)
        )

    # -- VS121-P JSON ---------------------------------------------------------------------

    def vs121p(
        self,
        source: str,
        body: bytes,
        *,
        received_at: float | None = None,
        serial_hint: str | None = None,
    ) -> IngestResult:
        now = time.time() if received_at is None else received_at
        decoded = parse_report_bytes(body)
        self._trace = Trace(source, body, decoded=decoded)
        data = decoded["data"]
        serial = data.get("sn") or serial_hint
        if not data and decoded["errors"]:
            return self._reject(source, None, Result.DECODE_ERROR, "; ".join(decoded["errors"]))
        if not isinstance(serial, str):
            reason = "report has no device_info.device_sn; cannot tell which sensor sent it"
            return self._reject(source, None, Result.REJECTED, reason)
        sensor = self._by_serial.get(serial)
        if sensor is None:
            return self._unknown(source, f"serial {serial}")
        if sensor.model != "vs121-p":
            reason = f"VS121-P report for a {sensor.model} sensor; check its serial"
            return self._reject(source, sensor.id, Result.REJECTED, reason)
        if self.on_serial is not None and data.get("sn") == serial:
            self.on_serial(sensor.id, serial)
        identity = report_identity(decoded, serial)
        if identity is None:
            decoded = self._without_line_counts(source, sensor.id, decoded)
        key = None if identity is None else "p:" + identity
        return self._apply(source, sensor.id, decoded, key=key, fcnt=None, received_at=now)

    def _without_line_counts(
        self, source: str, sensor_id: str, decoded: DecodeResult
    ) -> DecodeResult:
        """A report that cannot be told from its redelivery must not add line counts: each
        delivery would add them again. Its other values are only shown, so they stay."""
        data = decoded["data"]
        dropped = sorted(k for k in _LINE_COUNTS if k in data)
        if not dropped:
            return decoded
        self._quiet.warn(
            f"{sensor_id}:untimed",
            f"sensor {sensor_id} ({source}): report has no readable time, report type or event;"
            f" its line counts ({', '.join(dropped)}) are not added, since a redelivery could"
            " not be told from a new report",
        )
        if self._refused is not None:
            self._refused(sensor_id)
        kept = {k: v for k, v in data.items() if k not in _LINE_COUNTS}
        return {"data": kept, "warnings": decoded["warnings"], "errors": decoded["errors"]}

    # -- shared -----------------------------------------------------------------------------

    def _apply(
        self,
        source: str,
        sensor_id: str,
        decoded: DecodeResult,
        *,
        key: str | None,
        fcnt: int | None,
        received_at: float,
    ) -> IngestResult:
        data = decoded["data"]
        errors = decoded["errors"]
        if not data:
            reason = "; ".join(errors) or "nothing decodable"
            return self._reject(source, sensor_id, Result.DECODE_ERROR, reason)
        outcome = self._state.apply(Report(sensor_id, data, received_at, key, fcnt))
        if outcome.outcome is Outcome.DUPLICATE:
            self._tally(source, Result.DUPLICATE, sensor_id, "already applied")
            return IngestResult(Result.DUPLICATE, sensor_id, "already applied")
        for problem in outcome.problems:
            self._quiet.warn(f"{sensor_id}:{problem}", f"sensor {sensor_id}: {problem}; ignored")
        if errors:
            reason = "; ".join(errors)
            self._quiet.warn(
                f"{sensor_id}:decode", f"sensor {sensor_id} ({source}): {reason}; rest used"
            )
            self._tally(source, Result.PARTIAL, sensor_id, reason)
            return IngestResult(Result.PARTIAL, sensor_id, reason)
        self._tally(source, Result.ACCEPTED, sensor_id)
        return IngestResult(Result.ACCEPTED, sensor_id)

    def _reject(
        self,
        source: str,
        sensor_id: str | None,
        result: Result,
        reason: str,
        topic: str | None = None,
    ) -> IngestResult:
        shown = topic if topic is None or len(topic) <= 120 else topic[:117] + "..."
        who = f"sensor {sensor_id}" if sensor_id else (f"topic {shown}" if topic else "message")
        # Keyed on a digest: hostile topics and reasons can be large, the table must stay small.
        where = hashlib.sha1(f"{topic}:{reason}".encode(), usedforsecurity=False).hexdigest()[:16]
        self._quiet.warn(
            f"{source}:{sensor_id}:{result}:{where}",
            f"{source}: {who}: {result.value.replace('_', ' ')}: {reason}",
        )
        self._tally(source, result, sensor_id, reason)
        return IngestResult(result, sensor_id, reason)

    def _unknown(self, source: str, what: str) -> IngestResult:
        if what not in self._unknown_logged and len(self._unknown_logged) < 10_000:
            self._unknown_logged.add(what)
            log.warning(
                "%s: unknown device %s (not in the configuration); ignoring it", source, what
            )
        self._tally(source, Result.UNKNOWN_DEVICE, None, f"unknown device {what}")
        return IngestResult(Result.UNKNOWN_DEVICE, None, f"unknown device {what}")

    def _tally(self, source: str, result: Result, sensor_id: str | None, reason: str = "") -> None:
        if self._count is not None:
            self._count(source, result, sensor_id)
        trace, self._trace = self._trace, None
        if self._observe is not None and trace is not None:
            self._observe(trace, IngestResult(result, sensor_id, reason))


def _mac_only(up: Uplink) -> bool:
    """fPort 0 carries only MAC commands, which the network server consumes; a server that
    omits fPort and data altogether (protobuf JSON leaves out zero values) means the same."""
    if up.fport == 0:
        return True
    return up.source != "raw" and up.fport is None and not up.payload and up.decoded is None


def _when(up: Uplink, now: float) -> float:
    """When the report happened, for ordering and freshness: the network server's receive time
    when it is plausible (a message redelivered after a restart is old news, not a fresh report),
    never later than our own receive time (a skewed server clock must not freeze values)."""
    sent = up.received_at
    if sent is None or not now - SERVER_TIME_TRUST_S <= sent <= now:
        return now
    return sent


def _uplink_key(up: Uplink, digest: str, data: dict[str, Any]) -> str | None:
    """The duplicate key: the server's own dedup id, else frame counter + payload, else (raw
    mode) the payload only when it carries the sensor's time; an untimed raw payload cannot be
    told from an identical later one, so it is never treated as a duplicate."""
    if up.dedup_id:
        return "id:" + up.dedup_id
    if up.fcnt is not None:
        return f"fc:{up.fcnt}:{digest}"
    if "timestamp" in data or data.get("history"):
        return "ts:" + digest
    return None
