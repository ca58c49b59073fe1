"""Sensor state: applies decoded reports and owns every rule that keeps the numbers right.

Rules (each has a test):
- A report already applied (same dedup key) changes nothing.
- A frame counter that steps back a little is a late frame; one that restarts near zero (or
  jumps back a long way) is a rejoin, after which frame-counter keys from before are forgotten.
- A value is replaced only by a report at least as new as the one it came from: historical records
  (0x20ce retransmissions) never overwrite newer present values. Live reports are ordered by
  arrival (the newest is the present, even if the wall clock stepped back in between); a history
  record by its own time, but never later than its arrival, so a sensor clock that runs fast
  cannot freeze the present values.
- Line crossings reach the gateway's totals exactly once: see `gateway.linecount`. Totals are
  32-bit (they wrap at 2^32), persisted, and reset only by a command. Daily totals (today and
  yesterday) follow them by the day a report was received: see `gateway.daily`.
- A value the sensor no longer sends (its reporting type changed) is kept but marked, and a
  region-only report gets its total as the sum of its regions: see `gateway.pointstatus`.
- Freshness: a sensor silent for longer than its stale-after time is offline; its values are kept
  but flagged, and the transition is reported once each way. Freshness is judged on the local
  receive time, measured on the monotonic clock (a wall-clock step is logged once and changes
  nothing), never on a time the message carries.

The state is plain data; `gateway.store` persists it and the application wires it to the sinks.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway import pointstatus
from gateway.daily import UTC_MIDNIGHT, DailyTotals, DayClock
from gateway.linecount import LineLedger
from objects.catalog import Model, ObjectType, Source
from objects.pointmap import SensorSpec, sensor_keys

log = logging.getLogger("gateway.state")

TOTAL_MODULO = 1 << 32
SEEN_KEYS_KEPT = 1024  # about a week of 10-minute reports: covers any broker redelivery
HISTORY_MATCH_WINDOW_S = 60.0  # a record matches a live report without sensor time this close
SECONDS_SATURATE = 65535
CLOCK_STEP_S = 2.0  # wall against monotonic: a larger jump between two ticks is a step
STATE_VERSION = 2
MAX_SENSOR_TIME = (1 << 32) - 1  # the protocol's timestamps are unsigned 32-bit seconds
# A frame counter going back by less than this (and not to near zero) is a late frame, not a
# rejoin: LoRaWAN counters only restart at a join, or wrap after a very long run.
FCNT_LATE_WINDOW = 1 << 15
FCNT_FRESH_JOIN = 16

STATUS_ONLINE = 0x1
STATUS_STALE = 0x2
STATUS_NEVER = 0x4
STATUS_NOT_REPORTED = 0x8  # some values are no longer reported (the reporting type changed)

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
    not_reported: frozenset[str] | None = None  # set only when it changed: see gateway.pointstatus


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: Outcome
    problems: tuple[str, ...] = ()


@dataclass
class SensorState:
    """Everything the gateway knows and must remember about one sensor."""

    spec: SensorSpec
    stale_after: float
    ledger: LineLedger
    values: dict[str, Value] = field(default_factory=dict)
    as_of: dict[str, float] = field(default_factory=dict)
    last_report: float | None = None
    online: bool = False
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    max_fcnt: int | None = None
    applied_seq: int = 0  # last journal record reflected in this state
    # When the newest report was heard, on the monotonic clock (not persisted: rebuilt from
    # last_report on restore). Freshness is measured on it, so a wall-clock step changes nothing.
    heard_at: float | None = None
    not_reported: set[str] = field(default_factory=set)  # see gateway.pointstatus
    daily: DailyTotals = field(default_factory=DailyTotals)

    # -- persistence ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "id": self.spec.id,
            "values": self.values,
            "as_of": self.as_of,
            "last_report": self.last_report,
            "lines": self.ledger.to_json(),
            "seen": list(self.seen),
            "max_fcnt": self.max_fcnt,
            "applied_seq": self.applied_seq,
            "not_reported": sorted(self.not_reported),
            "daily": self.daily.to_json(),
        }

    def load_json(self, doc: Mapping[str, Any]) -> None:
        """Restore from `to_json` output; raises ValueError/TypeError/KeyError if malformed."""
        if doc.get("version") != STATE_VERSION or doc.get("id") != self.spec.id:
            raise ValueError("state file is for another version or sensor")
        known = _known_keys(self.spec)
        self.values = {k: _num(v) for k, v in doc["values"].items() if k in known}
        self.as_of = {k: float(v) for k, v in doc["as_of"].items() if k in self.values}
        self.last_report = _opt_float(doc["last_report"])
        self.ledger.load_json(doc["lines"])
        self.seen = OrderedDict((str(k), None) for k in doc["seen"][-SEEN_KEYS_KEPT:])
        mf = doc["max_fcnt"]
        self.max_fcnt = None if mf is None else _count(mf)
        self.applied_seq = _count(doc["applied_seq"])
        self.not_reported = {str(k) for k in doc.get("not_reported", ()) if k in known}
        daily = doc.get("daily")
        self.daily = DailyTotals() if daily is None else DailyTotals.from_json(daily)


def _num(v: object) -> Value:
    if not is_number(v):
        raise TypeError(f"not a usable number: {v!r}")
    assert isinstance(v, int | float)
    return v


def is_number(v: object) -> bool:
    """A finite int or float of sane size (JSON allows 400-digit integers and 1e400)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -(1 << 63) < v < 1 << 63
    return isinstance(v, float) and math.isfinite(v)


