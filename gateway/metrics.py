"""In-process metrics, kept by prometheus_client, served in the text exposition format 0.0.4.

Counters, gauges (set directly, or computed by a callback at scrape time), summaries without
quantiles (_sum and _count) and histograms. prometheus_client holds every value (thread-safe: the
MQTT client thread counts too) in its own CollectorRegistry (`Registry.collector_registry`, usable
with any of its exporters). This module adds what the gateway asks of a metric on top: label names
and allowed label values checked on every update (a typo is an error, not a new series), a gauge
callback that fails reading NaN (and one log line) instead of breaking the scrape, and values read
back by label. The text is prometheus_client's own exposition, without `_created` series.

Label values are keyword arguments; the value comes first and is positional-only, so any label
name is allowed: ``messages.inc(source="mqtt", outcome="accepted")``,
``queue_depth.set_function(queue.qsize, source="http")``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Final, TypeVar

import prometheus_client as prom
from prometheus_client.metrics import MetricWrapperBase

# `_created` series (a counter's creation time) only add noise to every scrape of a daemon.
prom.disable_created_metrics()  # type: ignore[no-untyped-call]

log = logging.getLogger(__name__)

# What generate_latest writes (the 0.0.4 text format), as prometheus_client names it.
CONTENT_TYPE: Final = prom.exposition.CONTENT_TYPE_PLAIN_0_0_4

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelKey = tuple[str, ...]
Sample = tuple[str, LabelKey, float]  # name suffix, label values, value


class _Family(ABC):
    """One metric name: its help, type, label names and one series per label-value tuple."""

    kind: str = "untyped"
    _suffixes: Mapping[str, str] = {"": ""}  # prometheus_client sample suffix -> ours

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        if isinstance(labelnames, str):
            # A lone string is a collection of characters; that is never what was meant.
            raise TypeError(f"metric {name!r}: give label names as a tuple, not a string")
        if not _METRIC_NAME.match(name):
            raise ValueError(f"metric {name!r}: not a valid Prometheus metric name")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"metric {name!r}: {label!r} is not a valid label name")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"metric {name!r}: repeated label name in {list(labelnames)}")
        self.name = name
        self.help = help_text
        self.labelnames: LabelKey = tuple(labelnames)
        self._labelset = frozenset(labelnames)
        self._allowed = {k: frozenset(v) for k, v in (allowed or {}).items()}
        unknown = set(self._allowed) - set(self.labelnames)
        if unknown:
            raise ValueError(f"metric {name!r}: restricts unknown labels {sorted(unknown)}")
        self._lock = threading.Lock()
        self._children: dict[LabelKey, MetricWrapperBase] = {}
        self.metric = self._make()

    @abstractmethod
    def _make(self) -> MetricWrapperBase:
        """The prometheus_client metric that holds this family's values."""

    def _key(self, labels: Mapping[str, str]) -> LabelKey:
        if labels.keys() != self._labelset:
            raise ValueError(
                f"metric {self.name!r} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        for label, allowed in self._allowed.items():
            if labels[label] not in allowed:
                raise ValueError(
                    f"metric {self.name!r}: {label}={labels[label]!r} is not one of "
                    f"{sorted(allowed)}"
                )
        return tuple(labels[n] for n in self.labelnames)

    def _child(self, key: LabelKey) -> MetricWrapperBase:
        # Cached: prometheus_client's labels() costs a lock and a validation per call.
        child = self._children.get(key)
        if child is None:
            child = self.metric.labels(*key) if key else self.metric
            self._children[key] = child
        return child

    def samples(self) -> list[Sample]:
        """Every series of this family, for rendering (from prometheus_client's collect)."""
        out: list[Sample] = []
        for family in self.metric.collect():
            for sample in family.samples:
                suffix = self._suffix(family.name, sample.name)
                if suffix is None:
                    continue
                key = tuple(sample.labels[n] for n in self.labelnames)
                out.append((suffix, key, float(sample.value)))
        return out

    def _suffix(self, family: str, sample: str) -> str | None:
        return self._suffixes.get(sample[len(family) :])

    def _value(self, key: LabelKey, suffix: str, default: float) -> float:
        for got_suffix, got_key, value in self.samples():
            if got_key == key and got_suffix == suffix:
                return value
        return default


class Counter(_Family):
    """A value that only goes up (restarts reset it; Prometheus's rate() copes)."""

    kind = "counter"
    _suffixes: Mapping[str, str] = {"_total": ""}  # its `_created` series is left out

    def _make(self) -> MetricWrapperBase:
        # prometheus_client names a counter's family without "_total" and adds it to samples.
        return prom.Counter(
            self.name.removesuffix("_total"), self.help, self.labelnames, registry=None
        )

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        if not amount >= 0:  # also rejects NaN
            raise ValueError(f"metric {self.name!r}: a counter cannot change by {amount}")
        key = self._key(labels)
        self._child(key).inc(amount)  # type: ignore[attr-defined]

    def value(self, **labels: str) -> float:
        """The current value (0 for a series never incremented)."""
        return self._value(self._key(labels), "", 0.0)


class Gauge(_Family):
    """A value that goes up and down: set directly, or read from a callback at scrape time."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labelnames, allowed)
        self._functions: dict[LabelKey, Callable[[], float]] = {}
        self._failed: set[LabelKey] = set()
        self._on_rebuild: Callable[[MetricWrapperBase, MetricWrapperBase], None] | None = None

    def _make(self) -> MetricWrapperBase:
        return prom.Gauge(self.name, self.help, self.labelnames, registry=None)

    def set(self, value: float, /, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            if self._functions.pop(key, None) is not None:
                self._drop_child(key)  # prometheus_client ignores set() once a function is set
            self._child(key).set(float(value))  # type: ignore[attr-defined]

    def set_function(self, func: Callable[[], float], /, **labels: str) -> None:
        """Evaluate `func` at every scrape (e.g. a queue's depth), replacing any set value."""
        key = self._key(labels)

        def guarded() -> float:
            try:
                return float(func())
            except Exception:
                # One broken callback must not break the scrape: its series is left out.
                log.exception(
                    "metric %s%s: callback failed",
                    self.name,
                    dict(zip(self.labelnames, key, strict=True)),
                )
                self._failed.add(key)
                return math.nan

        with self._lock:
            self._functions[key] = func
            self._child(key).set_function(guarded)  # type: ignore[attr-defined]

    def remove(self, **labels: str) -> None:
        """Drop a series (a source that has gone away)."""
        key = self._key(labels)
        with self._lock:
            self._functions.pop(key, None)
            self._drop_child(key)

    def _drop_child(self, key: LabelKey) -> None:
        self._children.pop(key, None)
        if key:
            with contextlib.suppress(KeyError):  # never set: nothing to drop
                self.metric.remove(*key)
            return
        # The one series of an unlabelled gauge cannot be removed: make a fresh metric.
        old, self.metric = self.metric, self._make()
        if self._on_rebuild is not None:
            self._on_rebuild(old, self.metric)

    def value(self, **labels: str) -> float:
        """The current value (0 for a series never set); a callback is evaluated now."""
        key = self._key(labels)
        func = self._functions.get(key)
        if func is not None:
            return float(func())
        return self._value(key, "", 0.0)

    def samples(self) -> list[Sample]:
        self._failed.clear()
        out = super().samples()
        failed = set(self._failed)
        return [s for s in out if s[1] not in failed]


class _Observed(_Family):
    """Observations kept as a running _sum and _count (and whatever the kind adds)."""

    _suffixes: Mapping[str, str] = {"_sum": "_sum", "_count": "_count"}
    _reserved: str  # the label name the exposition adds to this kind's samples

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        if self._reserved in labelnames:
            raise ValueError(f"metric {name!r}: {self._reserved!r} is reserved in a {self.kind}")
        super().__init__(name, help_text, labelnames, allowed)

    def observe(self, value: float, /, **labels: str) -> None:
        key = self._key(labels)
        self._child(key).observe(value)  # type: ignore[attr-defined]

    def sum_and_count(self, **labels: str) -> tuple[float, int]:
        key = self._key(labels)
        return self._value(key, "_sum", 0.0), int(self._value(key, "_count", 0.0))


class Summary(_Observed):
    """Observations as a running sum and count (no quantiles): enough for averages and rates."""

    kind = "summary"
    _reserved = "quantile"

    def _make(self) -> MetricWrapperBase:
        return prom.Summary(self.name, self.help, self.labelnames, registry=None)

    @contextmanager
    def time(self, **labels: str) -> Iterator[None]:
        """Observe the seconds the ``with`` block took (also when it raises)."""
        self._key(labels)  # fail before the block runs, not after
        start = perf_counter()
        try:
            yield
        finally:
            self.observe(perf_counter() - start, **labels)


class Histogram(_Observed):
    """Observations counted into fixed buckets (cumulative `_bucket{le=...}`), with _sum and
    _count: a dashboard's histogram_quantile() reads percentiles from them."""

    kind = "histogram"
    _reserved = "le"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
        *,
        buckets: Collection[float],
    ) -> None:
        self.buckets = tuple(sorted(buckets))  # before _make, which the base calls
        super().__init__(name, help_text, labelnames, allowed)

    def _make(self) -> MetricWrapperBase:
        return prom.Histogram(
            self.name, self.help, self.labelnames, registry=None, buckets=self.buckets
        )


_F = TypeVar("_F", bound=_Family)


class Registry:
    """The metrics of one process, rendered for a scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self.collector_registry = prom.CollectorRegistry(auto_describe=True)

    def counter(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> Counter:
        return self._add(Counter(name, help_text, labelnames, allowed))

    def gauge(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> Gauge:
        gauge = self._add(Gauge(name, help_text, labelnames, allowed))
        gauge._on_rebuild = self._replace  # the registry keeps the gauge's metric registered
        return gauge

    def summary(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> Summary:
        return self._add(Summary(name, help_text, labelnames, allowed))

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
        *,
        buckets: Collection[float],
    ) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, allowed, buckets=buckets))

    def _add(self, family: _F) -> _F:
        with self._lock:
            if family.name in self._families:
                raise ValueError(f"metric {family.name!r} is already registered")
            self.collector_registry.register(family.metric)
            self._families[family.name] = family
        return family

    def _replace(self, old: MetricWrapperBase, new: MetricWrapperBase) -> None:
        with self._lock:
            self.collector_registry.unregister(old)
            self.collector_registry.register(new)

    def render(self) -> str:
        """The text exposition, written by prometheus_client's own exporter."""
        return prom.generate_latest(self.collector_registry).decode()


MESSAGE_OUTCOMES: Final = (
    "accepted",
    "partial",
    "duplicate",
    "decode_error",
    "envelope_error",
    "unknown_device",
    "rejected",
    "overflow",
    "mac_only",
)


@dataclass(frozen=True)
class GatewayMetrics:
    """Every metric the gateway exports, typed, so callers cannot misspell a name."""

    registry: Registry
    messages: Counter
    decode_errors: Counter
    duplicates: Counter
    unknown_devices: Counter
    sensors_stale: Gauge
    queue_depth: Gauge
    queue_overflow: Counter
    state_writes: Counter
    state_write_seconds: Summary
    mqtt_connected: Gauge
    downlinks: Counter
    bacnet_fd_registered: Gauge
    modbus_requests: Counter
    mac_only: Counter
    line_counts_refused: Counter


def default_metrics(registry: Registry | None = None) -> GatewayMetrics:
    """Register the gateway's metrics in `registry` (a fresh one unless given)."""
    r = Registry() if registry is None else registry
    return GatewayMetrics(
        registry=r,
        messages=r.counter(
            "vs121gw_messages_total",
            "Messages received, by source and what became of them.",
            ("source", "outcome"),
            allowed={"outcome": MESSAGE_OUTCOMES},
        ),
        decode_errors=r.counter(
            "vs121gw_decode_errors_total",
            "Payloads from a known sensor that could not be fully decoded.",
            ("sensor",),
        ),
        duplicates=r.counter(
            "vs121gw_duplicates_total",
            "Reports dropped as repeats of one already applied.",
            ("sensor",),
        ),
        unknown_devices=r.counter(
            "vs121gw_unknown_devices_total",
            "Messages from devices that are not in the configuration.",
        ),
        sensors_stale=r.gauge(
            "vs121gw_sensors_stale",
            "Sensors that have not reported within their stale time.",
        ),
        queue_depth=r.gauge(
            "vs121gw_queue_depth",
            "Messages waiting in a source's queue.",
            ("source",),
        ),
        queue_overflow=r.counter(
            "vs121gw_queue_overflow_total",
            "Messages dropped because a source's queue was full.",
            ("source",),
        ),
        state_writes=r.counter(
            "vs121gw_state_writes_total",
            "Times the sensor state was written to disk.",
        ),
        state_write_seconds=r.summary(
            "vs121gw_state_write_seconds",
            "Time spent writing the sensor state to disk.",
        ),
        mqtt_connected=r.gauge(
            "vs121gw_mqtt_connected",
            "1 while connected to the MQTT broker, else 0.",
        ),
        downlinks=r.counter(
            "vs121gw_downlinks_total",
            "Downlink commands sent to sensors, by outcome.",
            ("sensor", "outcome"),
        ),
        bacnet_fd_registered=r.gauge(
            "vs121gw_bacnet_fd_registered",
            "1 while registered as a foreign device with the BBMD, else 0.",
        ),
        modbus_requests=r.counter(
            "vs121gw_modbus_requests_total",
            "Modbus requests answered, by transport and outcome.",
            ("transport", "outcome"),
        ),
        mac_only=r.counter(
            "vs121gw_mac_only_total",
            "Uplinks with MAC commands only (fPort 0).",
            ("sensor",),
        ),
        line_counts_refused=r.counter(
            "vs121gw_lines_refused_total",
            "Reports without a usable time: line counts left out.",
            ("sensor",),
        ),
    )


@dataclass(frozen=True)
class RelayMetrics:
    """The overcrowding alarm rules' metrics, registered only when rules are configured."""

    alarm_active: Gauge
    output_errors: Counter
    output_fault: Gauge


def relay_metrics(registry: Registry) -> RelayMetrics:
    return RelayMetrics(
        alarm_active=registry.gauge(
            "vs121gw_alarm_active",
            "1 while an overcrowding alarm rule is in alarm, else 0.",
            ("rule",),
        ),
        output_errors=registry.counter(
            "vs121gw_relay_output_errors_total",
            "Failed attempts to drive an alarm rule's output (GPIO line or relay module).",
            ("rule",),
        ),
        output_fault=registry.gauge(
            "vs121gw_relay_output_fault",
            "1 while an alarm rule's output cannot be driven, else 0.",
            ("rule",),
        ),
    )


@dataclass(frozen=True)
class MqttMetrics:
    """The MQTT source's link and delivery events, and messages held back after a fault."""

    events: Counter
    faults: Counter


MQTT_EVENTS: Final = ("received", "connected", "disconnected", "connect_failed")
MQTT_FAULTS: Final = ("failed", "retried", "parked", "replayed")


def mqtt_metrics(registry: Registry) -> MqttMetrics:
    return MqttMetrics(
        events=registry.counter(
            "vs121gw_mqtt_events_total",
            "MQTT messages received into the queue, and connections made, lost and failed.",
            ("event",),
            allowed={"event": MQTT_EVENTS},
        ),
        faults=registry.counter(
            "vs121gw_mqtt_message_faults_total",
            "MQTT messages whose handling failed (left unacknowledged), retries, messages "
            "parked in the state directory after repeated failures, and parked messages "
            "processed at a later start.",
            ("event",),
            allowed={"event": MQTT_FAULTS},
        ),
    )


ACK_SOURCES: Final = ("mqtt", "http")
# From a loopback disk's few milliseconds to a stalled one's seconds.
ACK_BUCKETS: Final = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def ack_seconds(registry: Registry) -> Histogram:
    """How long a message waited for its acknowledgement, which comes once its effect is on disk:
    what a slow disk or a stalled loop costs the sources."""
    return registry.histogram(
        "vs121gw_ack_seconds",
        "Seconds from a message's arrival to its acknowledgement (MQTT PUBACK, HTTP 200).",
        ("source",),
        allowed={"source": ACK_SOURCES},
        buckets=ACK_BUCKETS,
    )


def refused_connections(registry: Registry) -> Counter:
    """Peers turned away: over a listener's connection cap, or not on its allow-list."""
    return registry.counter(
        "vs121gw_connections_refused_total",
        "Connections or requests refused, by listener and reason (limit, not_allowed).",
        ("listener", "reason"),
    )


def state_volume_metrics(
    registry: Registry, *, free: Callable[[], float], failing: Callable[[], float]
) -> None:
    """Room left on the state volume, and whether state writes are failing (computed at scrape)."""
    registry.gauge(
        "vs121gw_state_free_bytes",
        "Bytes free on the volume holding the state directory.",
    ).set_function(free)
    registry.gauge(
        "vs121gw_state_write_failing",
        "1 while the state cannot be written (nothing is acknowledged meanwhile), else 0.",
    ).set_function(failing)
