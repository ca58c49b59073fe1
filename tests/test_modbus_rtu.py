"""Modbus RTU over a socat pty pair, against real masters (pymodbus's client, libmodbus's mbpoll)
and raw frames written byte by byte (other slaves' traffic, noise, bad CRCs, echo).

A pty ignores baud rate and parity, so these tests cover framing and behaviour, not line timing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pytest
import pytest_asyncio
import serial
from helpers.wait import async_wait_until
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from test_modbus_helpers import (
    LOBBY,
    FakeCommands,
    SocatPair,
    all_points,
    expected_image,
    feed,
    make_state,
    mbpoll,
    mbpoll_rtu,
    modbus_config,
)

from gateway.modbus import ModbusServer, SerialPortError
from gateway.modbus.layout import readable_blocks
from gateway.modbus.rtu_framing import with_crc
from gateway.modbus.serial_port import frame_gap
from gateway.state import GatewayState

LOBBY_BASE = LOBBY.number * 200
DEADLINE_S = 10.0


async def wait_until(
    condition: Callable[[], bool], what: str, within_s: float = DEADLINE_S
) -> None:
    """A bounded wait on the slave's state (state changes here have no event to await)."""
    await async_wait_until(condition, within_s, what)


class RawMaster:
    """The master end of the pty, byte by byte."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._buf = bytearray()
        self._arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:
            return
        self._buf += data
        self._arrived.set()

    def send(self, data: bytes) -> None:
        os.write(self._fd, data)

    async def receive(self, size: int, within_s: float = 2.0) -> bytes:
        """Exactly `size` bytes (raises TimeoutError when they do not come)."""
        async with asyncio.timeout(within_s):
            while len(self._buf) < size:
                self._arrived.clear()
                await self._arrived.wait()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_request(unit: int, function: int, address: int, count: int) -> bytes:
    return with_crc(struct.pack(">BBHH", unit, function, address, count))


@dataclass
class RtuRig:
    pair: SocatPair
    server: ModbusServer
    state: GatewayState
    commands: FakeCommands
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def master_path(self) -> str:
        return str(self.pair.master_path)

    def client(self) -> AsyncModbusSerialClient:
        return AsyncModbusSerialClient(
            self.master_path, baudrate=9600, parity="N", timeout=1, retries=0
        )


RigFactory = Callable[..., Awaitable[RtuRig]]


@pytest_asyncio.fixture
async def rtu_factory(tmp_path: Path) -> AsyncIterator[RigFactory]:
    made: list[RtuRig] = []

    async def make(
        *, word_order: str = "high_first", start_socat: bool = True, **cfg: object
    ) -> RtuRig:
        pair = SocatPair(tmp_path)
        if start_socat:
            pair.start()
        state = make_state()
        feed(state)
        commands = FakeCommands()
        requests: list[tuple[str, str]] = []
        server = ModbusServer(
            modbus_config(rtu_port=str(pair.slave_path), word_order=word_order, **cfg),  # type: ignore[arg-type]
            all_points(),
            state,
            commands,
            on_request=lambda t, o: requests.append((t, o)),
            reopen_backoff=(0.05, 0.2),
        )
        rig = RtuRig(pair, server, state, commands, requests)
        made.append(rig)
        try:
            await server.start()
        except SerialPortError:
            pair.stop()
            raise
        if start_socat:
            await wait_until(lambda: server.rtu_port_open, "the slave to open its port")
        return rig

    yield make
    for rig in made:
        await rig.server.stop()
        rig.pair.stop()


# -- real masters ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pymodbus_reads_every_point_and_mbpoll_agrees(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory()
    feed(rig.state, salt=2)
    points = all_points()
    registers, bits = expected_image(rig.state, points, "high_first")
    seen: dict[tuple[str, int], int] = {}
    client = rig.client()
    assert await client.connect()
    try:
        # Each block in reads of at most 125 registers (a request's limit).
        parts = [
            (block, block.addresses[i : i + 125])
            for block in readable_blocks(points)
            for i in range(0, len(block.addresses), 125)
        ]
        for block, r in parts:
            table = block.table.value
            if table == "input":
                result = await client.read_input_registers(r.start, count=len(r))
                got = result.registers
            elif table == "holding":
                result = await client.read_holding_registers(r.start, count=len(r))
                got = result.registers
            elif table == "discrete":
                result = await client.read_discrete_inputs(r.start, count=len(r))
                got = [int(b) for b in result.bits[: len(r)]]
            else:
                result = await client.read_coils(r.start, count=len(r))
                got = [int(b) for b in result.bits[: len(r)]]
            want = [
                registers.get(a, 0) if table in ("input", "holding") else bits[table].get(a, 0)
                for a in r
            ]
            assert got == want, block
            seen.update({(table, a): v for a, v in zip(r, got, strict=True)})
    finally:
        client.close()  # the pty has one master end: mbpoll takes it over now
    for mb_type, table, start, count in (
        ("3", "input", 0, 7),
        ("4", "holding", LOBBY_BASE, 120),
        ("1", "discrete", LOBBY_BASE, 17),
        ("0", "coil", LOBBY_BASE + 20, 1),
    ):
        theirs = await mbpoll(
            *mbpoll_rtu(), "-t", mb_type, "-r", str(start), "-c", str(count), rig.master_path
        )
        assert theirs.returncode == 0, theirs.output
        assert theirs.values == {a: seen[(table, a)] for a in range(start, start + count)}


@pytest.mark.asyncio
async def test_mbpoll_reads_32bit_values_in_low_first_order(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory(word_order="low_first")
    result = await mbpoll(*mbpoll_rtu(), "-t", "3:int", "-r", "1", rig.master_path)
    assert result.values == {1: 70_000}, result.output


@pytest.mark.asyncio
async def test_other_unit_ids_get_silence(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory()
    other = await mbpoll(*mbpoll_rtu(unit=2), "-t", "3", "-r", "0", rig.master_path, timeout_s=0.3)
    assert other.returncode != 0
    assert other.timed_out, other.output
    client = rig.client()
    assert await client.connect()
    try:
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=1, device_id=3)
        ok = await client.read_input_registers(0, count=1, device_id=1)
        assert ok.registers == [42]
    finally:
        client.close()
    assert ("rtu", "not_addressed") in rig.requests


@pytest.mark.asyncio
async def test_the_bus_traffic_of_others_is_never_answered(rtu_factory: RigFactory) -> None:
    """Only the last frame of the burst is for us; the first bytes back must be its answer."""
    rig = await rtu_factory()
    with RawMaster(rig.pair.master_path) as master:
        ours = read_request(1, 4, 0, 1)
        corrupted = bytearray(ours)
        corrupted[-1] ^= 0xFF
        other_response = with_crc(bytes([2, 3, 4, 0, 1, 0, 2]))
        burst = [
            read_request(2, 3, 0, 1),  # a request to another slave...
            other_response,  # ...and that slave's answer
            read_request(0, 4, 0, 1),  # a broadcast
            b"\xff\x00\x13",  # line noise
            bytes(corrupted),  # our request with a bad CRC
            with_crc(bytes([1, 0x83, 2])),  # an exception response claiming our id
            ours,
        ]
        for frame in burst:
            master.send(frame)
        answer = await master.receive(7)
        assert answer == with_crc(bytes([1, 4, 2, 0, 42]))
        with pytest.raises(TimeoutError):
            await master.receive(1, within_s=0.2)  # and nothing else
    assert rig.requests.count(("rtu", "ok")) == 1
    assert ("rtu", "bad_frame") in rig.requests
    assert rig.requests.count(("rtu", "not_addressed")) == 2


@pytest.mark.asyncio
async def test_a_request_dribbled_byte_by_byte_is_answered(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory()
    with RawMaster(rig.pair.master_path) as master:
        for byte in read_request(1, 3, LOBBY_BASE + 2, 2):
            master.send(bytes([byte]))
        answer = await master.receive(9)
        assert answer[:3] == bytes([1, 3, 4])
        assert answer == with_crc(answer[:-2])


@pytest.mark.asyncio
async def test_response_waits_three_and_a_half_characters(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory()
    with RawMaster(rig.pair.master_path) as master:
        start = time.monotonic()
        master.send(read_request(1, 4, 0, 1))
        await master.receive(7)
        assert time.monotonic() - start >= frame_gap(9600)


@pytest.mark.asyncio
async def test_exceptions_and_unknown_functions_over_rtu(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory()
    with RawMaster(rig.pair.master_path) as master:
        master.send(read_request(1, 3, 7, 1))
        assert await master.receive(5) == with_crc(bytes([1, 0x83, 2]))
        # An unknown function code has no length rule: taken whole once the line is quiet.
        master.send(with_crc(bytes([1, 0x41, 1, 2, 3])))
        assert await master.receive(5) == with_crc(bytes([1, 0xC1, 1]))
    unmapped = await mbpoll(*mbpoll_rtu(), "-t", "4", "-r", "7", rig.master_path)
    assert unmapped.exception_code() == 2, unmapped.output


@pytest.mark.asyncio
async def test_writes_over_rtu_run_the_command(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory()
    written = await mbpoll(
        *mbpoll_rtu(), "-t", "0", "-r", str(LOBBY_BASE + 20), rig.master_path, "1"
    )
    assert written.returncode == 0, written.output
    assert rig.commands.resets == ["lobby"]
    read_only = await mbpoll(
        *mbpoll_rtu(), "-t", "4", "-r", str(LOBBY_BASE + 4), rig.master_path, "9"
    )
    assert read_only.exception_code() == 2, read_only.output


@pytest.mark.asyncio
async def test_local_echo_is_not_taken_for_a_request(rtu_factory: RigFactory) -> None:
    """With an echoing adapter our write response comes back, identical to the request."""
    rig = await rtu_factory(local_echo=True)
    with RawMaster(rig.pair.master_path) as master:
        request = with_crc(struct.pack(">BBHH", 1, 5, LOBBY_BASE + 20, 0xFF00))
        master.send(request)
        response = await master.receive(8)
        assert response == request
        master.send(response)  # what the adapter would hand back to the slave
        master.send(read_request(1, 4, 0, 1))
        assert await master.receive(7) == with_crc(bytes([1, 4, 2, 0, 42]))
    assert rig.commands.resets == ["lobby"]


@pytest.mark.asyncio
async def test_a_broadcast_write_is_not_executed(rtu_factory: RigFactory) -> None:
    rig = await rtu_factory()
    with RawMaster(rig.pair.master_path) as master:
        master.send(with_crc(struct.pack(">BBHH", 0, 5, LOBBY_BASE + 20, 0xFF00)))
        master.send(read_request(1, 4, 0, 1))
        assert await master.receive(7) == with_crc(bytes([1, 4, 2, 0, 42]))
        assert master.pending == b""
    assert rig.commands.resets == []
    assert ("rtu", "not_addressed") in rig.requests


# -- following the bus: nothing inside another slave's reply is a request ------------------------

RESET_LOBBY = with_crc(struct.pack(">BBHH", 1, 5, LOBBY_BASE + 20, 0xFF00))


def reply_hiding(frame: bytes, unit: int = 2) -> bytes:
    """Slave `unit`'s answer to "read 10 holding registers" whose data holds `frame` whole."""
    data = b"\x00\x07\x01\x01" + frame + bytes(20 - 4 - len(frame))
    return with_crc(bytes((unit, 3, len(data))) + data)


