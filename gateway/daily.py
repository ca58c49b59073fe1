"""Daily line totals: "In today / Out today", reset at a local time of day, and yesterday's.

A building's day starts at a local wall-clock time (midnight by default) in a configured time
zone, so daylight saving moves it with the clocks. Crossings count towards the day their report
was received in (the network server's time for LoRaWAN), so a journal replayed after a restart,
or a report delivered just after the day changed, lands where it did the first time. The day
rolls over on the gateway's clock even when no report comes: today becomes yesterday, or
yesterday becomes 0 when a whole day passed without the gateway running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

KEYS = ("today_in", "today_out", "yesterday_in", "yesterday_out")


@dataclass(slots=True)
class DayClock:
    """Which day a moment belongs to, for a zone and a reset time of day."""

    zone: ZoneInfo
    reset_minutes: int = 0  # minutes after local midnight at which a day starts
    # The last days computed, with their bounds in unix time: asked twice per report (its
    # receive time and now), nearly always about the same day or two.
    _known: list[tuple[float, float, int]] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def parse(cls, zone: str, reset_time: str) -> DayClock:
        hours, minutes = reset_time.split(":")
        return cls(ZoneInfo(zone), int(hours) * 60 + int(minutes))

    def day(self, unix: float) -> int:
        """The day's ordinal (days since 0001-01-01) of the moment `unix`."""
        for lo, hi, known in self._known:
            if lo <= unix < hi:
                return known
        day = self._compute(unix)
        lo, hi = self._start(day), self._start(day + 1)
        # Only trust the bounds when they say the same (a reset time inside a daylight-saving
        # gap or overlap could make a local time ambiguous).
        if lo <= unix < hi and self._compute(lo) == day and self._compute(hi) == day + 1:
            self._known = [(lo, hi, day), *self._known[:1]]
        return day

    def _compute(self, unix: float) -> int:
        local = datetime.fromtimestamp(unix, self.zone) - timedelta(minutes=self.reset_minutes)
        return local.date().toordinal()

    def _start(self, day: int) -> float:
        midnight = datetime.combine(date.fromordinal(day), dtime(0), self.zone)
        return (midnight + timedelta(minutes=self.reset_minutes)).timestamp()


UTC_MIDNIGHT = DayClock(ZoneInfo("UTC"))


@dataclass
class DailyTotals:
    day: int | None = None
    today_in: int = 0
    today_out: int = 0
    yesterday_in: int = 0
    yesterday_out: int = 0

    def roll(self, day: int) -> bool:
        """Move on to `day` if it is later; True if the values changed."""
        if self.day is None:
            self.day = day
            return False
        if day <= self.day:
            return False  # the same day, or the clock went back: keep counting where we are
        if day == self.day + 1:
            self.yesterday_in, self.yesterday_out = self.today_in, self.today_out
        else:
            self.yesterday_in = self.yesterday_out = 0
        self.today_in = self.today_out = 0
        self.day = day
        return True

    def add(self, day: int, n_in: int, n_out: int) -> None:
        """Count crossings received on `day`; older than yesterday is history for no point."""
        self.roll(day)
        if day == self.day:
            self.today_in += n_in
            self.today_out += n_out
        elif self.day is not None and day == self.day - 1:
            self.yesterday_in += n_in
            self.yesterday_out += n_out

    def values(self) -> dict[str, int]:
        mod = 1 << 32
        return {
            "today_in": self.today_in % mod,
            "today_out": self.today_out % mod,
            "yesterday_in": self.yesterday_in % mod,
            "yesterday_out": self.yesterday_out % mod,
        }

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day, **{k: getattr(self, k) for k in KEYS}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DailyTotals:
        def count(v: object) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
                raise TypeError(f"not a count: {v!r}")
            return v

        day = doc["day"]
        return cls(None if day is None else count(day), *(count(doc[k]) for k in KEYS))
