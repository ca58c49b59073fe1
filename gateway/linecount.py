"""The line-crossing ledger: every crossing reaches the gateway's totals exactly once.

A sensor reports the same crossings up to three ways: trigger reports as they happen
(line_in/line_out), a periodic report per interval (people_in/people_out), and either of them
again as history (0x20ce) after an outage. The rules:

- A periodic report covers its period, (start, end]. The crossings counted for a period are the
  larger of what the periodic report says and what the trigger reports inside it said; triggers
  are added at once (so totals move in real time) and the periodic report adds only the rest.
- A trigger whose time falls in a period already counted is not added again.
- A report is identified by the sensor's own time when it has one; a history record is the same
  report as a live one with that exact time, or, for a live report without sensor time, one
  received within `window` of it. Live reports are deduplicated upstream by their message keys,
  so a live report only matches entries that came from history.
- Totals never go down, except by a reset; history from before a reset is not counted after it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KEPT = 2048  # periods and triggers remembered for matching (two weeks of 10-minute reports)
PROVISIONAL_KEPT = 4096


@dataclass(frozen=True, slots=True, order=True)
class Period:
    end: float
    start: float
    exact: bool  # the time is the sensor's own
    history: bool  # learnt from a history record


@dataclass(frozen=True, slots=True, order=True)
class Trigger:
    time: float
    n_in: int
    n_out: int
    exact: bool
    history: bool


@dataclass
class LineLedger:
    interval: float  # the sensor's reporting interval: a periodic report covers this much
    window: float  # matching tolerance for reports without sensor time
    total_in: int = 0
    total_out: int = 0
    reset_at: float | None = None
    periods: list[Period] = field(default_factory=list)  # sorted by end
    triggers: list[Trigger] = field(default_factory=list)  # sorted by time
    provisional: list[Trigger] = field(default_factory=list)  # counted, no period yet; by time

    # -- periodic reports -----------------------------------------------------------------

    def period(
        self,
        end: float,
        n_in: int,
        n_out: int,
        *,
        exact: bool,
        history: bool,
        start: float | None = None,
    ) -> bool:
        """Count a periodic report unless it was counted already; True if it was counted."""
        if self._before_reset(end, history) or self._period_seen(
            end, exact=exact, live=not history
        ):
            return False
        begin = start if start is not None and start < end else end - self.interval
        inside = [t for t in self.provisional if begin < t.time <= end]
        if inside:
            self.provisional = [t for t in self.provisional if not begin < t.time <= end]
        self.total_in += max(0, n_in - sum(t.n_in for t in inside))
        self.total_out += max(0, n_out - sum(t.n_out for t in inside))
        bisect.insort(self.periods, Period(end, begin, exact, history))
        del self.periods[:-KEPT]
        return True

    def _period_seen(self, end: float, *, exact: bool, live: bool) -> bool:
        lo = bisect.bisect_left(self.periods, end - self.window, key=lambda p: p.end)
        for p in self.periods[lo:]:
            if p.end > end + self.window:
                break
            if live:
                if p.history and p.exact and exact and p.end == end:
                    return True
            elif (p.exact and p.end == end) or (not p.exact and not p.history):
                return True
        return False

    # -- trigger reports ------------------------------------------------------------------

    def trigger(self, time: float, n_in: int, n_out: int, *, exact: bool, history: bool) -> bool:
        """Count a trigger report unless already counted (itself, or in its period's report)."""
        if self._before_reset(time, history) or self._in_counted_period(time):
            return False
        if self._trigger_seen(time, n_in, n_out, exact=exact, live=not history):
            return False
        self.total_in += n_in
        self.total_out += n_out
        entry = Trigger(time, n_in, n_out, exact, history)
        bisect.insort(self.triggers, entry)
        del self.triggers[:-KEPT]
        bisect.insort(self.provisional, entry)
        del self.provisional[:-PROVISIONAL_KEPT]
        return True

    def _in_counted_period(self, time: float) -> bool:
        i = bisect.bisect_left(self.periods, time, key=lambda p: p.end)
        # Periods barely overlap, so the few that end at or after `time` are the candidates.
        return any(p.start < time <= p.end for p in self.periods[i : i + 4])

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

    # -- reset, persistence ---------------------------------------------------------------

    def _before_reset(self, time: float, history: bool) -> bool:
        return history and self.reset_at is not None and time < self.reset_at

    def reset(self, at: float) -> None:
        self.total_in = self.total_out = 0
        self.provisional = []
        self.reset_at = at

    def to_json(self) -> dict[str, Any]:
        return {
            "total_in": self.total_in,
            "total_out": self.total_out,
            "reset_at": self.reset_at,
            "periods": [[p.end, p.start, p.exact, p.history] for p in self.periods],
            "triggers": [[t.time, t.n_in, t.n_out, t.exact, t.history] for t in self.triggers],
            "provisional": [
                [t.time, t.n_in, t.n_out, t.exact, t.history] for t in self.provisional
            ],
        }

    def load_json(self, doc: Mapping[str, Any]) -> None:
        """Restore from `to_json` output; raises ValueError/TypeError/KeyError if malformed."""
        self.total_in = _count(doc["total_in"])
        self.total_out = _count(doc["total_out"])
        reset = doc["reset_at"]
        self.reset_at = None if reset is None else float(reset)
        self.periods = sorted(
            Period(float(e), float(s), bool(x), bool(h)) for e, s, x, h in doc["periods"]
        )[-KEPT:]
        self.triggers = sorted(_trigger(t) for t in doc["triggers"])[-KEPT:]
        self.provisional = sorted(_trigger(t) for t in doc["provisional"])[-PROVISIONAL_KEPT:]


def _trigger(row: Any) -> Trigger:
    t, n_in, n_out, exact, history = row
    return Trigger(float(t), _count(n_in), _count(n_out), bool(exact), bool(history))


def _count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
        raise TypeError(f"not a count: {v!r}")
    return v
