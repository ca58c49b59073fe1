"""Cutting the byte stream of a shared RS485 line into Modbus RTU frames.

On a shared bus the slave hears everything: the master's requests to every unit, the other
slaves' responses, its own transmission if the adapter echoes, and line noise. Inter-character
timing cannot delimit frames reliably behind USB adapters (they deliver bytes in bursts), so a
frame is recognised by content: at each position the function code gives the length a request
(or a response) of that function has, and the frame counts only if its CRC matches. Bytes before
the first valid frame are noise and are dropped. What no length rule covers (an unknown function
code) is tried as one whole frame once the line goes quiet.

Scanning by content alone would find a frame hidden inside another slave's reply (register data
can hold any bytes, CRC included) and a slave would execute it. So the scanner follows the bus:
a request to a unit that is not ours is followed by that unit's response, whose length its
function code tells; that response is taken whole, as one frame, and nothing inside it is looked
at. Only a retried request (a complete valid request frame to the same unit) or a frame that
does not start like the expected response ends the wait.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_UNIT_ID = 247
MIN_FRAME = 4  # unit, function, CRC
MAX_FRAME = 256
MAX_BUFFER = 1024  # a frame is at most 256 bytes; more than this unresolved is noise


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """The Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """The frame with its CRC appended (low byte first, as RTU sends it)."""
    return frame + crc16(frame).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= MIN_FRAME and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


# A length rule gets the bytes from the unit id on and returns the whole frame length,
# or None while the byte that tells the length has not arrived yet.
LengthRule = Callable[[bytes | bytearray], int | None]


def _fixed(size: int) -> LengthRule:
    return lambda _buf: size


def _counted(position: int, overhead: int) -> LengthRule:
    """Length given by a byte count at `position` (from the unit id), plus the fixed part."""
    return lambda buf: buf[position] + overhead if len(buf) > position else None


def _counted_word(buf: bytes | bytearray) -> int | None:
    return int.from_bytes(buf[2:4], "big") + 6 if len(buf) > 3 else None


REQUEST_LENGTH: dict[int, LengthRule] = {
    **{fc: _fixed(8) for fc in (1, 2, 3, 4, 5, 6, 8)},
    **{fc: _fixed(4) for fc in (7, 11, 12, 17)},
    15: _counted(6, 9),
    16: _counted(6, 9),
    20: _counted(2, 5),
    21: _counted(2, 5),
    22: _fixed(10),
    23: _counted(10, 13),
    24: _fixed(6),
    43: _fixed(7),
}

RESPONSE_LENGTH: dict[int, LengthRule] = {
    **{fc: _counted(2, 5) for fc in (1, 2, 3, 4, 12, 17, 20, 21, 23)},
    **{fc: _fixed(8) for fc in (5, 6, 8, 11, 15, 16)},
    7: _fixed(5),
    22: _fixed(10),
    24: _counted_word,
}

EXCEPTION_LENGTH = 5
_EXCEPTION_RULE = _fixed(EXCEPTION_LENGTH)
_WAIT = (0, 0, False)  # the awaited response is still arriving


@dataclass(frozen=True, slots=True)
class Frame:
    """One CRC-checked frame; `request` tells whether it has the shape of a request."""

    unit: int
    pdu: bytes
    request: bool


