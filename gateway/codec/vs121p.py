"""Parse the JSON reports a VS121-P pushes over MQTT or HTTP POST (user guide chapter 8).

The decoded fields use the LoRaWAN VS121 codec's names (see DESIGN.md, "Decoded field names"), so
the state layer treats both models alike. Like every decoder here this is a pure function that
never raises on bad input: what cannot be used is reported in `errors`, and the rest of the
report is kept when it can be read on its own.

Facts and choices:
- The guide prints some keys two ways (`max_counted`/`Max_counted`, `dwell_time_data`/
  `dwel_time_data`, `dwell_start_time`/`dwel_start_time`); a gateway cannot know which one a
  firmware sends, so both are accepted. Its missing commas and quotes are typos in the document:
  the sensor sends real JSON and nothing else is accepted.
- `snapshot` (a camera image) is never read: it cannot reach `data`, and no message quotes
  input longer than 64 characters.
- Local times ("2022/12/20 18:15:52") take the offset from `time_info.timezone`. The guide does
  not say whether that offset already includes daylight saving time when `dst_status` is true
  (its settings page shows a fixed "(UTC-08:00)" zone beside a separate DST switch). We read
  `timezone` as the offset in effect and ignore `dst_status`; if a firmware turns out to send
  the standard offset, this is the one place to add the hour.
- Times with their own offset ("2022-12-20T18:15:52+03:00") use that offset. Timestamps are
  whole unix seconds (the guide shows none, but fractions would be dropped).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from gateway.codec.result import DecodeResult, new_result

MAX_BODY_BYTES: Final = 1024 * 1024
MAX_REGIONS: Final = 16

INTERVAL: Final = "interval"
TRIGGER: Final = "trigger"

# Counts end up in 32-bit Modbus registers and BACnet reals; anything larger is corrupt input.
_MAX_VALUE: Final = 2**32 - 1
# Longest input value quoted in a message; longer ones are described, never echoed.
_MAX_SHOWN: Final = 64
# A hostile body could produce one error per list entry; keep results readable.
_MAX_ERRORS: Final = 32

_FLOW_AREAS: Final = "ABCD"

# Report times outside this span come from a sensor whose clock was never set (or from
# corrupt input); as timestamps they would only mislead.
_EARLIEST: Final = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
_LATEST: Final = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())

_LOCAL_TIME = re.compile(
    r"([0-9]{4})/([0-9]{1,2})/([0-9]{1,2})[ T]([0-9]{1,2}):([0-9]{2}):([0-9]{2})", re.ASCII
)
# fromisoformat also takes bare dates; a report time must carry a time of day.
_ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}", re.ASCII)
_TIMEZONE = re.compile(
    r"(UTC|GMT)?\s*(?:([+-])\s*([0-9]{1,2})(?::?([0-9]{2}))?)?", re.ASCII | re.IGNORECASE
)


def parse_report(obj: object) -> DecodeResult:
    """Decode one already-parsed VS121-P report (the JSON object of chapter 8)."""
    out = new_result()
    if not isinstance(obj, dict):
        _error(out, "report", f"expected a JSON object, got {_kind(obj)}")
        return out
    data = out["data"]

    event = _read_event(obj, out)
    if event is not None:
        data["event"] = event
    kind = _read_report_type(obj, out)
    if kind is not None:
        data["report_type"] = kind
    _read_device(obj, out)
    tz = _read_times(obj, kind, out)

    if event is not None:
        _EVENT_READERS[event](obj, kind, tz, out)
    _cap_errors(out)
    return out


def parse_report_bytes(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> DecodeResult:
    """Decode one report body as received over MQTT or HTTP.

    Bodies over `max_bytes` are refused before any parsing, so an oversized upload costs
    nothing but its length check.
    """
    if not isinstance(body, bytes | bytearray):
        return _only_error("body", f"expected bytes, got {_kind(body)}")
    if len(body) > max_bytes:
        return _only_error("body", f"{len(body)} bytes is over the {max_bytes}-byte limit")
    try:
        # utf-8-sig: some HTTP clients prepend a byte order mark; it carries no data.
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _only_error("body", f"not valid UTF-8 (byte {exc.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg names the problem without quoting the document.
        return _only_error(
            "body", f"not valid JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        )
    except RecursionError:
        return _only_error("body", "not usable JSON: nested too deeply")
    except ValueError:
        # Integers with more digits than Python converts by default.
        return _only_error("body", "not usable JSON: a number is too long")
    return parse_report(obj)


def report_identity(result: DecodeResult) -> str | None:
    """A key that is equal for repeated deliveries of the same report, for dropping duplicates.

    It combines the serial number, event, report type and report time (period end for interval
    reports). Trigger reports can come several to a second, each with new content, so their key
    also holds a digest of the decoded data: a redelivery decodes to the same data, a new
    trigger in the same second does not. Returns None when the report lacks any of these.
    """
    data = result.get("data")
    if not isinstance(data, dict):
        return None
    sn = data.get("sn")
    event = data.get("event")
    kind = data.get("report_type")
    stamp = data.get("timestamp")
    if not (isinstance(sn, str) and sn and isinstance(event, str) and event in _EVENT_READERS):
        return None
    if kind not in (INTERVAL, TRIGGER) or type(stamp) is not int:
        return None
    parts: list[object] = [sn, event, kind, stamp]
    if kind == TRIGGER:
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        parts.append(hashlib.sha256(canonical.encode()).hexdigest()[:16])
    # A JSON list keeps the parts apart whatever characters the serial number holds.
    return json.dumps(parts, separators=(",", ":"))


# --- messages --------------------------------------------------------------------------------


def _error(out: DecodeResult, field: str, reason: str) -> None:
    out["errors"].append(f"{field}: {reason}")


def _warn(out: DecodeResult, field: str, reason: str) -> None:
    out["warnings"].append(f"{field}: {reason}")


def _only_error(field: str, reason: str) -> DecodeResult:
    out = new_result()
    _error(out, field, reason)
    return out


def _cap_errors(out: DecodeResult) -> None:
    errors = out["errors"]
    if len(errors) > _MAX_ERRORS:
        dropped = len(errors) - _MAX_ERRORS
        del errors[_MAX_ERRORS:]
        errors.append(f"report: {dropped} further errors not listed")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    """The value's kind, plus the value itself when it is a short scalar."""
    kind = _kind(value)
    if isinstance(value, bool):
        return f"{kind} {'true' if value else 'false'}"
    if isinstance(value, int):
        # Checked by size first: str() of a huge integer is slow or refused.
        return f"{kind} {value}" if abs(value) < 10**18 else f"{kind} of over 18 digits"
    if isinstance(value, float):
        return f"{kind} {value!r}"
    if isinstance(value, str):
        if len(value) <= _MAX_SHOWN:
            shown = repr(value)
            if len(shown) <= _MAX_SHOWN + 2:
                return f"{kind} {shown}"
        return f"{kind} of {len(value)} characters"
    return kind


