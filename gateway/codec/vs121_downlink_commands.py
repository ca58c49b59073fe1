"""Every VS121 downlink command of chapter 7 of the user guide, one registered class each.

The classes follow the guide's sections: general, reset, people counting, report, schedule,
LoRaWAN and Milesight D2D settings. Each declares its channel and type bytes and its fields in
the guide's byte order, annotated with the field kinds of `vs121_downlink_fields`; the `Command`
base in `vs121_downlink_registry` does the rest. Where the guide and the vendor's encoder
disagree on a layout, `vs121_downlink` says which one is followed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Self

from gateway.codec.vs121_downlink_fields import (
    FEATURE,
    FLAG,
    WEEKDAYS,
    ChannelBits,
    Choice,
    Feature,
    HexBytes,
    HexWord,
    HourMinute,
    MinuteOfDay,
    UInt,
    Weekday,
    WeekdayBits,
)
from gateway.codec.vs121_downlink_registry import Command, register
from gateway.errors import EncodeError

# --- general settings -----------------------------------------------------------------------------


@register
@dataclass(frozen=True, kw_only=True)
class Reboot(Command):
    """Restart the device (ff 10 ff)."""

    NAME = "reboot"
    HEADER = b"\xff\x10"
    FIXED = b"\xff"


@register
@dataclass(frozen=True, kw_only=True)
class Wifi(Command):
    """Switch the device's Wi-Fi access point (used for its web setup) on or off (ff 42)."""

    NAME = "wifi"
    HEADER = b"\xff\x42"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class SystemTime(Command):
    """Set the device clock to a unix time in seconds (ff 11)."""

    NAME = "system_time"
    HEADER = b"\xff\x11"
    timestamp: Annotated[int, UInt(4, 0, 0xFFFF_FFFF)]


@register
@dataclass(frozen=True, kw_only=True)
class TimeSync(Command):
    """Take the time from the gateway, or set it by hand (f9 91); gateway mode sends timestamp 0."""

    NAME = "time_sync"
    HEADER = b"\xf9\x91"
    mode: Annotated[Literal["gateway", "manual"], Choice({"gateway": 0, "manual": 1})]
    timestamp: Annotated[int, UInt(4, 0, 0xFFFF_FFFF)] = 0

    def _check(self) -> None:
        if self.mode == "gateway" and self.timestamp != 0:
            raise EncodeError(
                f"time_sync.timestamp: {self.timestamp!r} is not allowed; expected 0 (or no "
                "timestamp) when mode is 'gateway'"
            )
        if self.mode == "manual" and self.timestamp == 0:
            raise EncodeError("time_sync.timestamp: manual mode needs a unix time above 0")


@register
@dataclass(frozen=True, kw_only=True)
class DebugLog(Command):
    """Choose the level of the device's downloadable log (f9 89 00 <level>)."""

    NAME = "debug_log"
    HEADER = b"\xf9\x89"
    FIXED = b"\x00"
    level: Annotated[Literal["error", "debug"], Choice({"error": 2, "debug": 4})]


# --- reset settings -------------------------------------------------------------------------------


@register
@dataclass(frozen=True, kw_only=True)
class ResetCumulativeCount(Command):
    """Zero the accumulated counts now (ff 51 ff)."""

    NAME = "reset_cumulative_count"
    HEADER = b"\xff\x51"
    FIXED = b"\xff"


@register
@dataclass(frozen=True, kw_only=True)
class ResetScheduleEnable(Command):
    """Turn resetting the accumulated counts on a schedule on or off (f9 94)."""

    NAME = "reset_schedule_enable"
    HEADER = b"\xf9\x94"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class ResetSchedule(Command):
    """Modify, add or delete one of the device's 5 reset schedules (f9 95).

    `index` 0 is the first schedule. A delete needs only the index; days and time default to none
    and 00:00. Example from the guide: add, index 0, every day, 20:00 -> f9 95 01 00 7f b0 04.
    """

    NAME = "reset_schedule"
    HEADER = b"\xf9\x95"
    action: Annotated[
        Literal["modify", "add", "delete"], Choice({"modify": 0, "add": 1, "delete": 2})
    ]
    index: Annotated[int, UInt(1, 0, 4)]
    days: Annotated[frozenset[Weekday], WeekdayBits()] = frozenset()
    time: Annotated[dt.time, MinuteOfDay()] = dt.time(0, 0)

    def _check(self) -> None:
        if self.action != "delete" and not self.days:
            raise EncodeError(
                f"reset_schedule.days: an empty set is not allowed when action is "
                f"{self.action!r}; expected {WeekdayBits.allowed}"
            )


