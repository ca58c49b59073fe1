"""Which of a sensor's values are current: reported, no longer reported, or never reported.

A sensor's reporting type decides which values it sends: the VS121 sends the total and region
occupancy (04c9) in "Occupancy" mode but per-region counts (07d5/08d5) and no total in "Region
People Counting" mode; a VS121-P may drop `total_data`. Values come in families that one report
carries together, so a live report that carries any value of a family and not another one of the
same family says the sensor no longer reports that one. Such a value keeps its last number but
must not look current: sinks mark it and alarm rules ignore it, until the sensor reports it again.

Point status, as `/api/sensors` shows it:
- current: reported by the sensor's latest report of its kind, and the sensor is online;
- stale: the sensor is offline (silent past its stale time);
- not-reported: the sensor's latest report of its kind left it out (its reporting type changed);
- never-reported: the sensor has not sent it since the gateway's state began.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

CURRENT: Final = "current"
STALE: Final = "stale"
NOT_REPORTED: Final = "not-reported"
NEVER_REPORTED: Final = "never-reported"

TOTAL_KEY: Final = "people_count_all"
_REGION: Final = re.compile(r"^region_\d+(_count)?$")
_REGION_COUNT: Final = re.compile(r"^region_(\d+)_count$")
_FLOW: Final = re.compile(r"^[a-d]_to_[a-d]$")
_LINE_PERIOD: Final = frozenset({"people_in", "people_out", "people_total_in", "people_total_out"})


@functools.lru_cache(maxsize=4096)  # called per key per report; the keys are the catalog's
def family(key: str) -> str | None:
    """The group of values one report carries together; None for values that stand alone
    (a trigger's counts, the interval maximum, which only some reports of a family carry)."""
    if key in (TOTAL_KEY, "region_count") or _REGION.match(key):
        return "occupancy"
    if key in _LINE_PERIOD:
        return "line"
    if "dwell_time" in key:
        return "dwell"
    if _FLOW.match(key):
        return "flow"
    return None


def with_derived_total(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The report, with People Count as the sum of its region counts when it carries region
    counts and no total (the VS121's Region People Counting reporting type)."""
    if TOTAL_KEY in data:
        return data
    counts = [v for k, v in data.items() if _REGION_COUNT.match(k)]
    if not counts or not all(type(v) is int and 0 <= v < 1 << 16 for v in counts):
        return data
    return {**data, TOTAL_KEY: sum(counts)}


def not_reported_after(
    report: Collection[str], keys: Iterable[str], before: Collection[str]
) -> set[str]:
    """Keys no longer reported once a live report carrying `report` has been applied."""
    families = {f for f in map(family, report) if f is not None}
    out = {k for k in before if k not in report}
    if families:
        out.update(k for k in keys if family(k) in families and k not in report)
    return out


def status(key: str, values: Mapping[str, Any], not_reported: Collection[str], online: bool) -> str:
    if key not in values:
        return NEVER_REPORTED
    if key in not_reported:
        return NOT_REPORTED
    return CURRENT if online else STALE
