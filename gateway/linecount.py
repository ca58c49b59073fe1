"""The line-crossing ledger: every crossing reaches the gateway's totals exactly once.

A sensor reports the same crossings up to four ways: trigger reports as they happen
(line_in/line_out; the sensor batches further crossings within 15 s into one report sent at the
end of that window), a periodic report per interval (people_in/people_out), its own accumulated
counters (people_total_in/out) and any of these again as history (0x20ce) after an outage.
The rules, applied to each direction separately:

- Everything is placed on the sensor's own clock. A report without sensor time (the VS121's
  0x10f7 trigger) is placed by its receive time minus the sensor's clock offset, learnt from the
  sensor's own timestamped reports; a sensor that never states its time is its own clock. So the
  sensor and gateway clocks need not agree, and an offset of a day is as good as none.
- A periodic report settles its period (start, end]; the difference of two accumulated readings
  settles the stretch between them. A settled stretch is authoritative: it counts what its
  report says, and the triggers already counted inside it are part of that number, not extra.
- A trigger is counted at once (the totals move in real time) but provisionally. Its crossings
  lie in a window before its time; when that window may reach into a settled stretch whose report
  counted crossings no trigger had explained yet (its credit), the trigger is those crossings:
  it uses up the credit first and only the rest is added. A trigger wholly inside settled
  stretches adds nothing.
- When a stretch is settled, the provisional triggers wholly inside it are taken first, then
  those whose window straddles its edge, up to what the report says; it adds only the rest.
  A neighbour settled earlier that took a trigger across their common edge while one that can
  only be its own is still pending swaps the two, so the batch sent just after a period's end
  is not counted again by the next period.
- Accumulated counters are the sensor's ground truth between two readings: they repair periodic
  reports that were lost. A counter that went down is a wrap (16 bits on the LoRaWAN model,
  32 on the VS121-P) when it was near the top and the result agrees with the period's own report,
  and otherwise a reset by the sensor, after which only the period's report is used.
- History matches what was already received by the sensor's own time; a stretch already
  settled is not settled again. Totals never go down, except by a reset; history from before a
  reset is not counted after it.

Credit is used first because the opposite mistake cannot be undone: a crossing added twice would
stay in a total that never goes down, while a trigger wrongly taken as an already counted
crossing is counted by the next periodic report or accumulated reading, which says how many
crossings its own period really had.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

KEPT: Final = (
    2048  # stretches and triggers remembered for matching (two weeks of 10-minute reports)
)
PROVISIONAL_KEPT: Final = 4096
BATCH_S: Final = 15.0  # the sensor reports further crossings at the end of a 15 s window
SLACK_S: Final = 10.0  # network delay jitter and clock-offset error for a trigger without time
CLOCK_SAMPLES: Final = 4  # recent offset samples; few, so a drifting clock is followed closely
CLOCK_STEP_S: Final = 120.0  # two samples agreeing this far above the estimate: the clock stepped
CLOCK_AGREE_S: Final = 30.0
BORROWED_KEPT: Final = 16


@dataclass(slots=True)
class Span:
    """A settled stretch of sensor time, (start, end]."""

    start: float
    end: float
    n_in: int  # crossings it accounts for
    n_out: int
    credit_in: int  # crossings its report counted that no trigger has explained yet
    credit_out: int
    kind: str  # "p" periodic report, "a" accumulated counters
    exact: bool  # placed by the sensor's own time
    history: bool
    # Triggers it took across its start or end, which a neighbour settled later may claim.
    # A tuple, empty for almost every stretch: no list object per stretch for the garbage
    # collector to walk (a site keeps thousands of stretches per sensor).
    borrowed: tuple[Pending, ...] = ()

    def row(self) -> list[Any]:
        return [
            self.start,
            self.end,
            self.n_in,
            self.n_out,
            self.credit_in,
            self.credit_out,
            self.kind,
            self.exact,
            self.history,
            [[b.received, b.sensor_time, b.n_in, b.n_out] for b in self.borrowed],
        ]


@dataclass(slots=True)
class Pending:
    """A trigger counted provisionally, its crossings not yet inside a settled stretch."""

    received: float
    sensor_time: float | None
    n_in: int
    n_out: int


@dataclass(frozen=True, slots=True, order=True)
class Trigger:
    """A trigger report seen, for recognising it again as history."""

    time: float  # sensor time, or the estimate of it at arrival
    n_in: int
    n_out: int
    exact: bool
    history: bool


@dataclass(frozen=True, slots=True, order=True)
class Reading:
    """One reading of the sensor's accumulated counters."""

    time: float
    acc_in: int
    acc_out: int
    exact: bool


