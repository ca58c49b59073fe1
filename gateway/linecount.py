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

The entries (settled stretches, triggers seen, readings, pending triggers) are plain tuples of
numbers and strings, held in tuples, not class instances in lists: a collection stops tracking
such a tuple, while an instance stays tracked and a list stays tracked with every item visited
by every full collection, which holds up the whole daemon. A site keeps thousands of entries per
sensor: with 1,000 sensors' full ledgers (bench/bench_gc.py) the collector tracked 6.2 million
objects and a full collection took 0.9 to 1.1 s; now it tracks 2 objects per ledger and the
collection takes 4 to 6 ms. The price: a change copies the tuple it changes (about 13 us at
2,048 entries, some 50 us per 10-minute report) and an entry takes 8 bytes more.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, TypeVar

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


# The ledger's entries are plain tuples, not objects, for the cycle collector (see the module
# docstring); the fields, in order:

Pending: TypeAlias = tuple[float, float | None, int, int]
"""A trigger counted provisionally, its crossings not yet inside a settled stretch:
(received, sensor_time, n_in, n_out)."""

Span: TypeAlias = tuple[float, float, int, int, int, int, str, bool, bool, tuple[Pending, ...]]
"""A settled stretch of sensor time, (start, end]; the positions are named below."""
START: Final = 0
END: Final = 1
N_IN: Final = 2  # crossings it accounts for
N_OUT: Final = 3
CREDIT_IN: Final = 4  # crossings its report counted that no trigger has explained yet
CREDIT_OUT: Final = 5
KIND: Final = 6  # "p" periodic report, "a" accumulated counters
EXACT: Final = 7  # placed by the sensor's own time
HISTORY: Final = 8
# Triggers it took across its start or end, which a neighbour settled later may claim; empty
# for almost every stretch.
BORROWED: Final = 9

Trigger: TypeAlias = tuple[float, int, int, bool, bool]
"""A trigger report seen, for recognising it again as history: (time, n_in, n_out, exact,
history), its time the sensor's or the estimate of it at arrival. Ordered as the fields."""

Reading: TypeAlias = tuple[float, int, int, bool]
"""One reading of the sensor's accumulated counters: (time, acc_in, acc_out, exact)."""

E = TypeVar("E")


