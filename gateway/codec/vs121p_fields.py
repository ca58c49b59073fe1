"""Checking the values in a VS121-P report, and wording the messages about them.

Used by the report readers in `vs121p`. Each check takes the raw JSON value and the label of the
field it came from, and returns the value when it is usable; otherwise it returns None after
adding an error that names the field and describes what was sent. Input is quoted only when it is
a short scalar: longer values are described by kind and length, never echoed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from gateway.codec.result import DecodeResult, new_result

# Regions are numbered 1..MAX_REGIONS; `vs121p` exports this limit as part of its API.
MAX_REGIONS: Final = 16

# Counts end up in 32-bit Modbus registers and BACnet reals; anything larger is corrupt input.
MAX_VALUE: Final = 2**32 - 1
# Longest input value quoted in a message; longer ones are described, never echoed.
MAX_SHOWN: Final = 64
# A hostile body could produce one error per list entry; keep results readable.
_MAX_ERRORS: Final = 32


# --- messages --------------------------------------------------------------------------------


def error(out: DecodeResult, field: str, reason: str) -> None:
    out["errors"].append(f"{field}: {reason}")


def warn(out: DecodeResult, field: str, reason: str) -> None:
    out["warnings"].append(f"{field}: {reason}")


def only_error(field: str, reason: str) -> DecodeResult:
    out = new_result()
    error(out, field, reason)
    return out


def cap_errors(out: DecodeResult) -> None:
    errors = out["errors"]
    if len(errors) > _MAX_ERRORS:
        dropped = len(errors) - _MAX_ERRORS
        del errors[_MAX_ERRORS:]
        errors.append(f"report: {dropped} further errors not listed")


def kind_of(value: object) -> str:
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


def show(value: object) -> str:
    """The value's kind, plus the value itself when it is a short scalar."""
    kind = kind_of(value)
    if isinstance(value, bool):
        return f"{kind} {'true' if value else 'false'}"
    if isinstance(value, int):
        # Checked by size first: str() of a huge integer is slow or refused.
        return f"{kind} {value}" if abs(value) < 10**18 else f"{kind} of over 18 digits"
    if isinstance(value, float):
        return f"{kind} {value!r}"
    if isinstance(value, str):
        if len(value) <= MAX_SHOWN:
            shown = repr(value)
            if len(shown) <= MAX_SHOWN + 2:
                return f"{kind} {shown}"
        return f"{kind} of {len(value)} characters"
    return kind


# --- values ----------------------------------------------------------------------------------


def lookup(
    obj: Mapping[Any, Any], names: tuple[str, ...], prefix: str, out: DecodeResult
) -> tuple[str, object] | None:
    """The value under the first of `names` present, with its label, or None if none is.

    `names` lists one field's accepted spellings; the label uses the spelling the sensor sent.
    """
    present = [name for name in names if name in obj]
    if not present:
        return None
    if len(present) > 1:
        warn(out, prefix + present[0], f"also sent as {present[1]!r}, which was ignored")
    return prefix + present[0], obj[present[0]]


def count(value: object, field: str, out: DecodeResult, high: int = MAX_VALUE) -> int | None:
    """A non-negative integer no larger than `high`, or None after an error naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int):
        error(out, field, f"expected a non-negative integer, got {show(value)}")
        return None
    if value < 0:
        error(out, field, f"must not be negative, got {show(value)}")
        return None
    if value > high:
        error(out, field, f"{show(value)} is over the maximum of {high}")
        return None
    return value


def amount(value: object, field: str, out: DecodeResult) -> int | float | None:
    """A non-negative finite number (a duration), or None after an error naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        error(out, field, f"expected a non-negative number, got {show(value)}")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        error(out, field, f"expected a finite number, got {show(value)}")
        return None
    if value < 0:
        error(out, field, f"must not be negative, got {show(value)}")
        return None
    if value > MAX_VALUE:
        error(out, field, f"{show(value)} is over the maximum of {MAX_VALUE}")
        return None
    return value


def region_number(value: object, field: str, out: DecodeResult) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        error(out, field, f"expected a region number 1..{MAX_REGIONS}, got {show(value)}")
        return None
    if not 1 <= value <= MAX_REGIONS:
        error(out, field, f"region {show(value)} is outside 1..{MAX_REGIONS}")
        return None
    return value


def occupied(value: object, field: str, out: DecodeResult) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        error(out, field, f"expected 0 (free) or 1 (occupied), got {show(value)}")
        return None
    return value


def short_text(value: object, field: str, out: DecodeResult) -> str | None:
    if not isinstance(value, str):
        error(out, field, f"expected a string, got {show(value)}")
        return None
    if not value.strip():
        error(out, field, "is empty")
        return None
    if len(value) > MAX_SHOWN:
        error(out, field, f"{show(value)} is longer than {MAX_SHOWN}")
        return None
    return value


def nested_object(
    report: Mapping[Any, Any], names: tuple[str, ...], out: DecodeResult, *, required: bool
) -> tuple[str, Mapping[Any, Any]] | None:
    """A nested JSON object and its label, or None (with an error if it was needed or bad)."""
    found = lookup(report, names, "", out)
    if found is None:
        if required:
            error(out, names[0], "missing")
        return None
    label, value = found
    if not isinstance(value, dict):
        error(out, label, f"expected an object, got {show(value)}")
        return None
    return label, value


def nested_list(
    report: Mapping[Any, Any], names: tuple[str, ...], out: DecodeResult, *, required: bool
) -> tuple[str, list[Any]] | None:
    """A JSON list and its label, or None (with an error if it was needed or bad)."""
    found = lookup(report, names, "", out)
    if found is None:
        if required:
            error(out, names[0], "missing")
        return None
    label, value = found
    if not isinstance(value, list):
        error(out, label, f"expected a list, got {show(value)}")
        return None
    return label, value


def take_count(
    obj: Mapping[Any, Any],
    names: tuple[str, ...],
    key: str,
    out: DecodeResult,
    *,
    required: bool,
    prefix: str = "",
) -> None:
    """Copy one count from the report into `data[key]`, checking it on the way."""
    found = lookup(obj, names, prefix, out)
    if found is None:
        if required:
            error(out, prefix + names[0], "missing")
        return
    label, value = found
    number = count(value, label, out)
    if number is not None:
        out["data"][key] = number
