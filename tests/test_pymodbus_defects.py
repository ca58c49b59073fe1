"""Why the gateway keeps its own Modbus slave and TCP server: pymodbus's servers, shown wrong.

Each test runs pymodbus's own server (RTU over a socat pty pair, TCP on loopback) and EXPECTS
one defect listed in `gateway.modbus.rtu`'s docstring. When a pymodbus upgrade fixes a defect,
its test fails: look again at whether pymodbus's server could replace ours, then delete the
test. The gateway's own slave passes the same situations in test_modbus_rtu / test_modbus_tcp.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers.broker import free_port
from helpers.wait import async_wait_until
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from test_modbus_helpers import HOST, SocatPair
from test_modbus_rtu import RawMaster, read_request

from gateway.modbus.rtu_framing import with_crc

pytestmark = pytest.mark.asyncio

UNIT = 1
SLOW_ADDRESS = 9  # the device takes a while to answer a read here
QUIET_S = 0.5  # a reply would have come by now


def device(slow_read: asyncio.Event | None = None) -> SimDevice:
    """The simulated device; `slow_read` is set when it starts serving the slow address."""

    async def action(
        _function: int,
        _start: int,
        address: int,
        _count: int,
        _registers: list[int],
        _values: list[int] | list[bool] | None,
    ) -> None:
        if address == SLOW_ADDRESS:
            if slow_read is not None:
                slow_read.set()
            await asyncio.sleep(0.3)  # a slow device's answer time: the scenario, not a wait

    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    regs = [SimData(0, count=16, values=7, datatype=DataType.REGISTERS)]
    return SimDevice(id=UNIT, simdata=(bits, list(bits), regs, list(regs)), action=action)


async def stop(server: ModbusSerialServer | ModbusTcpServer) -> None:
    await server.shutdown()  # type: ignore[no-untyped-call]  # untyped in pymodbus


@pytest_asyncio.fixture
async def rtu(tmp_path: Path) -> AsyncIterator[tuple[RawMaster, SocatPair]]:
    pair = SocatPair(tmp_path)
    pair.start()
    server = ModbusSerialServer(
        device(), port=str(pair.slave_path), baudrate=9600, ignore_missing_devices=True
    )
    await server.serve_forever(background=True)
    master = RawMaster(pair.master_path)
    yield master, pair
    master.close()
    await stop(server)
    pair.stop()


async def heard(master: RawMaster) -> bytes:
    """Everything the slave says until it has been quiet for QUIET_S (a read with a timeout:
    no event marks "nothing more")."""
    said = b""
    with contextlib.suppress(TimeoutError):
        while True:
            said += await master.receive(1, within_s=QUIET_S)
    return said


async def test_rtu_answers_an_unknown_unit_id_with_exception_04(
    rtu: tuple[RawMaster, SocatPair],
) -> None:
    """simulator/simcore.py:36 raises KeyError for an unknown id, which
    server/requesthandler.py:106-114 answers with 04, although ignore_missing_devices is set
    (that flag only covers NoSuchIdException, requesthandler.py:96-105)."""
    master, _ = rtu
    master.send(read_request(5, 3, 0, 1))
    assert await master.receive(5) == with_crc(bytes([5, 0x83, 4]))


async def test_rtu_answers_a_broadcast_and_another_slaves_exception_response(
    rtu: tuple[RawMaster, SocatPair],
) -> None:
    """Unit 0 goes the same unknown-id path (requesthandler.py:86-91 only with
    broadcast_enable); an exception response from another slave is decoded as a request."""
    master, _ = rtu
    master.send(with_crc(struct.pack(">BBHH", 0, 5, 0, 0xFF00)))  # broadcast write
    assert await heard(master), "a broadcast got no answer: fixed upstream?"
    master.send(with_crc(bytes([UNIT, 0x83, 2])))  # another device's exception, our id
    assert await heard(master), "an exception response was not answered: fixed upstream?"


async def test_rtu_loses_our_request_after_another_slaves_short_reply(
    rtu: tuple[RawMaster, SocatPair],
) -> None:
    """framer/rtu.py:100 returns the whole buffer as used after the first frame, so a request
    that arrives in the same read as another slave's reply (an 8-byte write echo) is lost."""
    master, _ = rtu
    echo_of_unit_2 = with_crc(struct.pack(">BBHH", 2, 6, 0, 1))
    ours = read_request(UNIT, 3, 0, 1)
    master.send(echo_of_unit_2 + ours)
    said = await heard(master)
    assert with_crc(bytes([UNIT, 3, 2, 0, 7])) not in said, "our request survived: fixed?"