@dataclass
class LineLedger:
    interval: float  # the sensor's reporting interval: a periodic report covers this much
    window: float  # matching tolerance for reports without sensor time
    modulo: int = 1 << 16  # where the sensor's accumulated counters wrap
    total_in: int = 0
    total_out: int = 0
    reset_at: float | None = None  # on the sensor's clock
    # Tuples, each replaced by a new one when it changes: a list stays tracked, and every
    # collection visits each entry it holds, tracked or not (see the module docstring).
    spans: tuple[Span, ...] = ()  # sorted by end
    triggers: tuple[Trigger, ...] = ()  # sorted by time
    pending: tuple[Pending, ...] = ()  # in arrival order
    readings: tuple[Reading, ...] = ()  # sorted by time
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
            before = [s[END] for s in self._overlapping(begin, end) if s[END] < end]
            begin = max([begin, *before])
        tol = 0.0 if exact else self.window
        if self._covered(begin + tol, end - tol, skip_live_periods=not history):
            return False
        self._settle((begin, end, n_in, n_out, 0, 0, "p", exact, history, ()))
        return True

    def _period_seen(self, end: float, *, exact: bool, live: bool) -> bool:
        for p in self._overlapping(end - self.window, end + self.window):
            if p[KIND] != "p" or abs(p[END] - end) > self.window:
                continue
            if live:
                if p[HISTORY] and p[EXACT] and exact and p[END] == end:
                    return True
            elif (p[EXACT] and p[END] == end) or (not p[EXACT] and not p[HISTORY]):
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
        i = bisect.bisect_left(self.readings, at - tol, key=_time)
        if i < len(self.readings) and self.readings[i][0] <= at + tol:
            return False  # this reading is known
        reading: Reading = (at, acc_in % self.modulo, acc_out % self.modulo, exact)
        readings = list(self.readings)
        readings.insert(i, reading)
        cut = max(0, len(readings) - KEPT)
        del readings[:cut]
        self.readings = tuple(readings)
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
        a_time, a_in, a_out, a_exact = a
        b_time, b_in, b_out, b_exact = b
        d_in = self._difference(a_in, b_in, None if period is None else period[0])
        d_out = self._difference(a_out, b_out, None if period is None else period[1])
        if d_in is None or d_out is None:
            return  # the sensor reset its counters in between: the periodic reports decide
        if self._covered(a_time, b_time, skip_live_periods=False):
            return
        self._settle((a_time, b_time, d_in, d_out, 0, 0, "a", a_exact and b_exact, history, ()))

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
        trigger: Trigger = (at, n_in, n_out, exact, history)
        i = bisect.bisect_right(self.triggers, at, key=_time)
        self.triggers = _inserted(self.triggers, i, trigger, KEPT)
        left_in, left_out = n_in, n_out
        lo, hi = self._window((received, sensor_time, n_in, n_out))
        covering = sorted(self._overlapping_at(lo, hi), key=lambda e: -e[1][END])
        for i, s in covering:  # the latest stretch first: a late trigger belongs at its end
            take_in = min(s[CREDIT_IN], left_in)
            left_in -= take_in
            take_out = min(s[CREDIT_OUT], left_out)
            left_out -= take_out
            if take_in or take_out:  # replaced where it is: nothing was inserted since found
                c_in, c_out = s[CREDIT_IN] - take_in, s[CREDIT_OUT] - take_out
                self.spans = _replaced(self.spans, i, _credited(s, c_in, c_out, s[BORROWED]))
        spans = [s for _, s in covering]
        if self._covered(lo, hi, skip_live_periods=False, spans=spans):
            return left_in + left_out < n_in + n_out  # settled stretches said it all
        if left_in or left_out:
            self.total_in += left_in
            self.total_out += left_out
            entry: Pending = (received, sensor_time, left_in, left_out)
            self.pending = _inserted(self.pending, len(self.pending), entry, PROVISIONAL_KEPT)
        return True

    def _window(self, p: Pending) -> tuple[float, float]:
        """Where on the sensor's clock a trigger's crossings can lie, [lo, hi]."""
        received, sensor_time, _, _ = p
        if sensor_time is not None:
            return sensor_time - BATCH_S, sensor_time
        if self.clock_unknown():
            # Anywhere: it is taken by whichever stretch is settled next, up to its count.
            return -math.inf, math.inf
        at = received - self.offset()
        return at - BATCH_S - SLACK_S, at + SLACK_S

    def _sent(self, p: Pending) -> float:
        """When the trigger was sent, on the sensor's clock (best estimate)."""
        received, sensor_time, _, _ = p
        if sensor_time is not None:
            return sensor_time
        return received - self.offset()

    def _trigger_seen(self, time: float, n_in: int, n_out: int, *, exact: bool, live: bool) -> bool:
        lo = bisect.bisect_left(self.triggers, time - self.window, key=_time)
        for t_time, t_in, t_out, t_exact, t_history in self.triggers[lo:]:
            if t_time > time + self.window:
                break
            if (t_in, t_out) != (n_in, n_out):
                continue
            if live:
                if t_history and t_exact and exact and t_time == time:
                    return True
            elif (t_exact and t_time == time) or (not t_exact and not t_history):
                return True
        return False

    # -- settling -------------------------------------------------------------------------------

    def _settle(self, span: Span) -> None:
        """Add a settled stretch: count what its report says beyond what is already counted."""
        start, end, n_in, n_out, _, _, kind, exact, history, _ = span
        inner = self._inner(span)
        known_in = sum(s[N_IN] for s in inner)
        known_out = sum(s[N_OUT] for s in inner)
        cap_in = max(0, n_in - known_in)
        cap_out = max(0, n_out - known_out)
        took_in, took_out, borrowed = self._absorb(span, cap_in, cap_out, inner)
        if took_in < cap_in or took_out < cap_out:
            r_in, r_out = self._reclaim(span, cap_in - took_in, cap_out - took_out)
            took_in += r_in
            took_out += r_out
        add_in = max(0, cap_in - took_in)
        add_out = max(0, cap_out - took_out)
        self.total_in += add_in
        self.total_out += add_out
        n_in = known_in + max(cap_in, took_in)
        n_out = known_out + max(cap_out, took_out)
        span = (start, end, n_in, n_out, add_in, add_out, kind, exact, history, borrowed)
        i = bisect.bisect_right(self.spans, end, key=_end)
        self.spans = _inserted(self.spans, i, span, KEPT)
        self.longest = max(self.longest, end - start)

    def _absorb(
        self, span: Span, cap_in: int, cap_out: int, inner: list[Span]
    ) -> tuple[int, int, tuple[Pending, ...]]:
        """Take the pending triggers that belong to `span`: those wholly inside it, then those
        straddling its edges up to its count; returns how much was taken and the stretch's
        borrowed triggers with those it now borrows."""
        start, end, borrowed = span[START], span[END], span[BORROWED]
        sure: list[int] = []  # positions in self.pending
        straddling: list[int] = []
        for i, p in enumerate(self.pending):
            lo, hi = self._window(p)
            if hi <= start or lo > end:
                continue
            if inner and self._covered(lo, hi, skip_live_periods=False, spans=inner):
                continue  # explained (or refused) by a stretch inside this one
            (sure if lo >= start and hi <= end else straddling).append(i)
        # Of the straddling triggers, those sent inside the stretch most likely belong to it.
        straddling.sort(key=lambda i: not start < self._sent(self.pending[i]) <= end)
        took_in = took_out = 0
        left: dict[int, tuple[int, int]] = {}  # what is left of the triggers taken from
        for i in sure:
            _, _, p_in, p_out = self.pending[i]
            took_in += p_in
            took_out += p_out
            left[i] = 0, 0
        for i in straddling:
            p = self.pending[i]
            received, sensor_time, p_in, p_out = p
            t_in = max(0, min(p_in, cap_in - took_in))
            t_out = max(0, min(p_out, cap_out - took_out))
            if not (t_in or t_out):
                continue
            took_in += t_in
            took_out += t_out
            left[i] = p_in - t_in, p_out - t_out
            lo, hi = self._window(p)
            if (lo < start or hi > end) and len(borrowed) < BORROWED_KEPT:
                borrowed += ((received, sensor_time, t_in, t_out),)
        pending: list[Pending] = []
        for i, p in enumerate(self.pending):
            received, sensor_time, p_in, p_out = p
            if i in left:
                p_in, p_out = left[i]
            if p_in or p_out:
                pending.append(p if i not in left else (received, sensor_time, p_in, p_out))
        self.pending = tuple(pending)
        return took_in, took_out, borrowed

    def _reclaim(self, span: Span, need_in: int, need_out: int) -> tuple[int, int]:
        """A stretch settled after the one that follows it (history filling a gap) takes back
        triggers that one borrowed across their common edge; the follower then refills from
        the triggers still pending, or counts the difference itself. Without this a trigger
        could be left over for want of room while the follower holds one that fits here."""
        got_in = got_out = 0
        edge = span[END]
        reach = edge + BATCH_S + 2 * SLACK_S
        for i, s in list(self._overlapping_at(edge, reach)):
            if s[START] < edge or not s[BORROWED]:
                continue
            x_in = x_out = 0
            kept: list[Pending] = []
            for b in s[BORROWED]:
                received, sensor_time, b_in, b_out = b
                lo = self._window(b)[0]
                if lo < edge and lo < s[START]:  # across the common edge, not the far one
                    t_in = min(b_in, need_in - got_in - x_in)
                    t_out = min(b_out, need_out - got_out - x_out)
                    b_in -= t_in
                    b_out -= t_out
                    x_in += t_in
                    x_out += t_out
                if b_in or b_out:
                    kept.append((received, sensor_time, b_in, b_out))
            # Replaced where it is: stretches are only replaced here, none inserted or removed.
            lender = _credited(s, s[CREDIT_IN], s[CREDIT_OUT], tuple(kept))
            self.spans = _replaced(self.spans, i, lender)
            if not (x_in or x_out):
                continue
            got_in += x_in
            got_out += x_out
            r_in, r_out, borrowed = self._absorb(lender, x_in, x_out, self._inner(lender))
            d_in, d_out = max(0, x_in - r_in), max(0, x_out - r_out)
            c_in, c_out = lender[CREDIT_IN] + d_in, lender[CREDIT_OUT] + d_out
            self.spans = _replaced(self.spans, i, _credited(lender, c_in, c_out, borrowed))
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
        start, end = span[START], span[END]
        for i, s in list(self._overlapping_at(start - BATCH_S - 2 * SLACK_S, start)):
            if s[END] > start or not s[BORROWED]:
                continue
            across = [
                k
                for k, b in enumerate(s[BORROWED])
                if self._window(b)[0] < end and self._window(b)[1] > start
            ]
            a_in = min(need_in - got_in, sum(s[BORROWED][k][2] for k in across))
            a_out = min(need_out - got_out, sum(s[BORROWED][k][3] for k in across))
            if not (a_in or a_out):
                continue
            r_in, r_out, borrowed = self._absorb(s, a_in, a_out, self._inner(s))
            x_in, x_out = min(r_in, a_in), min(r_out, a_out)
            got_in += x_in
            got_out += x_out
            kept: list[Pending] = []
            for k, (received, sensor_time, b_in, b_out) in enumerate(borrowed):
                t_in = t_out = 0
                if k in across:  # give the batch's share over, up to what was swapped
                    t_in, t_out = min(b_in, x_in), min(b_out, x_out)
                    x_in -= t_in
                    x_out -= t_out
                if b_in > t_in or b_out > t_out:
                    kept.append((received, sensor_time, b_in - t_in, b_out - t_out))
            # Replaced where it is: stretches are only replaced here, none inserted or removed.
            self.spans = _replaced(
                self.spans, i, _credited(s, s[CREDIT_IN], s[CREDIT_OUT], tuple(kept))
            )
        return got_in, got_out

    def _inner(self, span: Span) -> list[Span]:
        """The outermost settled stretches inside `span`."""
        start, end = span[START], span[END]
        inside = sorted(
            (s for s in self._overlapping(start, end) if start <= s[START]),
            key=lambda s: (s[START], -s[END]),
        )
        out: list[Span] = []
        for s in inside:
            if s[END] > end:
                continue
            if out and s[END] <= out[-1][END]:
                continue  # nested in the one before
            out.append(s)
        return out

    def _overlapping(self, lo: float, hi: float) -> Iterator[Span]:
        """Settled stretches that share time with (lo, hi]."""
        for _, s in self._overlapping_at(lo, hi):
            yield s

    def _overlapping_at(self, lo: float, hi: float) -> Iterator[tuple[int, Span]]:
        """The same with their positions in `spans`, to replace them there."""
        i = bisect.bisect_right(self.spans, lo, key=_end)
        for s in self.spans[i:]:
            if s[END] - self.longest > hi:
                break
            if s[START] < hi:
                yield i, s
            i += 1

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
        for s in sorted(candidates, key=_start):
            if (skip_live_periods and s[KIND] == "p" and not s[HISTORY]) or s[END] < reach:
                continue
            if s[START] > reach:
                return False
            reach = s[END]
            if reach >= hi:
                return True
        return False

    # -- reset, persistence ---------------------------------------------------------------------

    def _before_reset(self, time: float, history: bool) -> bool:
        return history and self.reset_at is not None and time < self.reset_at

    def reset(self, at: float) -> None:
        """Zero the totals; `at` is the gateway's time, kept on the sensor's clock."""
        self.total_in = self.total_out = 0
        self.pending = ()
        self.readings = ()  # the next reading is a new baseline
        self.reset_at = at - self.offset()

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 3,
            "total_in": self.total_in,
            "total_out": self.total_out,
            "reset_at": self.reset_at,
            "spans": [_row(s) for s in self.spans],
            "triggers": [list(t) for t in self.triggers],
            "pending": [list(p) for p in self.pending],
            "readings": [list(r) for r in self.readings],
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
        self.triggers = tuple(sorted(_trigger(t) for t in doc["triggers"])[-KEPT:])
        if doc.get("v") == 3:
            self.spans = tuple(sorted((_span(r) for r in doc["spans"]), key=_end)[-KEPT:])
            self.pending = tuple([_pending(r) for r in doc["pending"]][-PROVISIONAL_KEPT:])
            self.readings = tuple(
                sorted((float(t), _count(a), _count(b), bool(x)) for t, a, b, x in doc["readings"])[
                    -KEPT:
                ]
            )
            self.clock = [float(c) for c in doc["clock"]][-CLOCK_SAMPLES:]
            self.timed = bool(doc["timed"])
            self.longest = max((s[END] - s[START] for s in self.spans), default=0.0)
            return
        no_borrowed: tuple[Pending, ...] = ()
        periods = sorted(
            (
                (float(s), float(e), 0, 0, 0, 0, "p", bool(x), bool(h), no_borrowed)
                for e, s, x, h in doc["periods"]
            ),
            key=_end,
        )
        self.spans = tuple(periods[-KEPT:])
        self.pending = tuple(
            [
                (time, time if exact else None, n_in, n_out)
                for time, n_in, n_out, exact, _ in sorted(_trigger(r) for r in doc["provisional"])
            ][-PROVISIONAL_KEPT:]
        )
        self.readings = ()
        self.clock = []
        self.timed = any(s[EXACT] for s in self.spans)
        self.longest = max((s[END] - s[START] for s in self.spans), default=0.0)


