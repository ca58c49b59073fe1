"""Modbus exception codes and the outcomes counted per request."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExceptionCode(IntEnum):
    """The exception codes this server answers with (Modbus application protocol, 7)."""

    ILLEGAL_FUNCTION = 1  # function code not supported
    ILLEGAL_DATA_ADDRESS = 2  # outside every readable block, read-only, or half a point
    ILLEGAL_DATA_VALUE = 3  # bad quantity, byte count, coil value or out-of-range value
    SERVER_DEVICE_FAILURE = 4  # the command behind a write failed
    GATEWAY_TARGET_FAILED = 0x0B  # TCP, unit-per-sensor: no sensor has this unit id


class Outcome(StrEnum):
    """What became of one request: the `outcome` label of vs121gw_modbus_requests_total."""

    OK = "ok"
    ILLEGAL_FUNCTION = "illegal_function"
    ILLEGAL_ADDRESS = "illegal_address"
    ILLEGAL_VALUE = "illegal_value"
    DEVICE_FAILURE = "device_failure"
    BAD_FRAME = "bad_frame"  # CRC error, line noise, malformed MBAP, function code 128-255
    NOT_ADDRESSED = "not_addressed"  # another unit id (RTU: silence, TCP: 0B), or a broadcast


OUTCOME_OF: dict[ExceptionCode, Outcome] = {
    ExceptionCode.ILLEGAL_FUNCTION: Outcome.ILLEGAL_FUNCTION,
    ExceptionCode.ILLEGAL_DATA_ADDRESS: Outcome.ILLEGAL_ADDRESS,
    ExceptionCode.ILLEGAL_DATA_VALUE: Outcome.ILLEGAL_VALUE,
    ExceptionCode.SERVER_DEVICE_FAILURE: Outcome.DEVICE_FAILURE,
    ExceptionCode.GATEWAY_TARGET_FAILED: Outcome.NOT_ADDRESSED,
}

TRANSPORTS = ("tcp", "rtu")
OUTCOMES = tuple(o.value for o in Outcome)