async def test_rtu_server_never_reopens_a_lost_port(tmp_path: Path) -> None:
    """transport/transport.py:261-276: after the port's connection_lost a serial server is
    neither a listener nor a client with reconnect_delay, so nothing reopens it."""
    pair = SocatPair(tmp_path)
    pair.start()
    server = ModbusSerialServer(device(), port=str(pair.slave_path), baudrate=9600)
    await server.serve_forever(background=True)
    try:
        master = RawMaster(pair.master_path)
        master.send(read_request(UNIT, 3, 0, 1))
        assert await master.receive(7) == with_crc(bytes([UNIT, 3, 2, 0, 7]))
        master.close()
        pair.stop()  # the adapter is unplugged...
        pair.start()  # ...and plugged in again, at the same path
        with RawMaster(pair.master_path) as again:
            for _ in range(3):
                again.send(read_request(UNIT, 3, 0, 1))
                assert not await heard(again), "the server came back: fixed upstream?"
    finally:
        await stop(server)
        pair.stop()


# -- TCP ---------------------------------------------------------------------------------------


@pytest.fixture
def slow_read() -> asyncio.Event:
    return asyncio.Event()


@pytest_asyncio.fixture
async def tcp(slow_read: asyncio.Event) -> AsyncIterator[int]:
    port = free_port()
    server = ModbusTcpServer(device(slow_read), address=(HOST, port))
    await server.serve_forever(background=True)
    await async_wait_until(lambda: _listening(port), 10, "pymodbus's TCP server to listen")
    yield port
    await stop(server)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def mbap(tid: int, pdu: bytes, unit: int = UNIT) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


async def replies(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """(transaction id, PDU) of every reply within QUIET_S."""
    out: list[tuple[int, bytes]] = []
    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(7), QUIET_S)
            tid, _, length, _ = struct.unpack(">HHHB", head)
            out.append((tid, await reader.readexactly(length - 1)))
    except TimeoutError:
        return out


async def test_tcp_drops_pipelined_requests(tcp: int) -> None:
    """transport/transport.py:313-314 hands the framer one frame per data_received; the rest
    of the buffer waits for more data that a pipelining master does not send."""
    reader, writer = await asyncio.open_connection(HOST, tcp)
    try:
        read = struct.pack(">BHH", 3, 0, 1)
        writer.write(mbap(1, read) + mbap(2, read) + mbap(3, read))
        got = await replies(reader)
    finally:
        writer.close()
    assert len(got) < 3, "every pipelined request was answered: fixed upstream?"


async def test_tcp_labels_a_late_answer_with_the_next_requests_ids(
    tcp: int, slow_read: asyncio.Event
) -> None:
    """server/requesthandler.py:115-116 copies the ids from `self.last_pdu`, which the next
    request has overwritten (transaction/transaction.py:273) while the first was served."""
    reader, writer = await asyncio.open_connection(HOST, tcp)
    try:
        writer.write(mbap(1, struct.pack(">BHH", 3, SLOW_ADDRESS, 1)))
        await writer.drain()
        # Sent once the first is being served: a separate segment, so the pipelining defect
        # stays out.
        await asyncio.wait_for(slow_read.wait(), 5)
        writer.write(mbap(2, struct.pack(">BHH", 3, 0, 1)))
        got = await replies(reader)
    finally:
        writer.close()
    assert got, "no answer at all"
    assert 1 not in [tid for tid, _ in got], "the slow answer kept its id: fixed upstream?"
