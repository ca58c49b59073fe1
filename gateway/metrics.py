"""In-process metrics in the Prometheus text exposition format 0.0.4.

Counters, gauges (set directly, or computed by a callback at scrape time) and summaries without
quantiles (_sum and _count). Updates are thread-safe: the MQTT client thread counts too.

Label values are keyword arguments; the value comes first and is positional-only, so any label
name is allowed: ``messages.inc(source="mqtt", outcome="accepted")``,
``queue_depth.set_function(queue.qsize, source="http")``.
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelKey = tuple[str, ...]
Sample = tuple[str, LabelKey, float]  # name suffix, label values, value


class _Family(ABC):
    """One metric name: its help, type, label names and one series per label-value tuple."""

    kind: str = "untyped"

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

    @abstractmethod
    def samples(self) -> list[Sample]:
        """Every series of this family, for rendering."""


class Counter(_Family):
    """A value that only goes up (restarts reset it; Prometheus's rate() copes)."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labelnames, allowed)
        # An unlabelled counter shows 0 from the start, so a scrape never misses the series.
        self._values: dict[LabelKey, float] = {} if self.labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        if not amount >= 0:  # also rejects NaN
            raise ValueError(f"metric {self.name!r}: a counter cannot change by {amount}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current value (0 for a series never incremented)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def samples(self) -> list[Sample]:
        with self._lock:
            return [("", k, v) for k, v in self._values.items()]


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
        self._values: dict[LabelKey, float | Callable[[], float]] = (
            {} if self.labelnames else {(): 0.0}
        )

    def set(self, value: float, /, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def set_function(self, func: Callable[[], float], /, **labels: str) -> None:
        """Evaluate `func` at every scrape (e.g. a queue's depth), replacing any set value."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = func

    def remove(self, **labels: str) -> None:
        """Drop a series (a source that has gone away)."""
        key = self._key(labels)
        with self._lock:
            self._values.pop(key, None)

    def value(self, **labels: str) -> float:
        """The current value (0 for a series never set); a callback is evaluated now."""
        key = self._key(labels)
        with self._lock:
            current = self._values.get(key, 0.0)
        return float(current()) if callable(current) else current

    def samples(self) -> list[Sample]:
        with self._lock:
            current = list(self._values.items())
        # Callbacks run outside the lock: they may be slow or take locks of their own.
        out: list[Sample] = []
        for key, v in current:
            if not callable(v):
                out.append(("", key, v))
                continue
            try:
                out.append(("", key, float(v())))
            except Exception:
                # One broken callback must not break the scrape: its series is left out.
                log.exception(
                    "metric %s%s: callback failed",
                    self.name,
                    dict(zip(self.labelnames, key, strict=True)),
                )
        return out


class Summary(_Family):
    """Observations as a running sum and count (no quantiles): enough for averages and rates."""

    kind = "summary"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        if "quantile" in labelnames:
            raise ValueError(f"metric {name!r}: 'quantile' is reserved in a summary")
        super().__init__(name, help_text, labelnames, allowed)
        self._values: dict[LabelKey, tuple[float, int]] = {} if self.labelnames else {(): (0.0, 0)}

    def observe(self, value: float, /, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            total, count = self._values.get(key, (0.0, 0))
            self._values[key] = (total + value, count + 1)

    @contextmanager
    def time(self, **labels: str) -> Iterator[None]:
        """Observe the seconds the ``with`` block took (also when it raises)."""
        self._key(labels)  # fail before the block runs, not after
        start = perf_counter()
        try:
            yield
        finally:
            self.observe(perf_counter() - start, **labels)

    def sum_and_count(self, **labels: str) -> tuple[float, int]:
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, (0.0, 0))

    def samples(self) -> list[Sample]:
        with self._lock:
            current = list(self._values.items())
        out: list[Sample] = []
        for key, (total, count) in current:
            out.append(("_sum", key, total))
            out.append(("_count", key, float(count)))
        return out


_F = TypeVar("_F", bound=_Family)


class Registry:
    """The metrics of one process, rendered for a scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

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
        return self._add(Gauge(name, help_text, labelnames, allowed))

    def summary(
        self,
        name: str,
        help_text: str,
        labelnames: Collection[str] = (),
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> Summary:
        return self._add(Summary(name, help_text, labelnames, allowed))

    def _add(self, family: _F) -> _F:
        with self._lock:
            if family.name in self._families:
                raise ValueError(f"metric {family.name!r} is already registered")
            self._families[family.name] = family
        return family

    def render(self) -> str:
        """The text exposition: families by name, series by label values, one trailing newline."""
        with self._lock:
            families = sorted(self._families.values(), key=lambda f: f.name)
        lines: list[str] = []
        for family in families:
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            # Sorting by label values keeps _sum before _count within each series.
            for suffix, key, value in sorted(family.samples(), key=lambda s: s[1]):
                lines.append(
                    f"{family.name}{suffix}{_labels(family.labelnames, key)} {_number(value)}"
                )
        return "\n".join(lines) + "\n" if lines else ""


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: LabelKey, values: LabelKey) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    # Whole numbers (counts, mostly) print without ".0" while they are exact in a float.
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


MESSAGE_OUTCOMES: Final = (
    "accepted",
    "partial",
    "duplicate",
    "decode_error",
    "envelope_error",
    "unknown_device",
    "rejected",
    "overflow",
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
MQTT_FAULTS: Final = ("failed", "retried", "parked")


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
            "MQTT messages whose handling failed (left unacknowledged), retries, and messages "
            "parked in the state directory after repeated failures.",
            ("event",),
            allowed={"event": MQTT_FAULTS},
        ),
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
