"""The overcrowding alarm's rules as pure code: what is measured, when the alarm switches, and
what the relay and its contact do. No I/O and no clock of its own: times are given by the caller
(monotonic seconds), so every rule is tested with a hand-moved clock.

The alarm, like the VS121-P's "Overcrowding Alarm":
- comes on when the measured count is above the threshold (not at it: "over the trigger
  threshold"), and goes off again when it has fallen to ``threshold - hysteresis`` or below
  (hysteresis 0: as soon as it is back within the threshold);
- once switched, stays on for at least ``min_on`` and off for at least ``min_off`` seconds; a
  change asked for sooner waits, and happens then only if the count still asks for it;
- while its data is stale (a sensor offline or never heard from), ``on_stale`` decides: alarm,
  clear, or hold the state it has. The minimum times apply to these changes too.

The relay is a commandable output with BACnet's 16 priority levels: the alarm is the automatic
command at level 16, an operator's override (level 8 from a BMS or PLC, or any other level but 6)
wins over it, and relinquishing the override returns the relay to automatic. The relay "active"
means signalling overcrowded; the contact is then in the rule's ``contact_in_alarm`` position
(open by default, as the VS121-P's DO). The output (GPIO line, module coil) is energised exactly
while the contact is to be closed: the relay's normally-open contact is the one wired.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from objects.pointmap import PRIORITY_LEVELS

AUTOMATIC_LEVEL = PRIORITY_LEVELS  # 16: the alarm's own command
OVERRIDE_LEVEL = 8  # where the Modbus override register and coil write
MINIMUM_ON_OFF_LEVEL = 6  # reserved by BACnet for minimum on/off time: never written here

TOTAL_KEY = "people_count_all"
_REGION_COUNT = re.compile(r"^region_(\d+)_count$")

# Status word bits (the rule's "Alarm Status" point).
STATUS_ALARM = 0x01
STATUS_ACTIVE = 0x02
STATUS_CONTACT_CLOSED = 0x04
STATUS_OVERRIDDEN = 0x08
STATUS_STALE = 0x10
STATUS_FAULT = 0x20


class Trigger(StrEnum):
    TOTAL = "total"  # people_count_all, added up over the rule's sensors
    ANY_REGION = "any_region"  # the fullest single region of any of the rule's sensors


class OnStale(StrEnum):
    ALARM = "alarm"
    CLEAR = "clear"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class SensorReading:
    """What the rule needs of one sensor: whether it is fresh, and its current values."""

    online: bool
    values: Mapping[str, float]


def measure(trigger: Trigger, readings: Iterable[SensorReading]) -> float | None:
    """The number the rule compares with its threshold; None when its data is not usable (a
    sensor stale, or without a count yet).

    ``any_region`` takes the largest region_N_count; a sensor that reports no region counts
    counts with its whole view (people_count_all), as the VS121-P does when no region is drawn.
    """
    total = 0.0
    fullest = -math.inf
    for reading in readings:
        if not reading.online:
            return None
        whole = reading.values.get(TOTAL_KEY)
        if trigger is Trigger.TOTAL:
            if whole is None:
                return None
            total += whole
            continue
        regions = [v for k, v in reading.values.items() if _REGION_COUNT.match(k)]
        if regions:
            fullest = max(fullest, *regions)
        elif whole is not None:
            fullest = max(fullest, whole)
        else:
            return None
    if trigger is Trigger.TOTAL:
        return total
    return None if fullest == -math.inf else fullest


@dataclass
class AlarmLogic:
    """One rule's alarm state machine (hysteresis, minimum on/off times, stale policy)."""

    threshold: float
    hysteresis: float = 0.0
    min_on: float = 0.0
    min_off: float = 0.0
    on_stale: OnStale = OnStale.HOLD
    active: bool = False
    since: float = -math.inf  # monotonic time of the last switch
    stale: bool = True  # the last update had no usable data
    measured: float | None = None
    pending: float | None = field(default=None)  # when a held-back switch may happen

    def wanted(self, measured: float | None) -> bool:
        """The state the data asks for, before minimum times."""
        if measured is None:
            if self.on_stale is OnStale.ALARM:
                return True
            if self.on_stale is OnStale.CLEAR:
                return False
            return self.active
        if self.active:
            # A threshold written below the hysteresis clears at zero, never below.
            return measured > max(self.threshold - self.hysteresis, 0.0)
        return measured > self.threshold

    def update(self, measured: float | None, now: float) -> bool:
        """Re-evaluate with the current data; True if the alarm switched."""
        self.measured = measured
        self.stale = measured is None
        want = self.wanted(measured)
        if want == self.active:
            self.pending = None
            return False
        hold = self.min_on if self.active else self.min_off
        allowed_at = self.since + hold
        if now < allowed_at:
            self.pending = allowed_at
            return False
        self.active = want
        self.since = now
        self.pending = None
        return True


class CommandSlots:
    """A relay's 16 priority levels; None is a relinquished level."""

    def __init__(self) -> None:
        self.slots: list[bool | None] = [None] * PRIORITY_LEVELS

    def write(self, level: int, value: bool | None) -> None:
        if not 1 <= level <= PRIORITY_LEVELS:
            raise ValueError(f"priority {level} outside 1..{PRIORITY_LEVELS}")
        self.slots[level - 1] = value

    def level(self) -> int | None:
        """The level in control (the highest priority, i.e. lowest number, that holds a value)."""
        for level, slot in enumerate(self.slots, start=1):
            if slot is not None:
                return level
        return None

    def present(self) -> bool:
        """The relay's present value (inactive when every level is relinquished)."""
        level = self.level()
        return False if level is None else bool(self.slots[level - 1])

    def overridden(self) -> bool:
        level = self.level()
        return level is not None and level < AUTOMATIC_LEVEL

    def override_code(self) -> int:
        """Level 8 as the Modbus override register shows it: 0 none, 1 inactive, 2 active."""
        slot = self.slots[OVERRIDE_LEVEL - 1]
        return 0 if slot is None else (2 if slot else 1)


def contact_closed(active: bool, contact_in_alarm: str) -> bool:
    """Whether the contact is closed for a relay state; energised == closed (NO contact)."""
    contact_open = active if contact_in_alarm == "open" else not active
    return not contact_open


def shutdown_energised(on_shutdown: str) -> bool | None:
    """The output level to leave at shutdown; None leaves it as it is."""
    if on_shutdown == "hold":
        return None
    return on_shutdown == "closed"
