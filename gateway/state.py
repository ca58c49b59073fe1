"""Sensor state: applies decoded reports and owns every rule that keeps the numbers right.

Rules (each has a test):
- A report already applied (same dedup key) changes nothing.
- A value is replaced only by a report at least as new as the one it came from: historical records
  (0x20ce retransmissions) never overwrite newer present values.
- Line crossings reach the gateway's totals exactly once. Periodic reports (people_in/people_out)
  are authoritative and counted once per period, whether they arrive live or as history. Trigger
  reports (line_in/line_out) are added at once so totals move in real time, and are remembered as
  provisional; the next periodic report replaces the provisional crossings instead of adding to
  them. Totals never go down, except by a reset.
- Totals are 32-bit (they wrap at 2^32), persisted, and reset only by a command; history from
  before a reset is not counted after it.
- Freshness: a sensor silent for longer than its stale-after time is offline; its values are kept
  but flagged, and the transition is reported once each way.

The state is plain data; `gateway.store` persists it and the application wires it to the sinks.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from objects.catalog import Source
from objects.pointmap import SensorSpec, sensor_points

log = logging.getLogger("gateway.state")

TOTAL_MODULO = 1 << 32
SEEN_KEYS_KEPT = 1024  # about a week of 10-minute reports: covers any broker redelivery
PERIODS_KEPT = 2048
HISTORY_MATCH_WINDOW_S = 60.0  # a record matches a live report without sensor time this close
SECONDS_SATURATE = 65535
CLOCK_TRUST_S = 86400.0  # a live report's sensor time further off than this is ignored
STATE_VERSION = 1

STATUS_ONLINE = 0x1
STATUS_STALE = 0x2
STATUS_NEVER = 0x4

Value = int | float


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Report:
    """One decoded report for one configured sensor."""

    sensor_id: str
    data: Mapping[str, Any]
    received_at: float
    dedup_key: str | None = None
    fcnt: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """What changed for one sensor ("" is the gateway itself): the one message sinks receive."""

    sensor_id: str
    values: Mapping[str, Value]
    online: bool | None = None  # set only when freshness changed


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: Outcome
    problems: tuple[str, ...] = ()


@dataclass
class SensorState:
    """Everything the gateway knows and must remember about one sensor."""

    spec: SensorSpec
    stale_after: float
    # How close a history record's time must be to a live report that carried no sensor time
    # to be taken as the same report: half a reporting interval, at most a minute.
    match_window: float = 60.0
    values: dict[str, Value] = field(default_factory=dict)
    as_of: dict[str, float] = field(default_factory=dict)
    last_report: float | None = None
    online: bool = False
    total_in: int = 0
    total_out: int = 0
    provisional_in: int = 0
    provisional_out: int = 0
    reset_at: float | None = None
    # (time, exact): exact when the time came from the sensor's clock.
    periods: list[tuple[float, bool]] = field(default_factory=list)
    triggers: list[tuple[float, bool]] = field(default_factory=list)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    max_fcnt: int | None = None
    applied_seq: int = 0  # last journal record reflected in this state

    # -- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "id": self.spec.id,
            "values": self.values,
            "as_of": self.as_of,
            "last_report": self.last_report,
            "total_in": self.total_in,
            "total_out": self.total_out,
            "provisional_in": self.provisional_in,
            "provisional_out": self.provisional_out,
            "reset_at": self.reset_at,
            "periods": self.periods,
            "triggers": self.triggers,
            "seen": list(self.seen),
            "max_fcnt": self.max_fcnt,
            "applied_seq": self.applied_seq,
        }

    def load_json(self, doc: Mapping[str, Any]) -> None:
        """Restore from `to_json` output; raises ValueError/TypeError/KeyError if malformed."""
        if doc.get("version") != STATE_VERSION or doc.get("id") != self.spec.id:
            raise ValueError("state file is for another version or sensor")
        known = {p.key for p in sensor_points(self.spec)}
        self.values = {k: _num(v) for k, v in doc["values"].items() if k in known}
        self.as_of = {k: float(v) for k, v in doc["as_of"].items() if k in self.values}
        self.last_report = _opt_float(doc["last_report"])
        self.total_in = _count(doc["total_in"])
        self.total_out = _count(doc["total_out"])
        self.provisional_in = _count(doc["provisional_in"])
        self.provisional_out = _count(doc["provisional_out"])
        self.reset_at = _opt_float(doc["reset_at"])
        self.periods = [(float(t), bool(e)) for t, e in doc["periods"]][-PERIODS_KEPT:]
        self.triggers = [(float(t), bool(e)) for t, e in doc["triggers"]][-PERIODS_KEPT:]
        self.seen = OrderedDict((str(k), None) for k in doc["seen"][-SEEN_KEYS_KEPT:])
        mf = doc["max_fcnt"]
        self.max_fcnt = None if mf is None else int(mf)
        self.applied_seq = _count(doc["applied_seq"])


def _num(v: object) -> Value:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise TypeError(f"not a number: {v!r}")
    return v


def _count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError(f"not a count: {v!r}")
    return v


def _opt_float(v: object) -> float | None:
    return None if v is None else float(_num(v))


def _history_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "timestamp"}


class GatewayState:
    """All sensors' state, keyed by sensor id. Single-threaded: call from the event loop."""

    def __init__(
        self,
        sensors: Sequence[tuple[SensorSpec, float, float]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self.sensors: dict[str, SensorState] = {
            spec.id: SensorState(
                spec=spec, stale_after=stale, match_window=min(HISTORY_MATCH_WINDOW_S, interval / 2)
            )
            for spec, stale, interval in sensors
        }
        self._keys: dict[str, frozenset[str]] = {
            spec.id: frozenset(
                p.key for p in sensor_points(spec) if p.point.source is Source.SENSOR
            )
            for spec, _, _ in sensors
        }
        self._subscribers: list[Callable[[Change], None]] = []
        self.dirty: set[str] = set()
        self.gateway_values: dict[str, Value] = {}
        # Every state-changing event, in order, for the write-ahead journal (gateway.store).
        self.seq = 0
        self.journal: list[dict[str, Any]] = []
        self.replaying = False  # set while the store replays the journal: no operator news

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], None]) -> None:
        self._subscribers.append(callback)

    def _emit(self, change: Change) -> None:
        for cb in self._subscribers:
            cb(change)

    # -- reports ----------------------------------------------------------------------------

    def apply(self, report: Report) -> ApplyResult:
        s = self.sensors[report.sensor_id]
        if report.dedup_key is not None and self._is_duplicate(s, report):
            return ApplyResult(Outcome.DUPLICATE)
        self.seq += 1
        s.applied_seq = self.seq
        self.journal.append(
            {
                "s": self.seq,
                "id": report.sensor_id,
                "d": report.data,
                "t": report.received_at,
                "k": report.dedup_key,
                "f": report.fcnt,
            }
        )
        return self._apply_new(s, report)

    def _apply_new(self, s: SensorState, report: Report) -> ApplyResult:
        problems: list[str] = []
        changed: dict[str, Value] = {}
        data = report.data
        sensor_ts = _plausible_time(data.get("timestamp"), report.received_at)
        exact = sensor_ts is not None
        when = sensor_ts if sensor_ts is not None else report.received_at

        self._apply_values(s, data, when, changed, problems)
        self._count_live_lines(s, data, when, exact)
        for record in data.get("history") or ():
            if isinstance(record, Mapping) and isinstance(record.get("timestamp"), int):
                rts = float(record["timestamp"])
                self._apply_values(s, _history_fields(record), rts, changed, problems)
                self._count_history_lines(s, record, rts)

        previous = s.last_report
        s.last_report = max(s.last_report or 0.0, report.received_at)
        changed.update(self._derived(s, report.received_at))
        was_online = s.online
        s.online = True
        self.dirty.add(s.spec.id)
        self._emit(Change(s.spec.id, changed, online=True if not was_online else None))
        if not was_online and not self.replaying:
            if previous is None:
                log.info("sensor %s: first report", s.spec.id)
            else:
                silent = report.received_at - previous
                log.info("sensor %s: reporting again after %.0f s", s.spec.id, silent)
        return ApplyResult(Outcome.APPLIED, tuple(problems))

    def _is_duplicate(self, s: SensorState, report: Report) -> bool:
        key = report.dedup_key
        assert key is not None
        if key in s.seen:
            return True
        fcnt = report.fcnt
        if fcnt is not None:
            if s.max_fcnt is not None and fcnt < s.max_fcnt:
                # Counter went back and this frame is new: the device rejoined and restarted its
                # frame counter. Forget frame-counter keys so the new frames are not mistaken.
                if not self.replaying:
                    log.info(
                        "sensor %s: frame counter reset (%d after %d)",
                        s.spec.id,
                        fcnt,
                        s.max_fcnt,
                    )
                for k in [k for k in s.seen if k.startswith("fc:")]:
                    del s.seen[k]
            s.max_fcnt = fcnt
        s.seen[key] = None
        while len(s.seen) > SEEN_KEYS_KEPT:
            s.seen.popitem(last=False)
        return False

    def _apply_values(
        self,
        s: SensorState,
        data: Mapping[str, Any],
        when: float,
        changed: dict[str, Value],
        problems: list[str],
    ) -> None:
        keys = self._keys[s.spec.id]
        for key, value in data.items():
            if key not in keys:
                if key.startswith("region_") and _nonzero(value):
                    problems.append(f"{key}={value!r} for a region that is not mapped")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{key}: expected a number, got {type(value).__name__}")
                continue
            if when < s.as_of.get(key, -math.inf):
                continue  # older than what we show: history never overwrites newer values
            s.as_of[key] = when
            if s.values.get(key) != value:
                s.values[key] = value
                changed[key] = value

    # -- line counting ----------------------------------------------------------------------

    def _count_live_lines(
        self, s: SensorState, data: Mapping[str, Any], when: float, exact: bool
    ) -> None:
        if "people_in" in data or "people_out" in data:
            self._add_period(s, data, when, exact, live=True)
        if "line_in" in data or "line_out" in data:
            self._add_trigger(s, data, when, exact, live=True)

    def _count_history_lines(self, s: SensorState, record: Mapping[str, Any], when: float) -> None:
        if s.reset_at is not None and when < s.reset_at:
            return  # counted before the reset, or belongs to the time before it
        if "people_in" in record or "people_out" in record:
            self._add_period(s, record, when, True, live=False)
        if "line_in" in record or "line_out" in record:
            self._add_trigger(s, record, when, True, live=False)

    @staticmethod
    def _matches(seen: list[tuple[float, bool]], when: float, *, live: bool, window: float) -> bool:
        """Was the report at `when` already counted?

        Live reports are deduplicated by their message key, so they only match an entry with the
        very same sensor time (a history record of that report that came first). A history record
        matches an equal sensor time, or a live report without sensor time within the window.
        """
        for t, t_exact in reversed(seen):
            if t_exact:
                if t == when:
                    return True
            elif not live and abs(t - when) <= window:
                return True
        return False

    def _add_period(
        self, s: SensorState, d: Mapping[str, Any], when: float, exact: bool, *, live: bool
    ) -> None:
        if (exact or not live) and self._matches(s.periods, when, live=live, window=s.match_window):
            return
        n_in, n_out = _count_or_zero(d.get("people_in")), _count_or_zero(d.get("people_out"))
        # The provisional (trigger) crossings belong to this period: replace, don't add.
        used_in, used_out = min(n_in, s.provisional_in), min(n_out, s.provisional_out)
        s.provisional_in -= used_in
        s.provisional_out -= used_out
        s.total_in += n_in - used_in
        s.total_out += n_out - used_out
        s.periods.append((when, exact))
        del s.periods[:-PERIODS_KEPT]

    def _add_trigger(
        self, s: SensorState, d: Mapping[str, Any], when: float, exact: bool, *, live: bool
    ) -> None:
        if (exact or not live) and self._matches(
            s.triggers, when, live=live, window=s.match_window
        ):
            return
        n_in, n_out = _count_or_zero(d.get("line_in")), _count_or_zero(d.get("line_out"))
        s.total_in += n_in
        s.total_out += n_out
        s.provisional_in += n_in
        s.provisional_out += n_out
        s.triggers.append((when, exact))
        del s.triggers[:-PERIODS_KEPT]

    # -- derived values, freshness, commands ------------------------------------------------

    def _derived(self, s: SensorState, now: float) -> dict[str, Value]:
        out: dict[str, Value] = {
            "gateway_total_in": s.total_in % TOTAL_MODULO,
            "gateway_total_out": s.total_out % TOTAL_MODULO,
            "line_occupancy": min(max(0, s.total_in - s.total_out), SECONDS_SATURATE),
        }
        out.update(self._freshness_values(s, now))
        changed = {k: v for k, v in out.items() if s.values.get(k) != v}
        s.values.update(changed)
        return changed

    @staticmethod
    def _freshness_values(s: SensorState, now: float) -> dict[str, Value]:
        if s.last_report is None:
            return {"online": 0, "status": STATUS_NEVER, "seconds_since_report": SECONDS_SATURATE}
        age = max(0.0, now - s.last_report)
        online = age <= s.stale_after
        return {
            "online": int(online),
            "status": STATUS_ONLINE if online else STATUS_STALE,
            "seconds_since_report": min(int(age), SECONDS_SATURATE),
            "last_report": s.last_report,
        }

    def tick(self, now: float | None = None) -> None:
        """Re-evaluate freshness (call about once a second); emits changes and transitions."""
        now = self._clock() if now is None else now
        for s in self.sensors.values():
            values = self._freshness_values(s, now)
            online = bool(values["online"])
            changed = {k: v for k, v in values.items() if s.values.get(k) != v}
            transition: bool | None = None
            if online != s.online:
                transition = online
                s.online = online
                if not online and s.last_report is not None:
                    log.warning(
                        "sensor %s: silent for %.0f s (stale after %.0f s); values flagged stale",
                        s.spec.id,
                        now - s.last_report,
                        s.stale_after,
                    )
            if changed or transition is not None:
                s.values.update(changed)
                self._emit(Change(s.spec.id, changed, online=transition))

    def publish_gateway(self, values: Mapping[str, Value]) -> None:
        """Emit the gateway's own points (heartbeat, uptime, ...) as a Change for sensor ""."""
        changed = {k: v for k, v in values.items() if self.gateway_values.get(k) != v}
        if changed:
            self.gateway_values.update(changed)
            self._emit(Change("", changed))

    def reset_totals(self, sensor_id: str) -> None:
        """Zero the gateway's totals for one sensor (a command from BACnet, Modbus or the CLI)."""
        s = self.sensors[sensor_id]
        self.seq += 1
        s.applied_seq = self.seq
        at = self._clock()
        self.journal.append({"s": self.seq, "id": sensor_id, "reset": at})
        self._reset(s, at)
        self.dirty.add(sensor_id)
        self._emit(Change(sensor_id, self._derived(s, self._clock())))
        log.info("sensor %s: totals reset", sensor_id)

    @staticmethod
    def _reset(s: SensorState, at: float) -> None:
        s.total_in = s.total_out = s.provisional_in = s.provisional_out = 0
        s.reset_at = at

    def replay(self, record: Mapping[str, Any]) -> bool:
        """Re-apply one journal record after a restart; False if already in the snapshot.

        Raises KeyError/TypeError/ValueError for a malformed record."""
        seq = _count(record["s"])
        self.seq = max(self.seq, seq)
        s = self.sensors.get(record["id"])
        if s is None or seq <= s.applied_seq:
            return False  # a sensor no longer configured, or already in its snapshot
        s.applied_seq = seq
        self.dirty.add(s.spec.id)
        if "reset" in record:
            self._reset(s, float(record["reset"]))
            s.values.update(self._derived(s, self._clock()))
            return True
        data = record["d"]
        if not isinstance(data, Mapping):
            raise TypeError("journal record data is not an object")
        key = record["k"]
        fcnt = record["f"]
        report = Report(
            s.spec.id,
            data,
            float(record["t"]),
            None if key is None else str(key),
            None if fcnt is None else int(fcnt),
        )
        if report.dedup_key is not None:
            self._is_duplicate(s, report)  # records the key, so a redelivery is recognised
        self._apply_new(s, report)
        return True

    def restore(self, sensor_id: str, doc: Mapping[str, Any]) -> None:
        s = self.sensors[sensor_id]
        s.load_json(doc)
        self.seq = max(self.seq, s.applied_seq)
        s.online = False  # decided by the first tick, against the real clock
        self.tick(self._clock())
        s.values.update(self._derived(s, self._clock()))

    def current(self, sensor_id: str) -> Mapping[str, Value]:
        return self.sensors[sensor_id].values

    def ids(self) -> Iterable[str]:
        return self.sensors.keys()


def _plausible_time(v: object, received_at: float) -> float | None:
    """The sensor's own time for a live report, unless its clock is clearly wrong (unsynced
    sensors send 0 or a date far off); then the receive time orders the report instead."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if abs(float(v) - received_at) > CLOCK_TRUST_S:
        return None
    return float(v)


def _count_or_zero(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return 0
    return v


def _nonzero(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v != 0