async def deliver_in_pieces(master: RawMaster, frame: bytes, cuts: tuple[int, ...]) -> None:
    """As a USB adapter hands a reply over: in bursts a few milliseconds apart."""
    edges = (0, *cuts, len(frame))
    for a, b in itertools.pairwise(edges):
        master.send(frame[a:b])
        await asyncio.sleep(0.01)  # line timing being simulated, not a synchronisation


@pytest.mark.asyncio
async def test_a_frame_inside_another_slaves_reply_is_never_executed(
    rtu_factory: RigFactory,
) -> None:
    rig = await rtu_factory()
    with RawMaster(rig.pair.master_path) as master:
        reply = reply_hiding(RESET_LOBBY)
        assert RESET_LOBBY in reply
        # The second slave's reply arrives cut right around the hidden "write coil" frame.
        master.send(read_request(2, 3, 0, 10))
        await deliver_in_pieces(master, reply, (7, 15, 20))
        # The same hidden frame inside an exception-free reply after a retried request.
        master.send(read_request(2, 3, 0, 10))
        master.send(read_request(2, 3, 0, 10))
        await deliver_in_pieces(master, reply, (3, 7, 15))
        with pytest.raises(TimeoutError):
            await master.receive(1, within_s=0.3)  # we said nothing on the line
        # The scanner is not stuck: our own request is answered as usual.
        master.send(read_request(1, 4, 0, 1))
        assert await master.receive(7) == with_crc(bytes([1, 4, 2, 0, 42]))
    assert rig.commands.resets == []
    assert ("rtu", "bad_frame") not in rig.requests