# --- people counting settings ---------------------------------------------------------------------


@register
@dataclass(frozen=True, kw_only=True)
class RegionPeopleCounting(Command):
    """Turn region people counting on or off (ff 50)."""

    NAME = "region_people_counting"
    HEADER = b"\xff\x50"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class DetectionRegion(Command):
    """Count inside (mapped) or outside (non-mapped) the drawn regions, and report occupancy or
    per-region counts (f9 96)."""

    NAME = "detection_region"
    HEADER = b"\xf9\x96"
    enable: Annotated[bool, FLAG]
    area: Annotated[Literal["mapped", "non_mapped"], Choice({"mapped": 0, "non_mapped": 1})]
    reporting_type: Annotated[
        Literal["occupancy", "region_people_counting"],
        Choice({"occupancy": 0, "region_people_counting": 1}),
    ]


@register
@dataclass(frozen=True, kw_only=True)
class MinDwellTime(Command):
    """Dwell time detection and its minimum dwell time in seconds, default 5 (f9 92). The guide
    gives no range, so any 16-bit value is sent."""

    NAME = "min_dwell_time"
    HEADER = b"\xf9\x92"
    enable: Annotated[bool, FLAG]
    seconds: Annotated[int, UInt(2, 0, 0xFFFF)] = 5


@register
@dataclass(frozen=True, kw_only=True)
class LineCrossingCounting(Command):
    """Turn line crossing counting on or off (ff 48)."""

    NAME = "line_crossing_counting"
    HEADER = b"\xff\x48"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class FilterUTurns(Command):
    """Ignore people who turn back at the counting line (f9 98)."""

    NAME = "filter_u_turns"
    HEADER = b"\xf9\x98"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class ScheduleEnable(Command):
    """Turn the weekly working schedule of one feature on or off (f9 97)."""

    NAME = "schedule_enable"
    HEADER = b"\xf9\x97"
    feature: Annotated[Feature, FEATURE]
    enable: Annotated[bool, FLAG]


# --- report settings ------------------------------------------------------------------------------


@register
@dataclass(frozen=True, kw_only=True)
class ReportingInterval(Command):
    """Periodic report interval in seconds for the "from now on" scheme (ff 03)."""

    NAME = "reporting_interval"
    HEADER = b"\xff\x03"
    seconds: Annotated[int, UInt(2, 5, 0xFFFF)]


@register
@dataclass(frozen=True, kw_only=True)
class PeriodicReportScheme(Command):
    """Report on the clock's round times, or every interval from now on (f9 10)."""

    NAME = "periodic_report_scheme"
    HEADER = b"\xf9\x10"
    scheme: Annotated[
        Literal["on_the_dot", "from_now_on"], Choice({"on_the_dot": 0, "from_now_on": 1})
    ]


@register
@dataclass(frozen=True, kw_only=True)
class OnTheDotInterval(Command):
    """Report interval in minutes for the "on the dot" scheme (f9 11)."""

    NAME = "on_the_dot_interval"
    HEADER = b"\xf9\x11"
    minutes: Annotated[
        Literal[5, 10, 15, 30, 60, 240, 360, 480, 720],
        Choice({m: code for code, m in enumerate((5, 10, 15, 30, 60, 240, 360, 480, 720))}),
    ]


