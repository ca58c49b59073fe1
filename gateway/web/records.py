"""What the commissioning page remembers in memory: each sensor's last messages, a short trend of
its counts, and the fault log. Everything is bounded; nothing here is persisted.

Privacy: a VS121-P report's `snapshot` image is cut out of the raw text before it is kept, as the
rest of the gateway never stores it either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.codec.result import DecodeResult
from gateway.envelopes import Uplink
from gateway.ingest import IngestResult, Result, Trace
from gateway.state import Change, GatewayState

MESSAGES_KEPT = 20  # per sensor
UNMATCHED_KEPT = 20  # messages no configured sensor could be named for
RAW_SHOWN = 2000  # characters of a raw body kept
DECODED_SHOWN = 3000
PARSE_LIMIT = 64 * 1024  # larger bodies are shown cut, not parsed
TREND_KEPT = 2000  # samples per sensor
TREND_SPAN_S = 3 * 3600.0
FAULTS_KEPT = 200

_OUTCOME = {
    Result.ACCEPTED: "applied",
    Result.PARTIAL: "partial",
    Result.DUPLICATE: "duplicate",
}
_TREND_KEYS = ("people_count_all", "gateway_total_in", "gateway_total_out")


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as received. The envelope and decoded views are built when a page shows them,
    not on the ingest path."""

    seq: int
    at: float  # unix time it was taken in
    source: str
    topic: str | None
    raw: str
    raw_kind: str  # "json", "text" or "hex"
    uplink: Uplink | None
    decoded_result: DecodeResult | None
    outcome: str  # applied, partial, duplicate or error
    result: str  # the ingest result ("decode_error", ...)
    reason: str

    @property
    def refused(self) -> bool:
        return self.outcome == "error"

    @property
    def envelope(self) -> dict[str, object] | None:
        return _envelope(self.uplink)

    @property
    def decoded(self) -> str | None:
        if self.decoded_result is None:
            return None
        text = json.dumps(self.decoded_result, default=str, ensure_ascii=False)
        return _cut(text, DECODED_SHOWN)


def _drop_snapshots(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _drop_snapshots(v) for k, v in doc.items() if "snapshot" not in str(k).lower()}
    if isinstance(doc, list):
        return [_drop_snapshots(v) for v in doc]
    return doc


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more)"


def raw_text(body: bytes) -> tuple[str, str]:
    """The body as it may be shown: as received (cut), or without images, or as hex."""
    if b"snapshot" in body:
        return _without_snapshot(body)
    head = body[: RAW_SHOWN * 4]  # enough bytes for RAW_SHOWN characters
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end
            return _cut(body.hex(" "), RAW_SHOWN), "hex"
        text = head[: exc.start].decode("utf-8")
    shown = text[:RAW_SHOWN]
    if not shown.isprintable() and not _printable_lines(shown):
        return _cut(body.hex(" "), RAW_SHOWN), "hex"
    kind = "json" if text.lstrip()[:1] in ("{", "[") else "text"
    text = shown + (f"… ({len(body)} bytes in all)" if len(body) > RAW_SHOWN else "")
    return text, kind


def _printable_lines(text: str) -> bool:
    return text.replace("\n", " ").replace("\r", " ").replace("\t", " ").isprintable()


def _without_snapshot(body: bytes) -> tuple[str, str]:
    """A VS121-P report carries a camera image: it is cut out before anything is kept."""
    if len(body) <= PARSE_LIMIT:
        try:
            doc = json.loads(body)
        except ValueError:
            pass
        else:
            return _cut(json.dumps(_drop_snapshots(doc), ensure_ascii=False), RAW_SHOWN), "json"
    return f"({len(body)} bytes, not shown: it may carry an image)", "text"


def _envelope(up: Uplink | None) -> dict[str, object] | None:
    if up is None:
        return None
    out: dict[str, object] = {}
    for f in dataclasses.fields(up):
        value = getattr(up, f.name)
        if value is None or f.name == "decoded":
            continue
        out[f.name] = value.hex(" ") if isinstance(value, bytes) else value
    return out