@pytest.mark.asyncio
async def test_a_silent_or_failing_other_slave_does_not_hide_our_request(
    rtu_factory: RigFactory,
) -> None:
    rig = await rtu_factory()
    with RawMaster(rig.pair.master_path) as master:
        master.send(read_request(2, 3, 0, 10))  # slave 2 never answers; the master moves on
        master.send(read_request(1, 4, 0, 1))
        assert await master.receive(7) == with_crc(bytes([1, 4, 2, 0, 42]))
        master.send(read_request(3, 3, 0, 10))  # slave 3 answers with an exception
        master.send(with_crc(bytes([3, 0x83, 2])))
        master.send(read_request(1, 4, 0, 1))
        assert await master.receive(7) == with_crc(bytes([1, 4, 2, 0, 42]))
        # A reply cut short by a dead adapter: the line goes quiet, then the master asks us.
        master.send(read_request(2, 3, 0, 10))
        master.send(reply_hiding(RESET_LOBBY)[:16])
        with pytest.raises(TimeoutError):  # longer than the noise timeout: the line is quiet
            await master.receive(1, within_s=0.2)  # and we said nothing on it
        master.send(read_request(1, 4, 0, 1))
        assert await master.receive(7) == with_crc(bytes([1, 4, 2, 0, 42]))
    assert rig.commands.resets == []