@register
@dataclass(frozen=True, kw_only=True)
class ReportByResultMode(Command):
    """Report by result when a count goes between zero and non-zero, or on every change (ff 45)."""

    NAME = "report_by_result_mode"
    HEADER = b"\xff\x45"
    mode: Annotated[
        Literal["zero_non_zero", "on_change"], Choice({"zero_non_zero": 0, "on_change": 1})
    ]


@register
@dataclass(frozen=True, kw_only=True)
class Debounce(Command):
    """Lower a count only after people stay out this many seconds, default 2 (ff 46). The guide
    sends one byte (ff 46 01 03: enabled, 3 s); 1..60 s is the vendor encoder's range."""

    NAME = "debounce"
    HEADER = b"\xff\x46"
    enable: Annotated[bool, FLAG]
    seconds: Annotated[int, UInt(1, 1, 60)] = 2


@register
@dataclass(frozen=True, kw_only=True)
class TriggerReport(Command):
    """Report line crossings as they happen (f9 3d)."""

    NAME = "trigger_report"
    HEADER = b"\xf9\x3d"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class ReportWithTimestamp(Command):
    """Add a timestamp to reports (f9 93)."""

    NAME = "report_with_timestamp"
    HEADER = b"\xf9\x93"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class RegionReportRegularly(Command):
    """Send region people counting reports periodically (ff 43)."""

    NAME = "region_report_regularly"
    HEADER = b"\xff\x43"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class RegionReportByResult(Command):
    """Send region people counting reports when the result changes (ff 44)."""

    NAME = "region_report_by_result"
    HEADER = b"\xff\x44"
    enable: Annotated[bool, FLAG]


# --- schedule -------------------------------------------------------------------------------------


@register
@dataclass(frozen=True, kw_only=True)
class Schedule(Command):
    """One of three daily working periods of a feature on one weekday (f9 99).

    Example from the guide: region people counting, Sunday, period 1, 08:00-09:00 ->
    f9 99 00 00 00 08 00 09 00.
    """

    NAME = "schedule"
    HEADER = b"\xf9\x99"
    feature: Annotated[Feature, FEATURE]
    weekday: Annotated[Weekday, Choice({day: bit for bit, day in enumerate(WEEKDAYS)})]
    period: Annotated[int, UInt(1, 1, 3, bias=1)]
    start: Annotated[dt.time, HourMinute()]
    end: Annotated[dt.time, HourMinute()]


# --- LoRaWAN settings (each makes the device rejoin) ----------------------------------------------


@register
@dataclass(frozen=True, kw_only=True)
class ChannelMask(Command):
    """Which of the 16 uplink channels of one block are enabled (ff 05). Block 1 holds channels
    0-15, block 2 16-31, ... block 6 80-95; `channels` lists enabled channel numbers of that block.
    Example from the guide: block 1, channels 8-15 -> ff 05 01 ff 00."""

    NAME = "channel_mask"
    HEADER = b"\xff\x05"
    block: Annotated[int, UInt(1, 1, 6)]
    channels: Annotated[frozenset[int], ChannelBits()]

    def _check(self) -> None:
        first = (self.block - 1) * 16
        outside = sorted(c for c in self.channels if not first <= c < first + 16)
        if outside:
            raise EncodeError(
                f"channel_mask.channels: {outside!r} is not allowed; expected channels "
                f"{first}..{first + 15} for block {self.block}"
            )

    def _packed(self) -> dict[str, Any]:
        first = (self.block - 1) * 16
        return {"block": self.block, "channels": frozenset(c - first for c in self.channels)}

    @classmethod
    def _from_packed(cls, values: dict[str, Any]) -> Self:
        first = (values["block"] - 1) * 16
        offsets: frozenset[int] = values["channels"]
        return cls(block=values["block"], channels=frozenset(first + o for o in offsets))


@register
@dataclass(frozen=True, kw_only=True)
class Adr(Command):
    """Adaptive data rate on or off (ff 40)."""

    NAME = "adr"
    HEADER = b"\xff\x40"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class ApplicationPort(Command):
    """The LoRaWAN port the device uses, default 85 (ff 41)."""

    NAME = "application_port"
    HEADER = b"\xff\x41"
    port: Annotated[int, UInt(1, 1, 223)]


