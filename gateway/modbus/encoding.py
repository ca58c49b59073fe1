"""Numbers to register words and back: scale, clamp, sign and word order.

A value is stored as round(value * scale), clamped to what the point's registers can hold
(unsigned 16/32-bit unless the point is signed), so an out-of-range number shows as the nearest
representable one instead of wrapping into a misleading small value. 32-bit values take two
registers; which comes first is the configured word order (bytes inside a register are always
big-endian, as Modbus defines).
"""

from __future__ import annotations

import math
from typing import Literal

WordOrder = Literal["high_first", "low_first"]


def limits(width: int, *, signed: bool) -> tuple[int, int]:
    """The smallest and largest raw integer `width` registers hold."""
    bits = 16 * width
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def to_raw(value: float, *, width: int, scale: int, signed: bool) -> int:
    """The clamped raw integer for a value (NaN reads 0; infinities clamp)."""
    low, high = limits(width, signed=signed)
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return high if value > 0 else low
    return max(low, min(high, round(value * scale)))


def raw_to_words(raw: int, *, width: int, order: WordOrder) -> tuple[int, ...]:
    """Split a raw integer (two's complement when negative) into register words."""
    unsigned = raw & ((1 << (16 * width)) - 1)
    if width == 1:
        return (unsigned,)
    high, low = unsigned >> 16, unsigned & 0xFFFF
    return (high, low) if order == "high_first" else (low, high)


def encode(
    value: float, *, width: int, scale: int, signed: bool, order: WordOrder
) -> tuple[int, ...]:
    """A point value as the register words a master reads."""
    return raw_to_words(
        to_raw(value, width=width, scale=scale, signed=signed), width=width, order=order
    )


def decode(words: tuple[int, ...], *, scale: int, signed: bool, order: WordOrder) -> float:
    """What a master means by writing these words to a point (inverse of `encode`)."""
    if len(words) == 1:
        raw = words[0]
    else:
        high, low = words if order == "high_first" else (words[1], words[0])
        raw = (high << 16) | low
    bits = 16 * len(words)
    if signed and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return raw / scale if scale != 1 else float(raw)