# --- values ----------------------------------------------------------------------------------


def _lookup(
    obj: Mapping[Any, Any], names: tuple[str, ...], prefix: str, out: DecodeResult
) -> tuple[str, object] | None:
    """The value under the first of `names` present, with its label, or None if none is.

    `names` lists one field's accepted spellings; the label uses the spelling the sensor sent.
    """
    present = [name for name in names if name in obj]
    if not present:
        return None
    if len(present) > 1:
        _warn(out, prefix + present[0], f"also sent as {present[1]!r}, which was ignored")
    return prefix + present[0], obj[present[0]]


def _count(value: object, field: str, out: DecodeResult, high: int = _MAX_VALUE) -> int | None:
    """A non-negative integer no larger than `high`, or None after an error naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int):
        _error(out, field, f"expected a non-negative integer, got {_show(value)}")
        return None
    if value < 0:
        _error(out, field, f"must not be negative, got {_show(value)}")
        return None
    if value > high:
        _error(out, field, f"{_show(value)} is over the maximum of {high}")
        return None
    return value


def _amount(value: object, field: str, out: DecodeResult) -> int | float | None:
    """A non-negative finite number (a duration), or None after an error naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        _error(out, field, f"expected a non-negative number, got {_show(value)}")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        _error(out, field, f"expected a finite number, got {_show(value)}")
        return None
    if value < 0:
        _error(out, field, f"must not be negative, got {_show(value)}")
        return None
    if value > _MAX_VALUE:
        _error(out, field, f"{_show(value)} is over the maximum of {_MAX_VALUE}")
        return None
    return value