def _inserted(entries: tuple[E, ...], i: int, entry: E, kept: int) -> tuple[E, ...]:
    """`entries` with `entry` at position `i`, then the newest `kept` of them."""
    out = list(entries)
    out.insert(i, entry)
    del out[:-kept]
    return tuple(out)


def _replaced(entries: tuple[E, ...], i: int, entry: E) -> tuple[E, ...]:
    out = list(entries)
    out[i] = entry
    return tuple(out)


def _time(entry: Trigger | Reading) -> float:
    return entry[0]


def _start(s: Span) -> float:
    return s[START]


def _end(s: Span) -> float:
    return s[END]


def _row(s: Span) -> list[Any]:
    row: list[Any] = list(s)
    row[BORROWED] = [list(b) for b in s[BORROWED]]
    return row


def _credited(s: Span, credit_in: int, credit_out: int, borrowed: tuple[Pending, ...]) -> Span:
    """`s` with other credits and borrowed triggers."""
    start, end, n_in, n_out, _, _, kind, exact, history, _ = s
    return start, end, n_in, n_out, credit_in, credit_out, kind, exact, history, borrowed


def _span(row: Any) -> Span:
    start, end, n_in, n_out, c_in, c_out, kind, exact, history, borrowed = row
    if kind not in ("p", "a"):
        raise ValueError(f"unknown stretch kind {kind!r}")
    return (
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
    return (
        float(received),
        None if sensor_time is None else float(sensor_time),
        _count(n_in),
        _count(n_out),
    )


def _trigger(row: Any) -> Trigger:
    t, n_in, n_out, exact, history = row
    return float(t), _count(n_in), _count(n_out), bool(exact), bool(history)


def _count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
        raise TypeError(f"not a count: {v!r}")
    return v