class FrameScanner:
    """Feed it bytes as they arrive; take the complete frames; call `silence` on a quiet line.

    `ours(unit)` tells the unit ids this slave answers; after a request to any other unit
    (broadcasts excepted) that unit's response is expected next and skipped whole.
    """

    def __init__(self, ours: Callable[[int], bool] | None = None) -> None:
        self._ours = ours
        self._expect: tuple[int, int] | None = None  # (unit, function) of the awaited response
        self._buf = bytearray()
        self._dead = bytearray()  # per buffered byte: 1 once it is known not to start a frame
        self._echo: bytes | None = None
        self.discarded = 0  # runs of noise dropped since the last `take_discarded`

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._dead += bytes(len(data))
        if len(self._buf) > MAX_BUFFER:
            self._drop(len(self._buf) - MAX_BUFFER)
            self.discarded += 1

    def expect_echo(self, frame: bytes) -> None:
        """The adapter will hand back what we just sent: drop it instead of parsing it."""
        self._echo = frame

    @property
    def pending(self) -> int:
        """Bytes waiting to become a frame (or to be dropped as noise)."""
        return len(self._buf)

    def take_discarded(self) -> int:
        count, self.discarded = self.discarded, 0
        return count

    def frames(self) -> list[Frame]:
        """Every complete valid frame in the buffer, in order; noise before them is dropped."""
        out: list[Frame] = []
        while True:
            if not self._drop_echo():
                return out
            found = self._expected() if self._expect is not None else None
            if found is _WAIT:
                return out
            if found is None:
                found = self._find()
            if found is None:
                return out
            start, size, request = found
            if start:
                self.discarded += 1
            raw = bytes(self._buf[start : start + size])
            self._drop(start + size)
            frame = Frame(raw[0], raw[1:-2], request)
            self._follow(frame)
            out.append(frame)

    def _follow(self, frame: Frame) -> None:
        """After a request to another slave, its response comes next."""
        self._expect = None
        if not frame.request or frame.unit == 0 or self._ours is None or self._ours(frame.unit):
            return
        if frame.pdu and frame.pdu[0] in RESPONSE_LENGTH:
            self._expect = (frame.unit, frame.pdu[0])

    def _expected(self) -> tuple[int, int, bool] | None:
        """The awaited response at the start of the buffer: (0, size, False) once complete,
        _WAIT while it is arriving, None when what arrives is something else."""
        assert self._expect is not None
        unit, function = self._expect
        buf = self._buf
        if len(buf) < 2:
            return _WAIT if not buf or buf[0] == unit else self._unexpected()
        if buf[0] != unit or buf[1] not in (function, function | 0x80):
            return self._unexpected()
        request_rule = REQUEST_LENGTH.get(function)
        size_q = request_rule(buf) if request_rule is not None else None
        if size_q is not None and size_q <= len(buf) and crc_ok(buf[:size_q]):
            return self._unexpected()  # the master retried its request: scan normally
        rule = _EXCEPTION_RULE if buf[1] & 0x80 else RESPONSE_LENGTH[function]
        size = rule(buf)
        if size is None or len(buf) < size:
            return _WAIT
        self._expect = None
        if MIN_FRAME <= size <= MAX_FRAME and crc_ok(buf[:size]):
            return 0, size, False
        # A damaged response: dropped whole, so nothing inside it is ever taken for a frame.
        self.discarded += 1
        self._drop(size)
        return _WAIT if not buf else None

    def _unexpected(self) -> tuple[int, int, bool] | None:
        self._expect = None
        return None

    def silence(self) -> Frame | None:
        """The line went quiet: what is left is one frame of an unknown shape, or noise."""
        rest = bytes(self._buf)
        self._drop(len(self._buf))
        self._echo = None
        if self._expect is not None:
            self._expect = None  # the awaited response stopped short: all of it is noise
            if rest:
                self.discarded += 1
            return None
        if not rest:
            return None
        if rest[0] <= MAX_UNIT_ID and crc_ok(rest):
            return Frame(rest[0], rest[1:-2], True)
        self.discarded += 1
        return None

    def _drop_echo(self) -> bool:
        """False while the buffer may still be the beginning of our echo."""
        echo = self._echo
        if echo is None:
            return True
        n = min(len(echo), len(self._buf))
        if self._buf[:n] != echo[:n]:
            self._echo = None  # no echo after all (or it was garbled): parse normally
            return True
        if n < len(echo):
            return False
        self._drop(n)
        self._echo = None
        return True

    def _drop(self, count: int) -> None:
        del self._buf[:count]
        del self._dead[:count]

    def _find(self) -> tuple[int, int, bool] | None:
        """The first (start, size, is_request) whose CRC checks out, if any.

        A position where every length rule has been decided and failed can never start a
        frame, whatever arrives later: it is marked dead and skipped in later scans, so a frame
        arriving in many small pieces costs linear, not quadratic, work.
        """
        buf, dead = self._buf, self._dead
        for start in range(len(buf) - MIN_FRAME + 1):
            if dead[start]:
                continue
            if buf[start] > MAX_UNIT_ID:
                dead[start] = 1
                continue
            view = buf[start : start + MAX_FRAME]
            undecided = False
            for request, rule in _rules(view[1]):
                size = rule(view)
                if size is None or len(view) < size <= MAX_FRAME:
                    undecided = True  # the rest of this candidate has not arrived yet
                elif MIN_FRAME <= size <= len(view) and crc_ok(view[:size]):
                    return start, size, request
            if not undecided:
                dead[start] = 1
        return None


def _rules(function: int) -> list[tuple[bool, LengthRule]]:
    """The (is_request, length rule) candidates for a frame starting with this function code."""
    if function & 0x80:
        known = function & 0x7F in REQUEST_LENGTH
        return [(False, _EXCEPTION_RULE)] if known else []
    rules = []
    if (rule := REQUEST_LENGTH.get(function)) is not None:
        rules.append((True, rule))
    if (rule := RESPONSE_LENGTH.get(function)) is not None:
        rules.append((False, rule))
    return rules