def _region_number(value: object, field: str, out: DecodeResult) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        _error(out, field, f"expected a region number 1..{MAX_REGIONS}, got {_show(value)}")
        return None
    if not 1 <= value <= MAX_REGIONS:
        _error(out, field, f"region {_show(value)} is outside 1..{MAX_REGIONS}")
        return None
    return value


def _occupied(value: object, field: str, out: DecodeResult) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        _error(out, field, f"expected 0 (free) or 1 (occupied), got {_show(value)}")
        return None
    return value


def _short_text(value: object, field: str, out: DecodeResult) -> str | None:
    if not isinstance(value, str):
        _error(out, field, f"expected a string, got {_show(value)}")
        return None
    if not value.strip():
        _error(out, field, "is empty")
        return None
    if len(value) > _MAX_SHOWN:
        _error(out, field, f"{_show(value)} is longer than {_MAX_SHOWN}")
        return None
    return value


def _object(
    report: Mapping[Any, Any], names: tuple[str, ...], out: DecodeResult, *, required: bool
) -> tuple[str, Mapping[Any, Any]] | None:
    """A nested JSON object and its label, or None (with an error if it was needed or bad)."""
    found = _lookup(report, names, "", out)
    if found is None:
        if required:
            _error(out, names[0], "missing")
        return None
    label, value = found
    if not isinstance(value, dict):
        _error(out, label, f"expected an object, got {_show(value)}")
        return None
    return label, value


def _list(
    report: Mapping[Any, Any], names: tuple[str, ...], out: DecodeResult, *, required: bool
) -> tuple[str, list[Any]] | None:
    """A JSON list and its label, or None (with an error if it was needed or bad)."""
    found = _lookup(report, names, "", out)
    if found is None:
        if required:
            _error(out, names[0], "missing")
        return None
    label, value = found
    if not isinstance(value, list):
        _error(out, label, f"expected a list, got {_show(value)}")
        return None
    return label, value


def _take_count(
    obj: Mapping[Any, Any],
    names: tuple[str, ...],
    key: str,
    out: DecodeResult,
    *,
    required: bool,
    prefix: str = "",
) -> None:
    """Copy one count from the report into `data[key]`, checking it on the way."""
    found = _lookup(obj, names, prefix, out)
    if found is None:
        if required:
            _error(out, prefix + names[0], "missing")
        return
    label, value = found
    number = _count(value, label, out)
    if number is not None:
        out["data"][key] = number


# --- header: event, report type, device, times -----------------------------------------------


def _read_event(report: Mapping[Any, Any], out: DecodeResult) -> str | None:
    if "event" not in report:
        _error(out, "event", "missing; cannot tell which counts the report holds")
        return None
    raw = report["event"]
    if not isinstance(raw, str):
        _error(out, "event", f"expected a string, got {_show(raw)}")
        return None
    # "Region People Counting" -> "region_people_counting"; also takes already-normalised names.
    event = re.sub(r"[\s_-]+", "_", raw.strip().lower())
    if event not in _EVENT_READERS:
        _error(out, "event", f"unknown event, got {_show(raw)}")
        return None
    return event


def _read_report_type(report: Mapping[Any, Any], out: DecodeResult) -> str | None:
    raw = report.get("report_type")
    if isinstance(raw, str) and raw.strip().lower() in (INTERVAL, TRIGGER):
        return raw.strip().lower()

    # Fall back on the time fields, which differ between the two kinds of report.
    time_info = report.get("time_info")
    inferred = None
    if isinstance(time_info, dict):
        if "end_time" in time_info and "time" not in time_info:
            inferred = INTERVAL
        elif "time" in time_info and "end_time" not in time_info:
            inferred = TRIGGER

    if "report_type" in report:
        problem = f"expected 'interval' or 'trigger', got {_show(raw)}"
        _error(out, "report_type", problem)
        return None
    if inferred is None:
        _error(out, "report_type", "missing, and time_info does not show which kind it is")
        return None
    _warn(out, "report_type", f"missing; taken as {inferred!r} from time_info")
    return inferred