class MessageLog:
    """The last messages per sensor, newest first; `observe` is the ingest's observer."""

    def __init__(self, *, kept: int = MESSAGES_KEPT, clock: Callable[[], float] = time.time):
        self._kept = kept
        self._clock = clock
        self._by_sensor: dict[str, deque[MessageRecord]] = {}
        self.unmatched: deque[MessageRecord] = deque(maxlen=UNMATCHED_KEPT)
        self._seq = 0
        self.listeners: list[Callable[[str | None, MessageRecord], None]] = []

    def observe(self, trace: Trace, result: IngestResult) -> None:
        self._seq += 1
        raw, kind = raw_text(trace.body)
        record = MessageRecord(
            seq=self._seq,
            at=self._clock(),
            source=trace.source,
            topic=trace.topic,
            raw=raw,
            raw_kind=kind,
            uplink=trace.envelope,
            decoded_result=trace.decoded,
            outcome=_OUTCOME.get(result.result, "error"),
            result=result.result.value,
            reason=result.reason,
        )
        sid = result.sensor_id
        if sid is None:
            self.unmatched.appendleft(record)
        else:
            ring = self._by_sensor.get(sid)
            if ring is None:
                ring = self._by_sensor[sid] = deque(maxlen=self._kept)
            ring.appendleft(record)
        for listener in self.listeners:
            listener(sid, record)

    def for_sensor(self, sensor_id: str) -> list[MessageRecord]:
        return list(self._by_sensor.get(sensor_id, ()))


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    people: float | None
    total_in: float | None
    total_out: float | None


class SampleRing:
    """One sensor's last samples in an array of doubles, four per sample (time, people, in, out;
    NaN for a value not known): no object per sample, so a site's trends add nothing for the
    garbage collector to walk, and the memory grows to at most `size` samples."""

    __slots__ = ("_count", "_data", "_next", "_size")

    def __init__(self, size: int) -> None:
        self._data = array("d")
        self._size = size
        self._next = 0  # where the next sample goes once the ring is full
        self._count = 0

    def append(self, sample: Sample) -> None:
        row = (sample.at, _nan(sample.people), _nan(sample.total_in), _nan(sample.total_out))
        if self._count < self._size:
            self._data.extend(row)
            self._count += 1
            return
        i = 4 * self._next
        self._data[i : i + 4] = array("d", row)
        self._next = (self._next + 1) % self._size

    def since(self, since: float) -> list[Sample]:
        """The samples from `since` on, oldest first."""
        d = self._data
        out = []
        for k in range(self._count):
            i = 4 * ((self._next + k) % self._count)
            if d[i] >= since:
                out.append(Sample(d[i], _value(d[i + 1]), _value(d[i + 2]), _value(d[i + 3])))
        return out


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _value(stored: float) -> float | None:
    return None if math.isnan(stored) else stored


class Trend:
    """Each sensor's people count and totals over the last hours, sampled on every change."""

    def __init__(self, state: GatewayState, *, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock
        self._samples: dict[str, SampleRing] = {}

    def on_change(self, change: Change) -> None:
        if not change.sensor_id or not any(k in change.values for k in _TREND_KEYS):
            return
        s = self._state.sensors.get(change.sensor_id)
        if s is None:
            return
        v = s.values
        ring = self._samples.get(change.sensor_id)
        if ring is None:
            ring = self._samples[change.sensor_id] = SampleRing(TREND_KEPT)
        ring.append(
            Sample(
                self._clock(),
                v.get("people_count_all"),
                v.get("gateway_total_in"),
                v.get("gateway_total_out"),
            )
        )

    def samples(self, sensor_id: str, span: float = TREND_SPAN_S) -> list[Sample]:
        ring = self._samples.get(sensor_id)
        return [] if ring is None else ring.since(self._clock() - span)


@dataclass(frozen=True, slots=True)
class Fault:
    seq: int
    at: float
    level: str
    logger: str
    message: str


class FaultLog(logging.Handler):
    """The gateway's warnings and errors, one line each (as the log prints them), newest first."""

    def __init__(self, kept: int = FAULTS_KEPT) -> None:
        super().__init__(logging.WARNING)
        self.entries: deque[Fault] = deque(maxlen=kept)
        self._seq = 0
        self.listeners: list[Callable[[Fault], None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split())
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        self._seq += 1
        fault = Fault(self._seq, record.created, record.levelname, record.name, _cut(text, 500))
        self.entries.appendleft(fault)
        for listener in self.listeners:
            listener(fault)