# -- the port coming and going -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_port_vanishing_and_returning_is_survived(
    rtu_factory: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await rtu_factory()
    caplog.set_level(logging.DEBUG, logger="gateway.modbus")
    rig.pair.stop()  # the adapter is unplugged: both pty ends vanish
    await wait_until(lambda: not rig.server.rtu_port_open, "the slave to notice the loss")
    # While it is gone the slave retries quietly (DEBUG), after one warning.
    await wait_until(
        lambda: (
            sum(
                "cannot open" in r.getMessage() or "could not open" in r.getMessage()
                for r in caplog.records
            )
            >= 2
        ),
        "a few reopen attempts",
    )
    rig.pair.start()
    await wait_until(lambda: rig.server.rtu_port_open, "the slave to reopen the port")
    result = await mbpoll(*mbpoll_rtu(), "-t", "3", "-r", "0", "-c", "7", rig.master_path)
    assert result.returncode == 0, result.output
    assert result.values[0] == 42
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in warnings if "lost" in m]) == 1, warnings
    assert len(warnings) == 1, warnings


@pytest.mark.asyncio
async def test_missing_port_at_start_fails_when_asked(rtu_factory: RigFactory) -> None:
    with pytest.raises(SerialPortError, match="gateway-tty"):
        await rtu_factory(start_socat=False, missing_port="fail")


@pytest.mark.asyncio
async def test_missing_port_at_start_is_waited_for(
    rtu_factory: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.modbus")
    rig = await rtu_factory(start_socat=False, missing_port="wait")
    assert not rig.server.rtu_port_open
    assert any("waiting for the port" in r.getMessage() for r in caplog.records)
    rig.pair.start()
    await wait_until(lambda: rig.server.rtu_port_open, "the port to appear")
    result = await mbpoll(*mbpoll_rtu(), "-t", "4", "-r", "0", rig.master_path)
    assert result.values == {0: 42}, result.output


@pytest.mark.asyncio
async def test_a_port_that_is_no_serial_port_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_tty = tmp_path / "not-a-tty"
    not_a_tty.write_bytes(b"")
    caplog.set_level(logging.DEBUG, logger="gateway.modbus")
    server = ModbusServer(
        modbus_config(rtu_port=str(not_a_tty)),
        all_points(),
        make_state(),
        FakeCommands(),
        reopen_backoff=(0.01, 0.02),
    )
    await server.start()
    try:
        await wait_until(
            lambda: sum(r.levelno == logging.DEBUG for r in caplog.records) >= 3,
            "a few retries",
        )
        assert not server.rtu_port_open
    finally:
        await server.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "not-a-tty" in warnings[0]
    with pytest.raises(SerialPortError, match="not-a-tty"):
        await ModbusServer(
            modbus_config(rtu_port=str(not_a_tty), missing_port="fail"),
            all_points(),
            make_state(),
            FakeCommands(),
        ).start()


@pytest.mark.asyncio
async def test_stop_releases_the_port(rtu_factory: RigFactory) -> None:
    """The port is locked while served; after stop (even at once after start) it is free."""
    rig = await rtu_factory()
    with pytest.raises(serial.SerialException):
        serial.Serial(str(rig.pair.slave_path), exclusive=True)
    await rig.server.stop()
    serial.Serial(str(rig.pair.slave_path), exclusive=True).close()
    quick = ModbusServer(
        modbus_config(rtu_port=str(rig.pair.slave_path)), all_points(), make_state(), FakeCommands()
    )
    await quick.start()
    await quick.stop()
    serial.Serial(str(rig.pair.slave_path), exclusive=True).close()


@pytest.mark.asyncio
async def test_rs485_mode_refused_by_the_driver_is_a_clear_error(rtu_factory: RigFactory) -> None:
    # A pty has no RS485 mode, as a USB adapter that switches direction itself often has not.
    with pytest.raises(SerialPortError, match="RS485"):
        await rtu_factory(rs485=True, missing_port="fail")