def _read_device(report: Mapping[Any, Any], out: DecodeResult) -> None:
    # The sensor may also be known by its MQTT topic or HTTP path, so a report without a
    # serial number is still usable; it just cannot be deduplicated.
    found = _object(report, ("device_info",), out, required=False)
    if found is None:
        if "device_info" not in report:
            _warn(out, "device_info", "missing; the report carries no serial number")
        return
    _label, info = found
    if "device_sn" not in info:
        _warn(out, "device_info.device_sn", "missing; the report carries no serial number")
    else:
        sn = _short_text(info["device_sn"], "device_info.device_sn", out)
        if sn is not None:
            out["data"]["sn"] = sn
    if "device_mac" in info:
        mac = _short_text(info["device_mac"], "device_info.device_mac", out)
        if mac is not None:
            out["data"]["device_mac"] = mac


def _read_times(report: Mapping[Any, Any], kind: str | None, out: DecodeResult) -> timezone | str:
    """Set `timestamp` (and `period_start`); return the report's zone for its other times.

    The zone comes back as a reason string when there is none to use, so that a later local
    time can say why it could not be read.
    """
    found = _object(report, ("time_info",), out, required=True)
    if found is None:
        return "time_info is missing or unusable"
    _label, info = found
    tz = _read_timezone(info, out)
    data = out["data"]

    if kind == INTERVAL:
        end = _time_field(info, "end_time", tz, out, required=True)
        if end is not None:
            data["timestamp"] = end
        start = _time_field(info, "start_time", tz, out, required=False)
        if start is not None:
            data["period_start"] = start
            if end is not None and start > end:
                _warn(out, "time_info.start_time", "is after time_info.end_time")
    elif kind == TRIGGER:
        stamp = _time_field(info, "time", tz, out, required=True)
        if stamp is not None:
            data["timestamp"] = stamp
    return tz


def _time_field(
    info: Mapping[Any, Any], name: str, tz: timezone | str, out: DecodeResult, *, required: bool
) -> int | None:
    field = f"time_info.{name}"
    if name not in info:
        if required:
            _error(out, field, "missing")
        else:
            _warn(out, field, "missing")
        return None
    return _unix_time(info[name], field, tz, out)


def _read_timezone(info: Mapping[Any, Any], out: DecodeResult) -> timezone | str:
    if "timezone" not in info:
        return "time_info.timezone is missing"
    raw = info["timezone"]
    zone = _parse_offset(raw)
    if zone is None:
        _error(out, "time_info.timezone", f"expected an offset like 'UTC+8:00', got {_show(raw)}")
        return "time_info.timezone is unreadable"
    return zone


def _parse_offset(raw: object) -> timezone | None:
    """'UTC+8:00', 'UTC-3:30', 'UTC', 'GMT+5:45', '+08:00' -> a fixed-offset zone."""
    if not isinstance(raw, str) or len(raw) > _MAX_SHOWN:
        return None
    match = _TIMEZONE.fullmatch(raw.strip())
    if match is None:
        return None
    prefix, sign, hours, minutes = match.groups()
    if sign is None:
        # A bare "UTC"/"GMT" is offset zero; an empty string is no zone at all.
        return UTC if prefix else None
    offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
    if int(minutes or 0) >= 60 or offset > timedelta(hours=14):
        return None
    return timezone(-offset if sign == "-" else offset)


def _unix_time(raw: object, field: str, tz: timezone | str, out: DecodeResult) -> int | None:
    """Read '2022/12/20 18:15:52' (local) or ISO 8601 as whole unix seconds."""
    if not isinstance(raw, str):
        _error(out, field, f"expected a time string, got {_show(raw)}")
        return None
    text = raw.strip()
    moment: datetime | None = None
    try:
        local = _LOCAL_TIME.fullmatch(text) if len(text) <= _MAX_SHOWN else None
        if local is not None:
            year, month, day, hour, minute, second = (int(part) for part in local.groups())
            moment = datetime(year, month, day, hour, minute, second)
        elif len(text) <= _MAX_SHOWN and _ISO_TIME.match(text):
            moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None:
        _error(out, field, f"cannot read {_show(raw)} as a time")
        return None
    if moment.tzinfo is None:
        if isinstance(tz, str):
            _error(out, field, f"{_show(raw)} has no UTC offset and {tz}")
            return None
        moment = moment.replace(tzinfo=tz)
    stamp = math.floor(moment.timestamp())
    if not _EARLIEST <= stamp < _LATEST:
        _error(out, field, f"{_show(raw)} is not in 2000..2099; is the sensor's clock set?")
        return None
    return stamp


