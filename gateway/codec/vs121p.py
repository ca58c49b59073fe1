"""Parse the JSON reports a VS121-P pushes over MQTT or HTTP POST (user guide chapter 8).

The decoded fields use the names of the LoRaWAN VS121 decoder (`gateway.codec.vs121_uplink`), so
the state layer treats both models alike. Like every decoder here this is a pure function that
never raises on bad input: what cannot be used is reported in `errors`, and the rest of the
report is kept when it can be read on its own.

This module reads the report's header and its four kinds of event; the checks on single values
and the wording of messages are in `vs121p_fields`, and the reading of times and time zones is in
`vs121p_time`.

Facts and choices:
- The guide prints some keys two ways (`max_counted`/`Max_counted`, `dwell_time_data`/
  `dwel_time_data`, `dwell_start_time`/`dwel_start_time`); a gateway cannot know which one a
  firmware sends, so both are accepted. Its missing commas and quotes are typos in the document:
  the sensor sends real JSON and nothing else is accepted.
- `snapshot` (a camera image) is never read: it cannot reach `data`, and no message quotes
  input longer than 64 characters.
- Local times take the offset from `time_info.timezone`, read as the offset in effect
  (`dst_status` does not shift it but enters the report identity); times with their own offset
  use that one. `vs121p_time` gives the reasons.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import timezone
from typing import Any, Final

from gateway.codec import vs121p_fields as fields
from gateway.codec import vs121p_time
from gateway.codec.result import DecodeResult, new_result
from gateway.codec.vs121p_fields import MAX_REGIONS

__all__ = [
    "INTERVAL",
    "MAX_BODY_BYTES",
    "MAX_REGIONS",
    "TRIGGER",
    "parse_report",
    "parse_report_bytes",
    "report_identity",
]

MAX_BODY_BYTES: Final = 1024 * 1024

INTERVAL: Final = "interval"
TRIGGER: Final = "trigger"

_FLOW_AREAS: Final = "ABCD"


def parse_report(obj: object) -> DecodeResult:
    """Decode one already-parsed VS121-P report (the JSON object of chapter 8)."""
    out = new_result()
    if not isinstance(obj, dict):
        fields.error(out, "report", f"expected a JSON object, got {fields.kind_of(obj)}")
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
    fields.cap_errors(out)
    return out


def parse_report_bytes(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> DecodeResult:
    """Decode one report body as received over MQTT or HTTP.

    Bodies over `max_bytes` are refused before any parsing, so an oversized upload costs
    nothing but its length check.
    """
    if not isinstance(body, bytes | bytearray):
        return fields.only_error("body", f"expected bytes, got {fields.kind_of(body)}")
    if len(body) > max_bytes:
        return fields.only_error("body", f"{len(body)} bytes is over the {max_bytes}-byte limit")
    try:
        # utf-8-sig: some HTTP clients prepend a byte order mark; it carries no data.
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return fields.only_error("body", f"not valid UTF-8 (byte {exc.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg names the problem without quoting the document.
        return fields.only_error(
            "body", f"not valid JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        )
    except RecursionError:
        return fields.only_error("body", "not usable JSON: nested too deeply")
    except ValueError:
        # Integers with more digits than Python converts by default.
        return fields.only_error("body", "not usable JSON: a number is too long")
    return parse_report(obj)


def report_identity(result: DecodeResult, serial: str | None = None) -> str | None:
    """A key that is equal for repeated deliveries of the same report, for dropping duplicates.

    It combines the serial number (`serial` when the report carries none), event, report type,
    report time (period end for interval reports) and the DST flag when it is set: at
    the autumn clock change two different hours can show the same local time and offset, and
    only the flag tells them apart. Trigger reports can come several to a second, each with new
    content, so their key also holds a digest of the decoded data: a redelivery decodes to the
    same data, a new trigger in the same second does not.

    A report whose time cannot be read (an unknown zone, a mangled date) is keyed on a digest of
    its time text and its decoded data, both the same on every delivery; the snapshot image,
    which is never decoded, does not enter it. Returns None when the report has no serial,
    event, report type or time text: such a report cannot be told from its redelivery.
    """
    data = result.get("data")
    if not isinstance(data, dict):
        return None
    sn = data.get("sn") or serial
    event = data.get("event")
    kind = data.get("report_type")
    stamp = data.get("timestamp")
    if not (isinstance(sn, str) and sn and isinstance(event, str) and event in _EVENT_READERS):
        return None
    if kind not in (INTERVAL, TRIGGER):
        return None
    parts: list[object] = [sn, event, kind]
    if type(stamp) is int:
        parts.append(stamp)
    elif isinstance(data.get("time_digest"), str):
        parts.append("unread-time")
    else:
        return None
    if data.get("dst_status") is True:
        # Marked only when set, so the keys of standard-time reports stay as they were and a
        # redelivery across an upgrade is still recognised.
        parts.append("dst")
    if kind == TRIGGER or type(stamp) is not int:
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        parts.append(hashlib.sha256(canonical.encode()).hexdigest()[:16])
    # A JSON list keeps the parts apart whatever characters the serial number holds.
    return json.dumps(parts, separators=(",", ":"))


# --- header: event, report type, device, times -----------------------------------------------


def _read_event(report: Mapping[Any, Any], out: DecodeResult) -> str | None:
    if "event" not in report:
        fields.error(out, "event", "missing; cannot tell which counts the report holds")
        return None
    raw = report["event"]
    if not isinstance(raw, str):
        fields.error(out, "event", f"expected a string, got {fields.show(raw)}")
        return None
    # "Region People Counting" -> "region_people_counting"; also takes already-normalised names.
    event = re.sub(r"[\s_-]+", "_", raw.strip().lower())
    if event not in _EVENT_READERS:
        fields.error(out, "event", f"unknown event, got {fields.show(raw)}")
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
        problem = f"expected 'interval' or 'trigger', got {fields.show(raw)}"
        fields.error(out, "report_type", problem)
        return None
    if inferred is None:
        fields.error(out, "report_type", "missing, and time_info does not show which kind it is")
        return None
    fields.warn(out, "report_type", f"missing; taken as {inferred!r} from time_info")
    return inferred


def _read_device(report: Mapping[Any, Any], out: DecodeResult) -> None:
    # The sensor may also be known by its MQTT topic or HTTP path, so a report without a
    # serial number is still usable; it just cannot be deduplicated.
    found = fields.nested_object(report, ("device_info",), out, required=False)
    if found is None:
        if "device_info" not in report:
            fields.warn(out, "device_info", "missing; the report carries no serial number")
        return
    _label, info = found
    if "device_sn" not in info:
        fields.warn(out, "device_info.device_sn", "missing; the report carries no serial number")
    else:
        sn = fields.short_text(info["device_sn"], "device_info.device_sn", out)
        if sn is not None:
            out["data"]["sn"] = sn
    if "device_mac" in info:
        mac = fields.short_text(info["device_mac"], "device_info.device_mac", out)
        if mac is not None:
            out["data"]["device_mac"] = mac


def _read_times(report: Mapping[Any, Any], kind: str | None, out: DecodeResult) -> timezone | str:
    """Set `timestamp` (and `period_start`); return the report's zone for its other times.

    The zone comes back as a reason string when there is none to use, so that a later local
    time can say why it could not be read.
    """
    found = fields.nested_object(report, ("time_info",), out, required=True)
    if found is None:
        return "time_info is missing or unusable"
    _label, info = found
    tz = vs121p_time.read_timezone(info, out)
    data = out["data"]

    if kind == INTERVAL:
        end = vs121p_time.time_field(info, "end_time", tz, out, required=True)
        if end is not None:
            data["timestamp"] = end
        start = vs121p_time.time_field(info, "start_time", tz, out, required=False)
        if start is not None:
            data["period_start"] = start
            if end is not None and start > end:
                fields.warn(out, "time_info.start_time", "is after time_info.end_time")
    elif kind == TRIGGER:
        stamp = vs121p_time.time_field(info, "time", tz, out, required=True)
        if stamp is not None:
            data["timestamp"] = stamp
    _read_dst(info, out)
    if "timestamp" not in data:
        _mark_unread_time(info, out)
    return tz


def _read_dst(info: Mapping[Any, Any], out: DecodeResult) -> None:
    # Kept only to tell apart the two hours that share local times at the autumn change
    # (see report_identity); the offset itself is read from `timezone` alone.
    if "dst_status" not in info:
        return
    raw = info["dst_status"]
    if isinstance(raw, bool):
        out["data"]["dst_status"] = raw
    else:
        fields.warn(out, "time_info.dst_status", f"expected true or false, got {fields.show(raw)}")


def _mark_unread_time(info: Mapping[Any, Any], out: DecodeResult) -> None:
    """Record a digest of the time text that could not be read, as `time_digest`.

    A redelivery carries the same text, a report of another period does not, so together with
    the decoded counts it still identifies the report (see report_identity). With no time text
    at all nothing is recorded and the report has no identity.
    """
    present = {name: info[name] for name in _TIME_FIELDS if name in info}
    if not any(name in present for name in ("end_time", "time")):
        return
    canonical = json.dumps(present, sort_keys=True, separators=(",", ":"), default=str)
    out["data"]["time_digest"] = hashlib.sha256(canonical.encode()).hexdigest()[:16]


_TIME_FIELDS: Final = ("end_time", "start_time", "time", "timezone", "dst_status")


# --- events ----------------------------------------------------------------------------------


def _read_region_counting(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    del tz  # region reports carry no per-entry times
    fields.take_count(report, ("current_total",), "people_count_all", out, required=True)
    # Only periodic reports carry the period maximum.
    fields.take_count(
        report, ("max_counted", "Max_counted"), "people_count_max", out, required=kind == INTERVAL
    )
    region_count = None
    if "total_mapped_regions" in report:
        raw = report["total_mapped_regions"]
        region_count = fields.count(raw, "total_mapped_regions", out, high=MAX_REGIONS)
        if region_count is not None:
            out["data"]["region_count"] = region_count

    usable, numbers = _region_numbers(report, out)
    if not usable:
        return
    if numbers is not None and region_count is not None:
        listed = sum(1 for n in numbers if n is not None)
        if listed != region_count:
            fields.warn(
                out,
                "total_mapped_regions",
                f"is {region_count} but numbering_regions lists {listed} regions",
            )

    per_region: tuple[tuple[str, str, Callable[[object, str, DecodeResult], int | None]], ...] = (
        ("occupancy", "", fields.occupied),
        ("current_counted", "_count", fields.count),
    )
    for name, suffix, check in per_region:
        found = fields.nested_list(report, (name,), out, required=False)
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
    found = fields.nested_list(report, ("numbering_regions",), out, required=False)
    if found is None:
        for name in ("occupancy", "current_counted"):
            if name in report:
                fields.error(out, name, "not used, because numbering_regions is unusable")
        return False, None
    _label, raw_numbers = found
    numbers: list[int | None] = []
    seen: set[int] = set()
    for index, raw in enumerate(raw_numbers):
        field = f"numbering_regions[{index}]"
        number = fields.region_number(raw, field, out)
        if number is not None and number in seen:
            fields.error(out, field, f"region {number} is listed twice")
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
            fields.error(
                out, field, f"no numbering_regions, and position {index} is past region 16"
            )
            return None
        return index + 1
    if index >= len(numbers):
        fields.error(out, field, f"numbering_regions has no entry {index}")
        return None
    # A bad number was reported once, under numbering_regions.
    return numbers[index]


def _read_dwell_time(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    found = fields.nested_list(report, ("dwell_time_data", "dwel_time_data"), out, required=True)
    if found is None:
        return
    label, entries = found
    if kind is None:
        fields.error(out, label, "not used: report_type is unknown, so the entries' meaning is too")
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
            fields.error(out, field, f"expected an object, got {fields.show(entry)}")
            continue
        region = _entry_region(entry, field, out)
        if region is None:
            continue
        if region in seen:
            fields.error(out, f"{field}.region", f"region {region} is listed twice")
            continue
        seen.add(region)
        for name, key in (("max_dwell_time", "max"), ("avg_dwell_time", "avg")):
            if name not in entry:
                fields.error(out, f"{field}.{name}", "missing")
                continue
            seconds = fields.amount(entry[name], f"{field}.{name}", out)
            if seconds is not None:
                out["data"][f"region_{region}_dwell_time_{key}"] = seconds


def _read_dwell_events(
    label: str, entries: list[Any], tz: timezone | str, out: DecodeResult
) -> None:
    events: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        field = f"{label}[{index}]"
        if not isinstance(entry, dict):
            fields.error(out, field, f"expected an object, got {fields.show(entry)}")
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
        fields.error(out, f"{field}.people_id", "missing")
    else:
        person = fields.count(entry["people_id"], f"{field}.people_id", out)
    times: list[int | None] = []
    for names in (("dwell_start_time", "dwel_start_time"), ("dwell_end_time", "dwel_end_time")):
        found = fields.lookup(entry, names, field + ".", out)
        if found is None:
            fields.error(out, f"{field}.{names[0]}", "missing")
            times.append(None)
        else:
            times.append(vs121p_time.unix_time(found[1], found[0], tz, out))
    duration = None
    if "duration" not in entry:
        fields.error(out, f"{field}.duration", "missing")
    else:
        duration = fields.amount(entry["duration"], f"{field}.duration", out)
    start, end = times
    # Each None above has been reported; a partial stay would count wrongly downstream.
    if region is None or person is None or start is None or end is None or duration is None:
        return None
    if start > end:
        fields.warn(out, field, "starts after it ends")
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
        fields.error(out, f"{field}.region", "missing")
        return None
    return fields.region_number(entry["region"], f"{field}.region", out)


def _read_line_crossing(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    del tz  # line reports carry no per-entry times
    # With an unknown report type nothing is required, but whatever is there is used.
    interval, trigger = kind in (INTERVAL, None), kind in (TRIGGER, None)
    if interval:
        fields.take_count(report, ("in_counted",), "people_in", out, required=kind == INTERVAL)
        fields.take_count(report, ("out_counted",), "people_out", out, required=kind == INTERVAL)
        totals = fields.nested_object(report, ("total_data",), out, required=False)
        if totals is not None:
            prefix = totals[0] + "."
            for name, key in (
                ("in_cumulative_counted", "people_total_in"),
                ("out_cumulative_counted", "people_total_out"),
            ):
                fields.take_count(totals[1], (name,), key, out, required=True, prefix=prefix)
    if trigger:
        line = fields.nested_object(report, ("line_trigger_data",), out, required=kind == TRIGGER)
        if line is not None:
            prefix = line[0] + "."
            fields.take_count(line[1], ("in",), "line_in", out, required=True, prefix=prefix)
            fields.take_count(line[1], ("out",), "line_out", out, required=True, prefix=prefix)


def _read_people_flow(
    report: Mapping[Any, Any], kind: str | None, tz: timezone | str, out: DecodeResult
) -> None:
    del kind, tz  # the guide documents only the periodic flow report; read it the same way
    found = fields.nested_object(report, ("flow_data",), out, required=True)
    if found is None:
        return
    label, flows = found
    known = set()
    for source in _FLOW_AREAS:
        for target in _FLOW_AREAS:
            name = f"{source}-{target}"
            known.add(name)
            key = f"{source.lower()}_to_{target.lower()}"
            fields.take_count(flows, (name,), key, out, required=True, prefix=label + ".")
    unknown = sum(1 for name in flows if name not in known)
    if unknown:
        fields.warn(out, label, f"ignored {unknown} unknown key(s); expected 'A-A'..'D-D'")


_EventReader = Callable[[Mapping[Any, Any], str | None, timezone | str, DecodeResult], None]

_EVENT_READERS: Final[dict[str, _EventReader]] = {
    "region_people_counting": _read_region_counting,
    "dwell_time_detection": _read_dwell_time,
    "line_crossing_counting": _read_line_crossing,
    "people_flow_analysis": _read_people_flow,
}
