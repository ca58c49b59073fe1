"""Which of a sensor's values are current: reported, no longer reported, or never reported.

A sensor's reporting type decides which values it sends: the VS121 sends the total and region
occupancy (04c9) in "Occupancy" mode but per-region counts (07d5/08d5) and no total in "Region
People Counting" mode; a VS121-P may drop `total_data`. A live report that carries the values of
one type and none of the other's says the sensor no longer sends the other's. Such a value keeps
its last number but must not look current: sinks mark it and alarm rules ignore it, until the
sensor reports it again.

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
_REGION_BIT: Final = re.compile(r"^region_\d+$")
_REGION_COUNT: Final = re.compile(r"^region_(\d+)_count$")
_FIRST_EIGHT: Final = tuple(f"region_{n}_count" for n in range(1, 9))


@functools.lru_cache(maxsize=4096)  # called per key per report; the keys are the catalog's
def family(key: str) -> str | None:
    """Which of a sensor's reporting types sends a value, where types exclude each other:
    "bitmap" (Occupancy: mapped regions and their occupancy), "counts" (Region People Counting:
    people per region), "line" / "line_total" (periodic line counts / the sensor's own totals);
    None for values every type may carry (the total, the interval maximum, triggers, ...)."""
    if key == "region_count" or _REGION_BIT.match(key):
        return "bitmap"
    if _REGION_COUNT.match(key):
        return "counts"
    if key in ("people_in", "people_out"):
        return "line"
    if key in ("people_total_in", "people_total_out"):
        return "line_total"
    return None


# A report with values of the first family and none of the second shows the second is no
# longer sent (the VS121's two region reporting types; a VS121-P without total_data).
_SUPERSEDES: Final = (("bitmap", "counts"), ("counts", "bitmap"), ("line", "line_total"))


def with_derived_total(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The report, with People Count as the sum of its region counts when it carries region
    counts and no total (the VS121's Region People Counting reporting type). Only a whole
    region report counts (07d5 always carries regions 1-8): a partial set of fields, as a
    network server's own codec may send, is no total."""
    if TOTAL_KEY in data or not all(k in data for k in _FIRST_EIGHT):
        return data
    counts = [v for k, v in data.items() if _REGION_COUNT.match(k)]
    if not all(type(v) is int and 0 <= v < 1 << 16 for v in counts):
        return data
    return {**data, TOTAL_KEY: sum(counts)}


def not_reported_after(
    report: Collection[str], keys: Iterable[str], before: Collection[str]
) -> set[str]:
    """Keys no longer reported once a live report carrying `report` has been applied.

    Only a change of reporting type marks a value: a report that carries a partial set of
    values (a trigger, a pre-decoded object from a network server) marks nothing."""
    families = {f for f in map(family, report) if f is not None}
    out = {k for k in before if k not in report}
    gone = {old for new, old in _SUPERSEDES if new in families and old not in families}
    if gone:
        out.update(k for k in keys if family(k) in gone)
    return out


def status(key: str, values: Mapping[str, Any], not_reported: Collection[str], online: bool) -> str:
    if key not in values:
        return NEVER_REPORTED
    if key in not_reported:
        return NOT_REPORTED
    return CURRENT if online else STALE