# --- events ----------------------------------------------------------------------------------


def _read_region_counting(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    del tz  # region reports carry no per-entry times
    _take_count(report, ("current_total",), "people_count_all", out, required=True)
    # Only periodic reports carry the period maximum.
    _take_count(
        report, ("max_counted", "Max_counted"), "people_count_max", out, required=kind == INTERVAL
    )
    region_count = None
    if "total_mapped_regions" in report:
        raw = report["total_mapped_regions"]
        region_count = _count(raw, "total_mapped_regions", out, high=MAX_REGIONS)
        if region_count is not None:
            out["data"]["region_count"] = region_count

    usable, numbers = _region_numbers(report, out)
    if not usable:
        return
    if numbers is not None and region_count is not None:
        listed = sum(1 for n in numbers if n is not None)
        if listed != region_count:
            _warn(
                out,
                "total_mapped_regions",
                f"is {region_count} but numbering_regions lists {listed} regions",
            )

    per_region: tuple[tuple[str, str, Callable[[object, str, DecodeResult], int | None]], ...] = (
        ("occupancy", "", _occupied),
        ("current_counted", "_count", _count),
    )
    for name, suffix, check in per_region:
        found = _list(report, (name,), out, required=False)
        if found is None:
            continue
        _label, values = found
        for index, raw in enumerate(values):
            field = f"{name}[{index}]"
            region = _region_at(index, numbers, field, out)
            if region is None:
                continue
            value = check(raw, field, out)
            if value is not None:
                out["data"][f"region_{region}{suffix}"] = value


def _region_numbers(
    report: Mapping[Any, Any], out: DecodeResult
) -> tuple[bool, list[int | None] | None]:
    """(usable, numbers): the region number at each list position, None if positional.

    Not usable when `numbering_regions` is there but not a list: guessing positions then
    could put one region's count on another.
    """
    if "numbering_regions" not in report:
        return True, None
    found = _list(report, ("numbering_regions",), out, required=False)
    if found is None:
        for name in ("occupancy", "current_counted"):
            if name in report:
                _error(out, name, "not used, because numbering_regions is unusable")
        return False, None
    _label, raw_numbers = found
    numbers: list[int | None] = []
    seen: set[int] = set()
    for index, raw in enumerate(raw_numbers):
        field = f"numbering_regions[{index}]"
        number = _region_number(raw, field, out)
        if number is not None and number in seen:
            _error(out, field, f"region {number} is listed twice")
            number = None
        if number is not None:
            seen.add(number)
        numbers.append(number)
    return True, numbers


def _region_at(
    index: int, numbers: list[int | None] | None, field: str, out: DecodeResult
) -> int | None:
    if numbers is None:
        if index >= MAX_REGIONS:
            _error(out, field, f"no numbering_regions, and position {index} is past region 16")
            return None
        return index + 1
    if index >= len(numbers):
        _error(out, field, f"numbering_regions has no entry {index}")
        return None
    # A bad number was reported once, under numbering_regions.
    return numbers[index]


def _read_dwell_time(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    found = _list(report, ("dwell_time_data", "dwel_time_data"), out, required=True)
    if found is None:
        return
    label, entries = found
    if kind is None:
        _error(out, label, "not used: report_type is unknown, so the entries' meaning is too")
        return
    if kind == INTERVAL:
        _read_dwell_periods(label, entries, out)
    else:
        _read_dwell_events(label, entries, tz, out)


def _read_dwell_periods(label: str, entries: list[Any], out: DecodeResult) -> None:
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        field = f"{label}[{index}]"
        if not isinstance(entry, dict):
            _error(out, field, f"expected an object, got {_show(entry)}")
            continue
        region = _entry_region(entry, field, out)
        if region is None:
            continue
        if region in seen:
            _error(out, f"{field}.region", f"region {region} is listed twice")
            continue
        seen.add(region)
        for name, key in (("max_dwell_time", "max"), ("avg_dwell_time", "avg")):
            if name not in entry:
                _error(out, f"{field}.{name}", "missing")
                continue
            seconds = _amount(entry[name], f"{field}.{name}", out)
            if seconds is not None:
                out["data"][f"region_{region}_dwell_time_{key}"] = seconds


def _read_dwell_events(
    label: str, entries: list[Any], tz: timezone | str, out: DecodeResult
) -> None:
    events: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        field = f"{label}[{index}]"
        if not isinstance(entry, dict):
            _error(out, field, f"expected an object, got {_show(entry)}")
            continue
        event = _dwell_event(entry, field, tz, out)
        if event is not None:
            events.append(event)
    out["data"]["dwell_events"] = events


def _dwell_event(
    entry: Mapping[Any, Any], field: str, tz: timezone | str, out: DecodeResult
) -> dict[str, Any] | None:
    """One person's stay, or None (with errors) if any part of it is unusable."""
    region = _entry_region(entry, field, out)
    person = None
    if "people_id" not in entry:
        _error(out, f"{field}.people_id", "missing")
    else:
        person = _count(entry["people_id"], f"{field}.people_id", out)
    times: list[int | None] = []
    for names in (("dwell_start_time", "dwel_start_time"), ("dwell_end_time", "dwel_end_time")):
        found = _lookup(entry, names, field + ".", out)
        if found is None:
            _error(out, f"{field}.{names[0]}", "missing")
            times.append(None)
        else:
            times.append(_unix_time(found[1], found[0], tz, out))
    duration = None
    if "duration" not in entry:
        _error(out, f"{field}.duration", "missing")
    else:
        duration = _amount(entry["duration"], f"{field}.duration", out)
    start, end = times
    # Each None above has been reported; a partial stay would count wrongly downstream.
    if region is None or person is None or start is None or end is None or duration is None:
        return None
    if start > end:
        _warn(out, field, "starts after it ends")
    # The guide gives `duration` in milliseconds.
    return {
        "region": region,
        "people_id": person,
        "start": start,
        "end": end,
        "duration_s": duration / 1000,
    }


def _entry_region(entry: Mapping[Any, Any], field: str, out: DecodeResult) -> int | None:
    if "region" not in entry:
        _error(out, f"{field}.region", "missing")
        return None
    return _region_number(entry["region"], f"{field}.region", out)


def _read_line_crossing(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    del tz  # line reports carry no per-entry times
    # With an unknown report type nothing is required, but whatever is there is used.
    interval, trigger = kind in (INTERVAL, None), kind in (TRIGGER, None)
    if interval:
        _take_count(report, ("in_counted",), "people_in", out, required=kind == INTERVAL)
        _take_count(report, ("out_counted",), "people_out", out, required=kind == INTERVAL)
        totals = _object(report, ("total_data",), out, required=False)
        if totals is not None:
            prefix = totals[0] + "."
            for name, key in (
                ("in_cumulative_counted", "people_total_in"),
                ("out_cumulative_counted", "people_total_out"),
            ):
                _take_count(totals[1], (name,), key, out, required=True, prefix=prefix)
    if trigger:
        line = _object(report, ("line_trigger_data",), out, required=kind == TRIGGER)
        if line is not None:
            prefix = line[0] + "."
            _take_count(line[1], ("in",), "line_in", out, required=True, prefix=prefix)
            _take_count(line[1], ("out",), "line_out", out, required=True, prefix=prefix)


def _read_people_flow(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    del kind, tz  # the guide documents only the periodic flow report; read it the same way
    found = _object(report, ("flow_data",), out, required=True)
    if found is None:
        return
    label, flows = found
    known = set()
    for source in _FLOW_AREAS:
        for target in _FLOW_AREAS:
            name = f"{source}-{target}"
            known.add(name)
            key = f"{source.lower()}_to_{target.lower()}"
            _take_count(flows, (name,), key, out, required=True, prefix=label + ".")
    unknown = sum(1 for name in flows if name not in known)
    if unknown:
        _warn(out, label, f"ignored {unknown} unknown key(s); expected 'A-A'..'D-D'")


_EventReader = Callable[[Mapping[Any, Any], str | None, timezone | str, DecodeResult], None]

_EVENT_READERS: Final[dict[str, _EventReader]] = {
    "region_people_counting": _read_region_counting,
    "dwell_time_detection": _read_dwell_time,
    "line_crossing_counting": _read_line_crossing,
    "people_flow_analysis": _read_people_flow,
}
