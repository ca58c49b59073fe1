"""Reading the times and the time zone in a VS121-P report, as whole unix seconds.

Used by the report readers in `vs121p`. Facts and choices:
- Local times ("2022/12/20 18:15:52") take the offset from `time_info.timezone`. The guide's
  settings page shows a fixed standard zone ("(UTC-08:00) ...") beside a separate daylight
  saving switch, so `timezone` is read as the standard offset and `dst_status: true` adds the
  hour (`read_timezone`). That keeps the sensor's clock steady across both changes: the hour
  repeated in autumn gets two different times, which the line counting (placed on the sensor's
  clock) needs to count both. The flag also enters the report identity, so even a firmware that
  sent the offset in effect would not have its repeated hour merged.
- Only the leading offset of `timezone` is read; a zone name after it is ignored.
- Times with their own offset ("2022-12-20T18:15:52+03:00") use that offset. Timestamps are
  whole unix seconds (the guide shows none, but fractions would be dropped).
- A report's zone is passed around as `timezone | str`: the string, given when there is no zone
  to use, says why, so that an error about a local time can explain why it could not be read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from gateway.codec import vs121p_fields as fields
from gateway.codec.result import DecodeResult

# Report times outside this span come from a sensor whose clock was never set (or from
# corrupt input); as timestamps they would only mislead.
_EARLIEST: Final = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
_LATEST: Final = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())

_LOCAL_TIME = re.compile(
    r"([0-9]{4})/([0-9]{1,2})/([0-9]{1,2})[ T]([0-9]{1,2}):([0-9]{2}):([0-9]{2})", re.ASCII
)
# fromisoformat also takes bare dates; a report time must carry a time of day.
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}", re.ASCII)
# The leading offset; Milesight firmware may follow it with a name ("UTC+8:00 China Standard
# Time") or wrap it ("(UTC-08:00) United States - Pacific"). A name must be set apart by a space
# or the closing parenthesis, so "UTC+8:75" is not read as "UTC+8" plus ":75".
_TIMEZONE = re.compile(
    r"\(?\s*(UTC|GMT)?\s*(?:([+-])\s*([0-9]{1,2})(?::?([0-9]{2}))?)?\s*(\))?(?:\s+.*|(?<=\)).*)?",
    re.ASCII | re.IGNORECASE | re.DOTALL,
)


def time_field(
    info: Mapping[Any, Any], name: str, tz: timezone | str, out: DecodeResult, *, required: bool
) -> int | None:
    """The time under `time_info.<name>`, or None after an error (or a warning if optional)."""
    field = f"time_info.{name}"
    if name not in info:
        if required:
            fields.error(out, field, "missing")
        else:
            fields.warn(out, field, "missing")
        return None
    return unix_time(info[name], field, tz, out)


def read_timezone(info: Mapping[Any, Any], out: DecodeResult) -> timezone | str:
    """The zone from `time_info.timezone`, or the reason there is none to use."""
    if "timezone" not in info:
        return "time_info.timezone is missing"
    raw = info["timezone"]
    zone = _parse_offset(raw)
    if zone is None:
        fields.error(
            out, "time_info.timezone", f"expected an offset like 'UTC+8:00', got {fields.show(raw)}"
        )
        return "time_info.timezone is unreadable"
    if info.get("dst_status") is True:  # the standard offset plus the daylight saving hour
        shifted = zone.utcoffset(None) + timedelta(hours=1)
        if shifted <= timedelta(hours=14):
            return timezone(shifted)
    return zone


def _parse_offset(raw: object) -> timezone | None:
    """'UTC+8:00', 'UTC-3:30', 'UTC', 'GMT+5:45', '+08:00' -> a fixed-offset zone.

    Text after the offset is a zone name and is ignored: 'UTC-0:00 WET/GMT' is UTC.
    """
    if not isinstance(raw, str):
        return None
    # Only the leading offset matters, so a long zone name is cut rather than refused.
    match = _TIMEZONE.fullmatch(raw[: fields.MAX_SHOWN].strip())
    if match is None:
        return None
    prefix, sign, hours, minutes, _closing = match.groups()
    if sign is None:
        # A bare "UTC"/"GMT" is offset zero; an empty string is no zone at all.
        return UTC if prefix else None
    offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
    if int(minutes or 0) >= 60 or offset > timedelta(hours=14):
        return None
    return timezone(-offset if sign == "-" else offset)


def unix_time(raw: object, field: str, tz: timezone | str, out: DecodeResult) -> int | None:
    """Read '2022/12/20 18:15:52' (local) or ISO 8601 as whole unix seconds."""
    if not isinstance(raw, str):
        fields.error(out, field, f"expected a time string, got {fields.show(raw)}")
        return None
    text = raw.strip()
    moment: datetime | None = None
    try:
        local = _LOCAL_TIME.fullmatch(text) if len(text) <= fields.MAX_SHOWN else None
        if local is not None:
            year, month, day, hour, minute, second = (int(part) for part in local.groups())
            moment = datetime(year, month, day, hour, minute, second)
        elif len(text) <= fields.MAX_SHOWN and _ISO_TIME.match(text):
            moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None:
        fields.error(out, field, f"cannot read {fields.show(raw)} as a time")
        return None
    if moment.tzinfo is None:
        if isinstance(tz, str):
            fields.error(out, field, f"{fields.show(raw)} has no UTC offset and {tz}")
            return None
        moment = moment.replace(tzinfo=tz)
    stamp = math.floor(moment.timestamp())
    if not _EARLIEST <= stamp < _LATEST:
        fields.error(
            out, field, f"{fields.show(raw)} is not in 2000..2099; is the sensor's clock set?"
        )
        return None
    return stamp