@dataclass
class LineLedger:
    interval: float  # the sensor's reporting interval: a periodic report covers this much
    window: float  # matching tolerance for reports without sensor time
    modulo: int = 1 << 16  # where the sensor's accumulated counters wrap
    total_in: int = 0
    total_out: int = 0
    reset_at: float | None = None  # on the sensor's clock
    spans: list[Span] = field(default_factory=list)  # sorted by end
    triggers: list[Trigger] = field(default_factory=list)  # sorted by time
    pending: list[Pending] = field(default_factory=list)  # in arrival order
    readings: list[Reading] = field(default_factory=list)  # sorted by time
    clock: list[float] = field(default_factory=list)  # receive time minus sensor time, recent
    longest: float = 0.0  # the longest settled stretch kept, to bound searches
    timed: bool = False  # the sensor has stated its time (in any report, history included)

    # -- the sensor's clock -------------------------------------------------------------------

    def observe_clock(self, received: float, sensor_time: float) -> None:
        """Learn the sensor's clock offset from a live report that states its time."""
        sample = received - sensor_time
        self.clock.append(sample)
        del self.clock[:-CLOCK_SAMPLES]
        last = self.clock[-2:]
        if len(last) == 2 and len(self.clock) > 2:
            # Delays only add, so the smallest sample is the best estimate; but when the two
            # newest agree and are both well above it, the sensor's clock was set back.
            best = min(self.clock[:-2])
            if min(last) - best > CLOCK_STEP_S and abs(last[0] - last[1]) < CLOCK_AGREE_S:
                self.clock = last

    def offset(self) -> float:
        return min(self.clock) if self.clock else 0.0

    def clock_unknown(self) -> bool:
        """The sensor keeps its own time, but no live report has told us its offset yet."""
        return self.timed and not self.clock

    def sensor_clock(self, received: float, sensor_time: float | None) -> float:
        if sensor_time is not None:
            self.timed = True
            return sensor_time
        return received - self.offset()

    # -- periodic reports -----------------------------------------------------------------------

    def period(
        self,
        received: float,
        sensor_time: float | None,
        n_in: int,
        n_out: int,
        *,
        history: bool,
        start: float | None = None,
    ) -> bool:
        """Count a periodic report unless it was counted already; True if it was counted."""
        exact = sensor_time is not None
        end = self.sensor_clock(received, sensor_time)
        if self._before_reset(end, history) or self._period_seen(
            end, exact=exact, live=not history
        ):
            return False
        begin = start if start is not None and start < end else end - self.interval
        if not history:
            # Live reports follow each other: a period starts where the one before it ended,
            # even if the configured interval is longer than the sensor's.
            before = [s.end for s in self._overlapping(begin, end) if s.end < end]
            begin = max([begin, *before])
        tol = 0.0 if exact else self.window
        if self._covered(begin + tol, end - tol, skip_live_periods=not history):
            return False
        self._settle(Span(begin, end, n_in, n_out, 0, 0, "p", exact, history))
        return True

    def _period_seen(self, end: float, *, exact: bool, live: bool) -> bool:
        for p in self._overlapping(end - self.window, end + self.window):
            if p.kind != "p" or abs(p.end - end) > self.window:
                continue
            if live:
                if p.history and p.exact and exact and p.end == end:
                    return True
            elif (p.exact and p.end == end) or (not p.exact and not p.history):
                return True
        return False

    # -- accumulated counters -------------------------------------------------------------------

    def accumulated(
        self,
        received: float,
        sensor_time: float | None,
        acc_in: int,
        acc_out: int,
        *,
        history: bool,
        period: tuple[int, int] | None = None,
    ) -> bool:
        """Take one reading of the sensor's accumulated counters; True if it added crossings.

        `period` is the same report's periodic count, if it has one: it tells a wrap from a
        reset by the sensor."""
        exact = sensor_time is not None
        at = self.sensor_clock(received, sensor_time)
        if self._before_reset(at, history):
            return False
        tol = 0.0 if exact else self.window
        i = bisect.bisect_left(self.readings, at - tol, key=lambda r: r.time)
        if i < len(self.readings) and self.readings[i].time <= at + tol:
            return False  # this reading is known
        reading = Reading(at, acc_in % self.modulo, acc_out % self.modulo, exact)
        self.readings.insert(i, reading)
        if len(self.readings) > KEPT:
            cut = len(self.readings) - KEPT
            del self.readings[:cut]
            if i < cut:
                return False  # older than everything kept: nothing to compare it with
            i -= cut
        before = self.total_in, self.total_out
        if i > 0:
            self._settle_between(self.readings[i - 1], reading, period, history)
        if i + 1 < len(self.readings):
            self._settle_between(reading, self.readings[i + 1], None, history)
        return (self.total_in, self.total_out) != before

    def _settle_between(
        self, a: Reading, b: Reading, period: tuple[int, int] | None, history: bool
    ) -> None:
        d_in = self._difference(a.acc_in, b.acc_in, None if period is None else period[0])
        d_out = self._difference(a.acc_out, b.acc_out, None if period is None else period[1])
        if d_in is None or d_out is None:
            return  # the sensor reset its counters in between: the periodic reports decide
        if self._covered(a.time, b.time, skip_live_periods=False):
            return
        self._settle(Span(a.time, b.time, d_in, d_out, 0, 0, "a", a.exact and b.exact, history))

    def _difference(self, a: int, b: int, period: int | None) -> int | None:
        if b >= a:
            d = b - a
        elif a >= self.modulo - self.modulo // 4 and b < self.modulo // 4:
            d = b + self.modulo - a  # wrapped
        else:
            return None
        # The stretch between readings holds the report's period: it cannot count fewer.
        return None if period is not None and d < period else d

    # -- trigger reports ------------------------------------------------------------------------

    def trigger(
        self,
        received: float,
        sensor_time: float | None,
        n_in: int,
        n_out: int,
        *,
        history: bool,
    ) -> bool:
        """Count a trigger report unless already counted (itself, or by a settled stretch)."""
        exact = sensor_time is not None
        at = self.sensor_clock(received, sensor_time)
        if self._before_reset(at, history):
            return False
        if self._trigger_seen(at, n_in, n_out, exact=exact, live=not history):
            return False
        bisect.insort(self.triggers, Trigger(at, n_in, n_out, exact, history), key=_time)
        del self.triggers[:-KEPT]
        entry = Pending(received, sensor_time, n_in, n_out)
        lo, hi = self._window(entry)
        covering = sorted(self._overlapping(lo, hi), key=lambda s: -s.end)
        for s in covering:  # the latest stretch first: a late trigger belongs at its end
            take = min(s.credit_in, entry.n_in)
            s.credit_in -= take
            entry.n_in -= take
            take = min(s.credit_out, entry.n_out)
            s.credit_out -= take
            entry.n_out -= take
        if self._covered(lo, hi, skip_live_periods=False, spans=covering):
            return entry.n_in + entry.n_out < n_in + n_out  # settled stretches said it all
        if entry.n_in or entry.n_out:
            self.total_in += entry.n_in
            self.total_out += entry.n_out
            self.pending.append(entry)
            del self.pending[:-PROVISIONAL_KEPT]
        return True

    def _window(self, p: Pending) -> tuple[float, float]:
        """Where on the sensor's clock a trigger's crossings can lie, [lo, hi]."""
        if p.sensor_time is not None:
            return p.sensor_time - BATCH_S, p.sensor_time
        if self.clock_unknown():
            # Anywhere: it is taken by whichever stretch is settled next, up to its count.
            return -math.inf, math.inf
        at = p.received - self.offset()
        return at - BATCH_S - SLACK_S, at + SLACK_S

    def _sent(self, p: Pending) -> float:
        """When the trigger was sent, on the sensor's clock (best estimate)."""
        if p.sensor_time is not None:
            return p.sensor_time
        return p.received - self.offset()

    def _trigger_seen(self, time: float, n_in: int, n_out: int, *, exact: bool, live: bool) -> bool:
        lo = bisect.bisect_left(self.triggers, time - self.window, key=lambda t: t.time)
        for t in self.triggers[lo:]:
            if t.time > time + self.window:
                break
            if (t.n_in, t.n_out) != (n_in, n_out):
                continue
            if live:
                if t.history and t.exact and exact and t.time == time:
                    return True
            elif (t.exact and t.time == time) or (not t.exact and not t.history):
                return True
        return False

    # -- settling -------------------------------------------------------------------------------

    def _settle(self, span: Span) -> None:
        """Add a settled stretch: count what its report says beyond what is already counted."""
        inner = self._inner(span)
        known_in = sum(s.n_in for s in inner)
        known_out = sum(s.n_out for s in inner)
        cap_in = max(0, span.n_in - known_in)
        cap_out = max(0, span.n_out - known_out)
        took_in, took_out = self._absorb(span, cap_in, cap_out, inner)
        if took_in < cap_in or took_out < cap_out:
            r_in, r_out = self._reclaim(span, cap_in - took_in, cap_out - took_out)
            took_in += r_in
            took_out += r_out
        add_in = max(0, cap_in - took_in)
        add_out = max(0, cap_out - took_out)
        self.total_in += add_in
        self.total_out += add_out
        span.n_in = known_in + max(cap_in, took_in)
        span.n_out = known_out + max(cap_out, took_out)
        span.credit_in, span.credit_out = add_in, add_out
        bisect.insort(self.spans, span, key=lambda s: s.end)
        del self.spans[:-KEPT]
        self.longest = max(self.longest, span.end - span.start)

    def _absorb(self, span: Span, cap_in: int, cap_out: int, inner: list[Span]) -> tuple[int, int]:
        """Take the pending triggers that belong to `span`: those wholly inside it, then those
        straddling its edges up to its count; returns how much was taken."""
        sure: list[Pending] = []
        straddling: list[Pending] = []
        for p in self.pending:
            lo, hi = self._window(p)
            if hi <= span.start or lo > span.end:
                continue
            if inner and self._covered(lo, hi, skip_live_periods=False, spans=inner):
                continue  # explained (or refused) by a stretch inside this one
            (sure if lo >= span.start and hi <= span.end else straddling).append(p)
        # Of the straddling triggers, those sent inside the stretch most likely belong to it.
        straddling.sort(key=lambda p: not span.start < self._sent(p) <= span.end)
        took_in = took_out = 0
        for p in sure:
            took_in += p.n_in
            took_out += p.n_out
            p.n_in = p.n_out = 0
        for p in straddling:
            t_in = max(0, min(p.n_in, cap_in - took_in))
            t_out = max(0, min(p.n_out, cap_out - took_out))
            if not (t_in or t_out):
                continue
            took_in += t_in
            took_out += t_out
            p.n_in -= t_in
            p.n_out -= t_out
            lo, hi = self._window(p)
            if (lo < span.start or hi > span.end) and len(span.borrowed) < BORROWED_KEPT:
                span.borrowed += (Pending(p.received, p.sensor_time, t_in, t_out),)
        self.pending = [p for p in self.pending if p.n_in or p.n_out]
        return took_in, took_out

    def _reclaim(self, span: Span, need_in: int, need_out: int) -> tuple[int, int]:
        """A stretch settled after the one that follows it (history filling a gap) takes back
        triggers that one borrowed across their common edge; the follower then refills from
        the triggers still pending, or counts the difference itself. Without this a trigger
        could be left over for want of room while the follower holds one that fits here."""
        got_in = got_out = 0
        reach = span.end + BATCH_S + 2 * SLACK_S
        for s in list(self._overlapping(span.end, reach)):
            if s.start < span.end or not s.borrowed:
                continue
            x_in = x_out = 0
            for b in s.borrowed:
                lo = self._window(b)[0]
                if lo >= span.end or lo >= s.start:
                    continue  # not across the common edge (one across the follower's end)
                t_in = min(b.n_in, need_in - got_in - x_in)
                t_out = min(b.n_out, need_out - got_out - x_out)
                b.n_in -= t_in
                b.n_out -= t_out
                x_in += t_in
                x_out += t_out
            s.borrowed = tuple(b for b in s.borrowed if b.n_in or b.n_out)
            if not (x_in or x_out):
                continue
            got_in += x_in
            got_out += x_out
            r_in, r_out = self._absorb(s, x_in, x_out, self._inner(s))
            d_in, d_out = max(0, x_in - r_in), max(0, x_out - r_out)
            s.credit_in += d_in
            s.credit_out += d_out
            self.total_in += d_in
            self.total_out += d_out
        s_in, s_out = self._swap_back(span, need_in - got_in, need_out - got_out)
        return got_in + s_in, got_out + s_out

    def _swap_back(self, span: Span, need_in: int, need_out: int) -> tuple[int, int]:
        """The stretch before this one may have taken a batch sent just after its end (placed
        by arrival, its stretch can reach past the sensor's period end) while a trigger that
        can only be its own is still pending. It takes that one instead, and gives this
        stretch the batch's share: a swap, so no count moves. Only a swap: whether the batch
        was the earlier stretch's cannot be told, and giving it back unswapped would leave that
        stretch crediting crossings no later trigger of this stretch could use, counting them
        twice."""
        got_in = got_out = 0
        reach = BATCH_S + 2 * SLACK_S
        for s in list(self._overlapping(span.start - reach, span.start)):
            if s.end > span.start or not s.borrowed:
                continue
            overlapping = [
                b
                for b in s.borrowed
                if self._window(b)[0] < span.end and self._window(b)[1] > span.start
            ]
            a_in = min(need_in - got_in, sum(b.n_in for b in overlapping))
            a_out = min(need_out - got_out, sum(b.n_out for b in overlapping))
            if not (a_in or a_out):
                continue
            r_in, r_out = self._absorb(s, a_in, a_out, self._inner(s))
            x_in, x_out = min(r_in, a_in), min(r_out, a_out)
            got_in += x_in
            got_out += x_out
            for b in overlapping:
                t_in, t_out = min(b.n_in, x_in), min(b.n_out, x_out)
                b.n_in -= t_in
                b.n_out -= t_out
                x_in -= t_in
                x_out -= t_out
            s.borrowed = tuple(b for b in s.borrowed if b.n_in or b.n_out)
        return got_in, got_out

    def _inner(self, span: Span) -> list[Span]:
        """The outermost settled stretches inside `span`."""
        inside = sorted(
            (s for s in self._overlapping(span.start, span.end) if span.start <= s.start),
            key=lambda s: (s.start, -s.end),
        )
        out: list[Span] = []
        for s in inside:
            if s.end > span.end:
                continue
            if out and s.end <= out[-1].end:
                continue  # nested in the one before
            out.append(s)
        return out

    def _overlapping(self, lo: float, hi: float) -> Iterator[Span]:
        """Settled stretches that share time with (lo, hi]."""
        i = bisect.bisect_right(self.spans, lo, key=lambda s: s.end)
        for s in self.spans[i:]:
            if s.end - self.longest > hi:
                break
            if s.start < hi:
                yield s

    def _covered(
        self,
        lo: float,
        hi: float,
        *,
        skip_live_periods: bool,
        spans: list[Span] | None = None,
    ) -> bool:
        """Whether settled stretches cover all of [lo, hi]."""
        hi = max(lo, hi)
        candidates = self._overlapping(lo - 1.0, hi) if spans is None else iter(spans)
        reach = lo
        for s in sorted(candidates, key=lambda s: s.start):
            if (skip_live_periods and s.kind == "p" and not s.history) or s.end < reach:
                continue
            if s.start > reach:
                return False
            reach = s.end
            if reach >= hi:
                return True
        return False

    # -- reset, persistence ---------------------------------------------------------------------

    def _before_reset(self, time: float, history: bool) -> bool:
        return history and self.reset_at is not None and time < self.reset_at

    def reset(self, at: float) -> None:
        """Zero the totals; `at` is the gateway's time, kept on the sensor's clock."""
        self.total_in = self.total_out = 0
        self.pending = []
        self.readings = []  # the next reading is a new baseline
        self.reset_at = at - self.offset()

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 3,
            "total_in": self.total_in,
            "total_out": self.total_out,
            "reset_at": self.reset_at,
            "spans": [s.row() for s in self.spans],
            "triggers": [[t.time, t.n_in, t.n_out, t.exact, t.history] for t in self.triggers],
            "pending": [[p.received, p.sensor_time, p.n_in, p.n_out] for p in self.pending],
            "readings": [[r.time, r.acc_in, r.acc_out, r.exact] for r in self.readings],
            "clock": list(self.clock),
            "timed": self.timed,
        }

    def load_json(self, doc: Mapping[str, Any]) -> None:
        """Restore from `to_json` output; raises ValueError/TypeError/KeyError if malformed.

        Also reads the previous layout (periods and provisional triggers) so totals survive
        an upgrade."""
        self.total_in = _count(doc["total_in"])
        self.total_out = _count(doc["total_out"])
        reset = doc["reset_at"]
        self.reset_at = None if reset is None else float(reset)
        self.triggers = sorted(_trigger(t) for t in doc["triggers"])[-KEPT:]
        if doc.get("v") == 3:
            self.spans = sorted((_span(r) for r in doc["spans"]), key=lambda s: s.end)[-KEPT:]
            self.pending = [_pending(r) for r in doc["pending"]][-PROVISIONAL_KEPT:]
            self.readings = sorted(
                Reading(float(t), _count(a), _count(b), bool(x)) for t, a, b, x in doc["readings"]
            )[-KEPT:]
            self.clock = [float(c) for c in doc["clock"]][-CLOCK_SAMPLES:]
            self.timed = bool(doc["timed"])
            self.longest = max((s.end - s.start for s in self.spans), default=0.0)
            return
        self.spans = sorted(
            (
                Span(float(s), float(e), 0, 0, 0, 0, "p", bool(x), bool(h))
                for e, s, x, h in doc["periods"]
            ),
            key=lambda s: s.end,
        )[-KEPT:]
        self.pending = [
            Pending(t.time, t.time if t.exact else None, t.n_in, t.n_out)
            for t in sorted(_trigger(r) for r in doc["provisional"])
        ][-PROVISIONAL_KEPT:]
        self.readings = []
        self.clock = []
        self.timed = any(s.exact for s in self.spans)
        self.longest = max((s.end - s.start for s in self.spans), default=0.0)


def _time(t: Trigger) -> float:
    return t.time


def _span(row: Any) -> Span:
    start, end, n_in, n_out, c_in, c_out, kind, exact, history, borrowed = row
    if kind not in ("p", "a"):
        raise ValueError(f"unknown stretch kind {kind!r}")
    return Span(
        float(start),
        float(end),
        _count(n_in),
        _count(n_out),
        _count(c_in),
        _count(c_out),
        str(kind),
        bool(exact),
        bool(history),
        tuple(_pending(b) for b in borrowed[:BORROWED_KEPT]),
    )


def _pending(row: Any) -> Pending:
    received, sensor_time, n_in, n_out = row
    return Pending(
        float(received),
        None if sensor_time is None else float(sensor_time),
        _count(n_in),
        _count(n_out),
    )


def _trigger(row: Any) -> Trigger:
    t, n_in, n_out, exact, history = row
    return Trigger(float(t), _count(n_in), _count(n_out), bool(exact), bool(history))


def _count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
        raise TypeError(f"not a count: {v!r}")
    return v