def _count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
        raise TypeError(f"not a count: {v!r}")
    return v


def _opt_float(v: object) -> float | None:
    return None if v is None else float(_num(v))


def _history_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "timestamp"}


# Per sensor shape (model, regions, exclusions), not per sensor: thousands of sensors share a few.
@functools.lru_cache(maxsize=64)
def _keys_by_shape(
    model: Model, region_count: int, exclude: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    keys = sensor_keys(SensorSpec("", "", 0, model, region_count, exclude))
    every = frozenset(key for key, _ in keys)
    numeric = frozenset(
        key
        for key, point in keys
        if point.source is Source.SENSOR
        and point.object_type is not ObjectType.CHARACTERSTRING_VALUE
    )
    return every, numeric


def _known_keys(spec: SensorSpec) -> frozenset[str]:
    """Every point key of the sensor."""
    return _keys_by_shape(spec.model, spec.region_count, spec.exclude)[0]


def _numeric_sensor_keys(spec: SensorSpec) -> frozenset[str]:
    """The sensor's numeric values (text points show the device facts the command service
    keeps; the state holds numbers only)."""
    return _keys_by_shape(spec.model, spec.region_count, spec.exclude)[1]


class GatewayState:
    """All sensors' state, keyed by sensor id. Single-threaded: call from the event loop."""

    def __init__(
        self,
        sensors: Sequence[tuple[SensorSpec, float, float]],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
        day_clock: DayClock = UTC_MIDNIGHT,
    ) -> None:
        self._clock = clock
        # A test that injects one clock moves both; the daemon's wall clock may step, this not.
        self._mono = monotonic or (time.monotonic if clock is time.time else clock)
        self._wall_minus_mono: float | None = None
        self._day = day_clock
        self.sensors: dict[str, SensorState] = {
            spec.id: SensorState(
                spec=spec,
                stale_after=stale,
                ledger=LineLedger(
                    interval=interval,
                    window=min(HISTORY_MATCH_WINDOW_S, interval / 2),
                    modulo=accumulated_modulo(spec.model),
                ),
            )
            for spec, stale, interval in sensors
        }
        # The sensor's numeric values (text points show the device facts the command service
        # keeps; the state holds numbers only).
        self._keys: dict[str, frozenset[str]] = {
            spec.id: _numeric_sensor_keys(spec) for spec, _, _ in sensors
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
        data = pointstatus.with_derived_total(report.data)
        received = report.received_at
        sensor_time = _sensor_time(data.get("timestamp"))

        # Live values in receive order: the newest report is the present, whatever the wall
        # clock said when it came (it may have stepped back since the last one).
        live_when = max(received, max(s.as_of.values(), default=received))
        self._apply_values(s, data, live_when, changed, problems)
        keys = self._keys[s.spec.id]
        dropped = pointstatus.not_reported_after(
            [k for k in data if k in keys], keys, s.not_reported
        )
        not_reported = None
        if dropped != s.not_reported:
            s.not_reported = dropped
            not_reported = frozenset(dropped)
        before = s.ledger.total_in, s.ledger.total_out
        self._count_lines(s, data, sensor_time, received, history=False)
        history = data.get("history")
        if history is not None and not isinstance(history, list):
            problems.append("history: not a list; ignored")
            history = None
        for record in history or ():
            rts = _sensor_time(record.get("timestamp")) if isinstance(record, Mapping) else None
            if rts is None:
                problems.append("history record without a usable timestamp; ignored")
                continue
            fields = _history_fields(record)
            # Ordered by its own time, but never as newer than its arrival.
            self._apply_values(s, fields, min(rts, received), changed, problems)
            self._count_lines(s, record, rts, received, history=True)

        s.daily.add(
            self._day.day(received),
            max(0, s.ledger.total_in - before[0]),
            max(0, s.ledger.total_out - before[1]),
        )
        previous = s.last_report
        heard = self._heard_at(received)
        if s.heard_at is None or heard >= s.heard_at:
            s.heard_at = heard
            s.last_report = received
        changed.update(self._derived(s, self._mono()))
        was_online = s.online
        s.online = bool(s.values.get("online"))
        self.dirty.add(s.spec.id)
        transition = s.online if s.online != was_online else None
        self._emit(Change(s.spec.id, changed, online=transition, not_reported=not_reported))
        if transition and not self.replaying:
            if previous is None:
                log.info("sensor %s: first report", s.spec.id)
            else:
                log.info("sensor %s: reporting again after %.0f s", s.spec.id, received - previous)
        return ApplyResult(Outcome.APPLIED, tuple(problems))

    def _is_duplicate(self, s: SensorState, report: Report) -> bool:
        key = report.dedup_key
        assert key is not None
        if key in s.seen:
            return True
        fcnt = report.fcnt
        if fcnt is not None:
            last = s.max_fcnt
            if last is None or fcnt > last:
                s.max_fcnt = fcnt
            elif fcnt < last and (fcnt < FCNT_FRESH_JOIN or last - fcnt >= FCNT_LATE_WINDOW):
                # The device rejoined and restarted its frame counter (or it wrapped): forget
                # frame-counter keys so the new frames are not mistaken for old ones.
                if not self.replaying:
                    log.info(
                        "sensor %s: frame counter restarted (%d after %d)", s.spec.id, fcnt, last
                    )
                for k in [k for k in s.seen if k.startswith("fc:")]:
                    del s.seen[k]
                s.max_fcnt = fcnt
            # else: a late frame (e.g. redelivered after a reconnect); its key is kept below.
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
            if not is_number(value):
                problems.append(f"{key}: expected a number, got {_describe(value)}")
                continue
            if when < s.as_of.get(key, -math.inf):
                continue  # older than what we show: history never overwrites newer values
            s.as_of[key] = when
            if s.values.get(key) != value:
                s.values[key] = value
                changed[key] = value

    # -- line counting ----------------------------------------------------------------------

    @staticmethod
    def _count_lines(
        s: SensorState,
        d: Mapping[str, Any],
        sensor_time: float | None,
        received: float,
        *,
        history: bool,
    ) -> None:
        lines = s.ledger
        if sensor_time is not None and not history:
            lines.observe_clock(received, sensor_time)
        period: tuple[int, int] | None = None
        if "people_in" in d or "people_out" in d:
            period = _count_or_zero(d.get("people_in")), _count_or_zero(d.get("people_out"))
            start = _sensor_time(d.get("period_start")) if not history else None
            lines.period(received, sensor_time, *period, history=history, start=start)
        if "people_total_in" in d and "people_total_out" in d:
            acc_in, acc_out = d["people_total_in"], d["people_total_out"]
            if _is_count(acc_in) and _is_count(acc_out):
                lines.accumulated(
                    received, sensor_time, acc_in, acc_out, history=history, period=period
                )
        if "line_in" in d or "line_out" in d:
            lines.trigger(
                received,
                sensor_time,
                _count_or_zero(d.get("line_in")),
                _count_or_zero(d.get("line_out")),
                history=history,
            )

    # -- derived values, freshness, commands ------------------------------------------------

    def _heard_at(self, received: float) -> float:
        """A wall receive time as a monotonic time: now less how long ago it was (never ahead)."""
        return self._mono() - max(0.0, self._clock() - received)

    def _derived(self, s: SensorState, now: float) -> dict[str, Value]:
        """Totals and freshness; `now` is monotonic."""
        lines = s.ledger
        out: dict[str, Value] = {
            "gateway_total_in": lines.total_in % TOTAL_MODULO,
            "gateway_total_out": lines.total_out % TOTAL_MODULO,
            "line_occupancy": min(max(0, lines.total_in - lines.total_out), SECONDS_SATURATE),
        }
        s.daily.roll(self._day.day(now))
        out.update(s.daily.values())
        out.update(self._freshness_values(s, now))
        changed = {k: v for k, v in out.items() if s.values.get(k) != v}
        s.values.update(changed)
        return changed

    @staticmethod
    def _freshness_values(s: SensorState, now: float) -> dict[str, Value]:
        if s.last_report is None or s.heard_at is None:
            return {"online": 0, "status": STATUS_NEVER, "seconds_since_report": SECONDS_SATURATE}
        age = max(0.0, now - s.heard_at)
        online = age <= s.stale_after
        return {
            "online": int(online),
            "status": (STATUS_ONLINE if online else STATUS_STALE)
            | (STATUS_NOT_REPORTED if s.not_reported & s.values.keys() else 0),
            "seconds_since_report": min(int(age), SECONDS_SATURATE),
            "last_report": s.last_report,
        }

    def tick(self, now: float | None = None) -> None:
        """Re-evaluate freshness (call about once a second); emits changes and transitions.

        `now` is monotonic (default: the state's monotonic clock)."""
        now = self._mono() if now is None else now
        self._watch_clock()
        for s in self.sensors.values():
            self._tick_one(s, now)

    def _tick_one(self, s: SensorState, now: float) -> None:
        """Freshness and the day roll of one sensor (see `tick`)."""
        values = self._freshness_values(s, now)
        if s.daily.roll(self._day.day(now)):
            values.update(s.daily.values())
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
                    now - (s.heard_at or now),
                    s.stale_after,
                )
        if changed or transition is not None:
            s.values.update(changed)
            self._emit(Change(s.spec.id, changed, online=transition))

    def _watch_clock(self) -> None:
        """Log once per step when the wall clock jumps against the monotonic one."""
        offset = self._clock() - self._mono()
        last, self._wall_minus_mono = self._wall_minus_mono, offset
        if last is not None and abs(offset - last) >= CLOCK_STEP_S and not self.replaying:
            log.warning(
                "wall clock stepped %s by %.0f s; freshness and value order are unaffected "
                "(monotonic clock and receive order)",
                "back" if offset < last else "forward",
                abs(offset - last),
            )

    def publish_gateway(self, values: Mapping[str, Value]) -> None:
        """Emit the gateway's own points (heartbeat, uptime, ...) as a Change for sensor ""."""
        changed = {k: v for k, v in values.items() if self.gateway_values.get(k) != v}
        if changed:
            self.gateway_values.update(changed)
            self._emit(Change("", changed))

    def set_kept_values(self, sensor_id: str, values: Mapping[str, Value]) -> None:
        """Values the gateway keeps for a sensor outside its reports (the command delivery
        status): updated and emitted like any change, not journaled (their owner keeps them)."""
        s = self.sensors[sensor_id]
        known = _known_keys(s.spec)
        changed = {k: v for k, v in values.items() if k in known and s.values.get(k) != v}
        if changed:
            s.values.update(changed)
            self.dirty.add(sensor_id)
            self._emit(Change(sensor_id, changed))

    def reset_totals(self, sensor_id: str) -> None:
        """Zero the gateway's totals for one sensor (a command from BACnet, Modbus or the CLI)."""
        s = self.sensors[sensor_id]
        self.seq += 1
        s.applied_seq = self.seq
        at = self._clock()
        self.journal.append({"s": self.seq, "id": sensor_id, "reset": at})
        self._reset(s, at)
        self.dirty.add(sensor_id)
        self._emit(Change(sensor_id, self._derived(s, self._mono())))
        log.info("sensor %s: totals reset", sensor_id)

    @staticmethod
    def _reset(s: SensorState, at: float) -> None:
        s.ledger.reset(at)

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
            s.values.update(self._derived(s, self._mono()))
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
        if s.last_report is not None:
            s.heard_at = self._heard_at(s.last_report)
        # This sensor only: ticking all of them per restored sensor made a restart quadratic
        # (minutes at 5,000 sensors); the others are decided by their own restore or the tick.
        now = self._mono()
        self._tick_one(s, now)
        s.values.update(self._derived(s, now))

    def point_status(self, sensor_id: str) -> dict[str, str]:
        """Each of the sensor's own points: current, stale, not-reported or never-reported."""
        s = self.sensors[sensor_id]
        return {
            k: pointstatus.status(k, s.values, s.not_reported, s.online)
            for k in sorted(self._keys[sensor_id])
        }

    def usable(self, sensor_id: str) -> dict[str, Value]:
        """The values an alarm rule may use: without those the sensor no longer reports."""
        s = self.sensors[sensor_id]
        return {k: v for k, v in s.values.items() if k not in s.not_reported}

    def current(self, sensor_id: str) -> Mapping[str, Value]:
        return self.sensors[sensor_id].values

    def ids(self) -> Iterable[str]:
        return self.sensors.keys()


def _sensor_time(v: object) -> float | None:
    """A time the sensor stated (unix seconds as the protocol carries them), or None."""
    if not is_number(v):
        return None
    assert isinstance(v, int | float)
    return float(v) if 0 <= v <= MAX_SENSOR_TIME else None


def accumulated_modulo(model: Model) -> int:
    """Where a model's accumulated counters wrap: 2 bytes each on the LoRaWAN model (0x0dcc)."""
    return 1 << 16 if model is Model.VS121 else 1 << 32


def _is_count(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and 0 <= v < 1 << 32


def _count_or_zero(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 32:
        return 0
    return v


def _describe(v: object) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return "an out-of-range number"
    return type(v).__name__


def _nonzero(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v != 0
