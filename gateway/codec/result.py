"""The LoRaWAN payload-codec result shape shared by every decoder."""

from __future__ import annotations

from typing import Any, TypedDict


class DecodeResult(TypedDict):
    """What every decoder returns: decoded fields, plus what was odd or unusable.

    `data` uses the field names of the vendor's public VS121 codec, so a payload that a network
    server already decoded can be used as is. `warnings` are out-of-spec but usable findings;
    `errors` say why (part of) the input could not be used. Decoders never raise on bad input.
    """

    data: dict[str, Any]
    warnings: list[str]
    errors: list[str]


def new_result() -> DecodeResult:
    return {"data": {}, "warnings": [], "errors": []}
