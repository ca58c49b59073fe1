"""The Modbus pieces without a network: encoding, CRC, RTU framing, layout, the write path."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU
from test_modbus_helpers import SPECS, FakeCommands, all_points

from gateway.modbus.encoding import decode, encode, limits, to_raw
from gateway.modbus.image import RegisterImage
from gateway.modbus.layout import SENSOR_SPANS, Table, readable_blocks
from gateway.modbus.pdu import DeviceIdentity, Reply, RequestHandler
from gateway.modbus.rtu_framing import Frame, FrameScanner, crc16, with_crc
from gateway.modbus.writes import WRITE_ACTIONS, WriteExecutor
from objects.catalog import (
    GATEWAY_POINTS,
    MODBUS_BLOCK,
    SENSOR_POINTS,
    ModbusKind,
    ModbusSpec,
    Model,
    ObjectType,
    Point,
    Source,
    modbus_block_span,
)
from objects.pointmap import ResolvedPoint, SensorSpec, resolve

# -- encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "how", "words"),
    [
        (5, (1, 1, False, "high_first"), (5,)),
        (2.5, (1, 10, False, "high_first"), (25,)),
        (65_536, (1, 1, False, "high_first"), (65_535,)),  # clamped, not wrapped to 0
        (-3, (1, 1, False, "high_first"), (0,)),
        (-3, (1, 1, True, "high_first"), (0xFFFD,)),
        (-40_000, (1, 1, True, "high_first"), (0x8000,)),
        (0x12345678, (2, 1, False, "high_first"), (0x1234, 0x5678)),
        (0x12345678, (2, 1, False, "low_first"), (0x5678, 0x1234)),
        (2**33, (2, 1, False, "high_first"), (0xFFFF, 0xFFFF)),
        (-2, (2, 1, True, "low_first"), (0xFFFE, 0xFFFF)),
        (float("nan"), (1, 1, False, "high_first"), (0,)),
        (float("inf"), (2, 1, False, "high_first"), (0xFFFF, 0xFFFF)),
        (1_763_700_000.4, (2, 1, False, "high_first"), (0x691F, 0xED20)),
    ],
)
def test_encode(value: float, how: tuple[int, int, bool, str], words: tuple[int, ...]) -> None:
    width, scale, signed, order = how
    assert encode(value, width=width, scale=scale, signed=signed, order=order) == words  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["high_first", "low_first"])
@pytest.mark.parametrize(("width", "signed"), [(1, False), (1, True), (2, False), (2, True)])
def test_decode_inverts_encode(order: str, width: int, signed: bool) -> None:
    low, high = limits(width, signed=signed)
    rng = random.Random(width * 2 + signed)
    for raw in [low, high, 0, *(rng.randint(low, high) for _ in range(50))]:
        words = encode(raw, width=width, scale=1, signed=signed, order=order)  # type: ignore[arg-type]
        assert decode(words, scale=1, signed=signed, order=order) == raw  # type: ignore[arg-type]
    assert to_raw(high + 1, width=width, scale=1, signed=signed) == high


# -- CRC and RTU framing -------------------------------------------------------------------------


def test_crc_matches_a_published_frame_and_an_independent_implementation() -> None:
    # "read 10 holding registers from 0 at unit 1", a frame found in every Modbus manual.
    assert with_crc(bytes.fromhex("01030000000a")) == bytes.fromhex("01030000000ac5cd")
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        theirs = FramerRTU.compute_CRC(data)  # pymodbus returns it byte-swapped
        assert crc16(data) == ((theirs & 0xFF) << 8) | (theirs >> 8)


def _frames(*chunks: bytes) -> list[Frame]:
    scanner = FrameScanner()
    out: list[Frame] = []
    for chunk in chunks:
        scanner.feed(chunk)
        out.extend(scanner.frames())
    return out


REQUEST = with_crc(bytes.fromhex("0103000a0002"))


def test_scanner_cuts_requests_and_responses() -> None:
    response = with_crc(bytes.fromhex("0103040001000200"[:-2]))
    write = with_crc(bytes.fromhex("011000000002040001000a"))
    frames = _frames(REQUEST + response + write)
    assert [(f.unit, f.pdu, f.request) for f in frames] == [
        (1, REQUEST[1:-2], True),
        (1, response[1:-2], False),
        (1, write[1:-2], True),
    ]


def test_scanner_waits_for_the_rest_of_a_frame() -> None:
    scanner = FrameScanner()
    for byte in REQUEST[:-1]:
        scanner.feed(bytes([byte]))
        assert scanner.frames() == []
    scanner.feed(REQUEST[-1:])
    assert scanner.frames() == [Frame(1, REQUEST[1:-2], True)]
    assert scanner.pending == 0


def test_scanner_drops_noise_and_bad_crc() -> None:
    bad = bytearray(REQUEST)
    bad[3] ^= 0x01
    scanner = FrameScanner()
    scanner.feed(b"\xff\xfe\x00" + bytes(bad) + REQUEST)
    assert scanner.frames() == [Frame(1, REQUEST[1:-2], True)]
    assert scanner.take_discarded() == 1
    scanner.feed(bytes(bad))
    assert scanner.frames() == []
    assert scanner.silence() is None  # the quiet line turns the leftovers into noise
    assert scanner.take_discarded() == 1
    assert scanner.pending == 0


def test_scanner_takes_an_unknown_function_whole_on_silence() -> None:
    scanner = FrameScanner()
    frame = with_crc(bytes([7, 0x64, 1, 2, 3]))
    scanner.feed(frame)
    assert scanner.frames() == []
    assert scanner.silence() == Frame(7, frame[1:-2], True)


def test_scanner_drops_our_echo() -> None:
    response = with_crc(bytes.fromhex("01050014ff00"))
    scanner = FrameScanner()
    scanner.expect_echo(response)
    scanner.feed(response[:3])
    assert scanner.frames() == []
    scanner.feed(response[3:] + REQUEST)
    assert scanner.frames() == [Frame(1, REQUEST[1:-2], True)]
    scanner.expect_echo(response)  # the echo never comes: the next request is parsed normally
    scanner.feed(REQUEST)
    assert scanner.frames() == [Frame(1, REQUEST[1:-2], True)]


def test_scanner_buffer_is_bounded() -> None:
    scanner = FrameScanner()
    scanner.feed(b"\xff" * 5000)
    assert scanner.pending <= 1024
    scanner.feed(REQUEST)
    assert scanner.frames() == [Frame(1, REQUEST[1:-2], True)]


_REQUESTS = st.one_of(
    st.builds(
        lambda unit, fc, address, count: with_crc(struct.pack(">BBHH", unit, fc, address, count)),
        st.integers(0, 247),
        st.sampled_from([1, 2, 3, 4, 5, 6]),
        st.integers(0, 65535),
        st.integers(0, 65535),
    ),
    st.builds(
        lambda unit, words: with_crc(
            struct.pack(f">BBHHB{len(words)}H", unit, 16, 0, len(words), 2 * len(words), *words)
        ),
        st.integers(0, 247),
        st.lists(st.integers(0, 65535), min_size=1, max_size=123),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(_REQUESTS, min_size=1, max_size=6),
    noise=st.binary(max_size=40).map(lambda b: bytes(x | 0xF8 for x in b)),  # never a unit id
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30),
)
def test_scanner_finds_every_frame_however_the_bytes_arrive(
    frames: list[bytes], noise: bytes, cuts: list[int]
) -> None:
    stream = noise + b"".join(frames)
    scanner = FrameScanner()
    found: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        scanner.feed(stream[pos : pos + step])
        found.extend(scanner.frames())
        pos, i = pos + step, i + 1
    assert [(f.unit, f.pdu) for f in found] == [(f[0], f[1:-2]) for f in frames]
    assert all(f.request for f in found)
    assert scanner.pending == 0


_HIDDEN = with_crc(bytes([1, 5, 0, 220, 0xFF, 0]))  # "write coil 220" for our unit id


@settings(max_examples=300, deadline=None)
@given(
    before=st.binary(max_size=60),
    after=st.binary(max_size=60),
    hide=st.booleans(),
    cuts=st.lists(st.integers(1, 16), min_size=1, max_size=30),
)
def test_scanner_never_takes_a_frame_inside_another_slaves_reply(
    before: bytes, after: bytes, hide: bool, cuts: list[int]
) -> None:
    data = before + (_HIDDEN if hide else b"") + after
    data += bytes(len(data) % 2)  # whole registers
    words = len(data) // 2
    request = with_crc(bytes([2, 3, 0, 0, 0, words]))
    reply = with_crc(bytes([2, 3, len(data)]) + data)
    ours = with_crc(bytes([1, 4, 0, 0, 0, 1]))
    stream = request + reply + ours
    scanner = FrameScanner(lambda unit: unit == 1)
    found: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        scanner.feed(stream[pos : pos + step])
        found.extend(scanner.frames())
        pos, i = pos + step, i + 1
    assert [(f.unit, f.pdu, f.request) for f in found] == [
        (2, request[1:-2], True),
        (2, reply[1:-2], False),
        (1, ours[1:-2], True),
    ]


# -- layout --------------------------------------------------------------------------------------


def test_a_sensor_block_fits_two_reads_and_the_catalog_block() -> None:
    registers = SENSOR_SPANS[Table.INPUT]
    assert registers == range(0, modbus_block_span())
    assert len(registers) <= 2 * 125
    assert SENSOR_SPANS[Table.HOLDING] == registers
    for span in SENSOR_SPANS.values():
        assert span.stop <= MODBUS_BLOCK


def test_blocks_exist_only_for_configured_sensors() -> None:
    blocks = readable_blocks(all_points())
    numbers = {b.sensor_number for b in blocks}
    assert numbers == {0} | {s.number for s in SPECS}
    gateway_regs = [b for b in blocks if b.sensor_number == 0 and b.table is Table.INPUT]
    assert [b.addresses for b in gateway_regs] == [range(0, 7)]


def test_every_writable_catalog_point_has_a_write_action() -> None:
    for point in SENSOR_POINTS + GATEWAY_POINTS:
        if point.writable and point.modbus is not None:
            assert point.key in WRITE_ACTIONS, f"{point.key}: add it to WRITE_ACTIONS"


# -- the write path, generic over the catalog ------------------------------------------------------

SETPOINT = Point(
    "setpoint",
    "{sensor} Setpoint",
    ObjectType.ANALOG_VALUE,
    900,
    "A writable 32-bit test point with a range",
    ModbusSpec(ModbusKind.REGISTER, 150, 2, scale=10, signed=True),
    writable=True,
    source=Source.COMMAND,
    minimum=-5,
    maximum=100_000,
)


def _setpoint_point() -> ResolvedPoint:
    return ResolvedPoint(
        sensor_id="lobby",
        sensor_number=1,
        key="setpoint",
        region=None,
        point=SETPOINT,
        name="Lobby Setpoint",
        description="",
        instance=1900,
        cov_increment=None,
        modbus_address=350,
    )


def _handler(points: list[ResolvedPoint], commands: FakeCommands) -> RequestHandler:
    image = RegisterImage(points, word_order="high_first")
    return RequestHandler(image, WriteExecutor(image, commands), DeviceIdentity("v", "p", "r"))


async def _answer(reply: Reply | Awaitable[Reply]) -> Reply:
    return reply if isinstance(reply, tuple) else await reply


@pytest.mark.asyncio
async def test_register_writes_are_validated_then_become_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[tuple[str, float]] = []

    async def record(_commands: object, rp: ResolvedPoint, value: float) -> None:
        written.append((rp.key, value))

    monkeypatch.setitem(WRITE_ACTIONS, "setpoint", record)
    handler = _handler([*all_points(), _setpoint_point()], FakeCommands())

    def fc16(address: int, *words: int) -> bytes:
        return struct.pack(f">BHHB{len(words)}H", 16, address, len(words), 2 * len(words), *words)

    assert await _answer(handler.handle(fc16(350, 0, 1234))) == (fc16(350, 0, 1234)[:5], "ok")
    assert written == [("setpoint", 123.4)]
    negative = struct.unpack(">2H", struct.pack(">i", -50))  # -5.0 at scale 10
    assert (await _answer(handler.handle(fc16(350, *negative))))[1] == "ok"
    assert written[-1] == ("setpoint", -5.0)
    too_low = struct.unpack(">2H", struct.pack(">i", -51))
    assert await _answer(handler.handle(fc16(350, *too_low))) == (b"\x90\x03", "illegal_value")
    # Half of a 32-bit point, or a point plus a read-only neighbour: address errors.
    assert await _answer(handler.handle(struct.pack(">BHH", 6, 350, 1))) == (
        b"\x86\x02",
        "illegal_address",
    )
    assert await _answer(handler.handle(struct.pack(">BHH", 6, 351, 1))) == (
        b"\x86\x02",
        "illegal_address",
    )
    assert (await _answer(handler.handle(fc16(350, 0, 1, 0))))[0] == b"\x90\x02"
    assert len(written) == 2
    # The value itself shows only when the state reports it, like every other value.
    assert (await _answer(handler.handle(struct.pack(">BHH", 3, 350, 2))))[
        0
    ] == b"\x03\x04" + bytes(4)


@pytest.mark.asyncio
async def test_a_writable_point_without_an_action_answers_04(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(WRITE_ACTIONS, "reset_counts")
    handler = _handler(all_points(), FakeCommands())
    reply = await _answer(handler.handle(struct.pack(">BHH", 5, 220, 0xFF00)))
    assert reply == (b"\x85\x04", "device_failure")


@pytest.mark.asyncio
async def test_a_hanging_command_answers_04_and_still_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.modbus.writes.COMMAND_TIMEOUT_S", 0.05)
    release = asyncio.Event()
    commands = FakeCommands()

    class Slow(FakeCommands):
        async def reset_counts(self, sensor_id: str) -> str:
            await release.wait()
            return await commands.reset_counts(sensor_id)

    handler = _handler(all_points(), Slow())
    reply = await _answer(handler.handle(struct.pack(">BHH", 5, 220, 0xFF00)))
    assert reply == (b"\x85\x04", "device_failure")
    release.set()
    await asyncio.wait_for(commands.called.wait(), 2)
    assert commands.resets == ["lobby"]


def test_image_skips_keys_without_a_point_and_unknown_sensors() -> None:
    image = RegisterImage(all_points(), word_order="high_first")
    image.load("lobby", {"not_a_point": 5, "people_count_all": 9})
    image.load("nobody", {"people_count_all": 7})
    assert image.read_registers(Table.INPUT, 204, 1) == b"\x00\x09"
    assert image.read_registers(Table.HOLDING, 204, 1) == b"\x00\x09"
    assert image.read_registers(Table.INPUT, 2 * 200 + 4, 1) is None


def test_other_model_points_in_a_block_read_zero() -> None:
    """A VS121 block still answers at the VS121-P per-region dwell offsets (56..119), with 0;
    the block ends after offset 128 (the daily totals)."""
    spec = SensorSpec(id="x", name="X", number=4, model=Model.VS121)
    image = RegisterImage(resolve([spec]), word_order="high_first")
    assert image.read_registers(Table.INPUT, 800 + 56, 64) == bytes(128)
    assert image.read_registers(Table.INPUT, 800 + 129, 1) is None


def test_a_failing_request_costs_one_answer_04(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenImage(RegisterImage):
        def read_registers(self, table: Table, address: int, count: int) -> bytes | None:
            raise RuntimeError("bug")

    image = BrokenImage(all_points(), word_order="high_first")
    handler = RequestHandler(
        image, WriteExecutor(image, FakeCommands()), DeviceIdentity("v", "p", "r")
    )
    assert handler.handle(struct.pack(">BHH", 3, 0, 1)) == (b"\x83\x04", "device_failure")
    assert handler.handle(struct.pack(">BHH", 2, 200, 1)) == (b"\x02\x01\x00", "ok")
    assert "RuntimeError: bug" in caplog.text