@register
@dataclass(frozen=True, kw_only=True)
class Rejoin(Command):
    """Rejoin when this many LinkCheckReq messages go unanswered (f9 85)."""

    NAME = "rejoin"
    HEADER = b"\xf9\x85"
    enable: Annotated[bool, FLAG]
    retries: Annotated[int, UInt(1, 4, 32)]


@register
@dataclass(frozen=True, kw_only=True)
class ConfirmedMode(Command):
    """Send confirmed uplinks (ff 04)."""

    NAME = "confirmed_mode"
    HEADER = b"\xff\x04"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class SpreadingFactor(Command):
    """Uplink spreading factor when ADR is off (f9 86): SF12 is byte 00, SF7 byte 05."""

    NAME = "spreading_factor"
    HEADER = b"\xf9\x86"
    sf: Annotated[Literal[7, 8, 9, 10, 11, 12], Choice({sf: 12 - sf for sf in range(12, 6, -1)})]


@register
@dataclass(frozen=True, kw_only=True)
class TxPower(Command):
    """Transmit power level, an index into the region's power table (f9 87)."""

    NAME = "tx_power"
    HEADER = b"\xf9\x87"
    level: Annotated[int, UInt(1, 0, 14)]


@register
@dataclass(frozen=True, kw_only=True)
class LorawanVersion(Command):
    """LoRaWAN MAC version (f9 8b)."""

    NAME = "lorawan_version"
    HEADER = b"\xf9\x8b"
    version: Annotated[Literal["1.0.2", "1.0.3"], Choice({"1.0.2": 1, "1.0.3": 2})]


@register
@dataclass(frozen=True, kw_only=True)
class Rx2DataRate(Command):
    """RX2 data rate DR0 (SF12) .. DR5 (SF7), all 125 kHz (f9 8c)."""

    NAME = "rx2_data_rate"
    HEADER = b"\xf9\x8c"
    data_rate: Annotated[int, UInt(1, 0, 5)]


@register
@dataclass(frozen=True, kw_only=True)
class Rx2Frequency(Command):
    """RX2 frequency in Hz (f9 8d). The guide gives no range; 100 MHz..1 GHz spans every LoRaWAN
    region and catches a value given in MHz or kHz."""

    NAME = "rx2_frequency"
    HEADER = b"\xf9\x8d"
    frequency_hz: Annotated[int, UInt(4, 100_000_000, 1_000_000_000)]


# --- Milesight D2D settings -----------------------------------------------------------------------


@register
@dataclass(frozen=True, kw_only=True)
class D2d(Command):
    """Milesight device-to-device control on or off (ff 84)."""

    NAME = "d2d"
    HEADER = b"\xff\x84"
    enable: Annotated[bool, FLAG]


@register
@dataclass(frozen=True, kw_only=True)
class D2dKey(Command):
    """The first 16 hex digits of the D2D key; the device fixes the last 16 as 0 (ff 35)."""

    NAME = "d2d_key"
    HEADER = b"\xff\x35"
    key: Annotated[bytes, HexBytes(8)]


_REGION: Final = UInt(1, 1, 16, bias=1)


@register
@dataclass(frozen=True, kw_only=True)
class D2dOccupied(Command):
    """The D2D command a region sends when it becomes occupied (f9 8e)."""

    NAME = "d2d_occupied"
    HEADER = b"\xf9\x8e"
    region: Annotated[int, _REGION]
    enable: Annotated[bool, FLAG]
    control_command: Annotated[int, HexWord()]


@register
@dataclass(frozen=True, kw_only=True)
class D2dVacant(Command):
    """The D2D command a region sends once it has stayed vacant for the delay (f9 90)."""

    NAME = "d2d_vacant"
    HEADER = b"\xf9\x90"
    region: Annotated[int, _REGION]
    enable: Annotated[bool, FLAG]
    control_command: Annotated[int, HexWord()]
    delay_seconds: Annotated[int, UInt(2, 0, 600)]
