"""Modbus TCP against real masters: pymodbus's client and libmodbus's mbpoll, on loopback."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from helpers.broker import free_port
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse
from test_modbus_helpers import (
    GATEWAY_VALUES,
    HOST,
    LOBBY,
    MEETING,
    FakeCommands,
    all_points,
    expected_image,
    feed,
    make_state,
    mbpoll,
    mbpoll_tcp,
    modbus_config,
    sensor_report,
)

from gateway.modbus import ModbusServer
from gateway.modbus.layout import readable_blocks
from gateway.state import STATUS_NEVER, STATUS_ONLINE, STATUS_STALE, GatewayState, Report

LOBBY_BASE = LOBBY.number * 200
MEETING_BASE = MEETING.number * 200


@dataclass
class Rig:
    server: ModbusServer
    state: GatewayState
    commands: FakeCommands
    client: AsyncModbusTcpClient
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def port(self) -> int:
        port = self.server.tcp_port
        assert port is not None
        return port


RigFactory = Callable[..., Awaitable[Rig]]


@pytest_asyncio.fixture
async def rig_factory() -> AsyncIterator[RigFactory]:
    made: list[Rig] = []

    async def make(
        word_order: str = "high_first", fed: bool = True, max_connections: int = 16
    ) -> Rig:
        state = make_state()
        if fed:
            feed(state)
        commands = FakeCommands()
        requests: list[tuple[str, str]] = []
        cfg = modbus_config(tcp_port=free_port(), word_order=word_order)
        cfg = cfg.model_copy(
            update={"tcp": cfg.tcp.model_copy(update={"max_connections": max_connections})}
        )
        server = ModbusServer(
            cfg,
            all_points(),
            state,
            commands,
            on_request=lambda t, o: requests.append((t, o)),
        )
        await server.start()
        client = AsyncModbusTcpClient(HOST, port=server.tcp_port or 0, timeout=2, retries=0)
        assert await client.connect()
        rig = Rig(server, state, commands, client, requests)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.client.close()
        await rig.server.stop()


async def read_table(
    client: AsyncModbusTcpClient, table: str, address: int, count: int
) -> ModbusPDU:
    if table == "coil":
        return await client.read_coils(address, count=count)
    if table == "discrete":
        return await client.read_discrete_inputs(address, count=count)
    if table == "input":
        return await client.read_input_registers(address, count=count)
    return await client.read_holding_registers(address, count=count)


async def raw_request(port: int, pdu: bytes, *, unit: int = 1, tid: int = 0x1234) -> bytes:
    """Send one request PDU in an MBAP frame; return the response PDU (checking the header)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
        header = await asyncio.wait_for(reader.readexactly(7), 2)
        r_tid, proto, length, r_unit = struct.unpack(">HHHB", header)
        assert (r_tid, proto, r_unit) == (tid, 0, unit)
        return await asyncio.wait_for(reader.readexactly(length - 1), 2)
    finally:
        writer.close()


# -- reads ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("word_order", ["high_first", "low_first"])
async def test_every_point_reads_back_after_state_changes(
    rig_factory: RigFactory, word_order: str
) -> None:
    rig = await rig_factory(word_order)
    feed(rig.state, salt=1)  # changes after start arrive through the subscription
    points = all_points()
    registers, bits = expected_image(rig.state, points, word_order)
    checked = 0
    # Each block in reads of at most 125 registers (a request's limit).
    parts = [
        (block, block.addresses[i : i + 125])
        for block in readable_blocks(points)
        for i in range(0, len(block.addresses), 125)
    ]
    for block, r in parts:
        result = await read_table(rig.client, block.table.value, r.start, len(r))
        assert not result.isError(), (block, result)
        if block.table.value in ("input", "holding"):
            got = dict(zip(r, result.registers, strict=True))
            want = {a: registers.get(a, 0) for a in r}  # unused addresses in a block read 0
        else:
            got = dict(zip(r, [int(b) for b in result.bits[: len(r)]], strict=True))
            want = {a: bits[block.table.value].get(a, 0) for a in r}
        assert got == want, block
        checked += len(r)
    assert checked > 400
    # The second feed really changed the numbers, so a frozen image would have failed above.
    first, second = sensor_report(LOBBY, 0), sensor_report(LOBBY, 1)
    assert first["people_count_all"] != second["people_count_all"]
    assert registers[LOBBY_BASE + 4] == second["people_count_all"]
    assert rig.requests
    assert set(rig.requests) == {("tcp", "ok")}


@pytest.mark.asyncio
async def test_changes_after_start_reach_the_registers(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    before = await rig.client.read_input_registers(LOBBY_BASE + 4, count=1)
    rig.state.apply(
        Report("lobby", {"people_count_all": 321}, rig.state.sensors["lobby"].last_report or 0)
    )
    after = await rig.client.read_input_registers(LOBBY_BASE + 4, count=1)
    assert before.registers != [321]
    assert after.registers == [321]
    rig.state.publish_gateway({**GATEWAY_VALUES, "heartbeat": 43})
    beat = await rig.client.read_holding_registers(0, count=1)
    assert beat.registers == [43]


@pytest.mark.asyncio
async def test_mbpoll_reads_the_same_numbers_as_pymodbus(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    for table, mb_type in (("input", "3"), ("holding", "4")):
        for start, count in ((0, 7), (LOBBY_BASE, 124), (MEETING_BASE, 124)):
            ours = await read_table(rig.client, table, start, count)
            theirs = await mbpoll(
                *mbpoll_tcp(rig.port), "-t", mb_type, "-r", str(start), "-c", str(count), HOST
            )
            assert theirs.returncode == 0, theirs.output
            assert theirs.values == dict(
                zip(range(start, start + count), ours.registers, strict=True)
            )
    for table, mb_type, start, count in (("discrete", "1", LOBBY_BASE, 17), ("coil", "0", 220, 1)):
        ours = await read_table(rig.client, table, start, count)
        theirs = await mbpoll(
            *mbpoll_tcp(rig.port), "-t", mb_type, "-r", str(start), "-c", str(count), HOST
        )
        assert theirs.returncode == 0, theirs.output
        assert theirs.values == {start + i: int(b) for i, b in enumerate(ours.bits[:count])}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("word_order", "mbpoll_flags"), [("high_first", ["-B"]), ("low_first", [])]
)
async def test_32bit_values_follow_the_word_order(
    rig_factory: RigFactory, word_order: str, mbpoll_flags: list[str]
) -> None:
    rig = await rig_factory(word_order)
    uptime = GATEWAY_VALUES["uptime"]  # 70000 = 0x0001_1170
    words = (await rig.client.read_input_registers(1, count=2)).registers
    assert words == ([1, 0x1170] if word_order == "high_first" else [0x1170, 1])
    # libmodbus combines the two words itself: -B means high word first.
    result = await mbpoll(*mbpoll_tcp(rig.port), "-t", "3:int", "-r", "1", *mbpoll_flags, HOST)
    assert result.values == {1: uptime}, result.output


@pytest.mark.asyncio
async def test_device_identification_and_diagnostics_echo(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    info = await rig.client.read_device_information()
    assert isinstance(info, ReadDeviceInformationResponse)
    assert info.information[0] == b"vs121-gateway"
    assert set(info.information) == {0, 1, 2}
    echo = await raw_request(rig.port, b"\x08\x00\x00\xab\xcd")
    assert echo == b"\x08\x00\x00\xab\xcd"
    # Stream access from an unknown object starts again at object 0; individual access: one.
    stream = await raw_request(rig.port, b"\x2b\x0e\x01\x09")
    assert stream[:7] == bytes([0x2B, 0x0E, 1, 0x81, 0, 0, 3])
    single = await raw_request(rig.port, b"\x2b\x0e\x04\x01")
    assert single == bytes([0x2B, 0x0E, 4, 0x81, 0, 0, 1, 1, 13]) + b"VS121 gateway"


# -- stale and never-reported status ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_stale_sensor_keeps_values_and_flags_the_status(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    status = LOBBY_BASE  # status word at offset 0, online discrete input at offset 0
    count_before = (await rig.client.read_input_registers(LOBBY_BASE + 4, count=1)).registers
    assert (await rig.client.read_input_registers(status, count=1)).registers == [STATUS_ONLINE]
    assert (await rig.client.read_discrete_inputs(status, count=1)).bits[0] is True
    last = rig.state.sensors["lobby"].last_report
    assert last is not None
    rig.state.tick(last + 601)  # stale_after is 600 s
    assert (await rig.client.read_input_registers(status, count=1)).registers == [STATUS_STALE]
    assert (await rig.client.read_discrete_inputs(status, count=1)).bits[0] is False
    assert (
        await rig.client.read_input_registers(LOBBY_BASE + 4, count=1)
    ).registers == count_before
    rig.state.apply(Report("lobby", {"people_count_all": 1}, last + 700))
    assert (await rig.client.read_input_registers(status, count=1)).registers == [STATUS_ONLINE]


@pytest.mark.asyncio
async def test_never_reported_sensor_shows_its_status_word(rig_factory: RigFactory) -> None:
    rig = await rig_factory(fed=False)
    rig.state.tick()
    result = await rig.client.read_holding_registers(LOBBY_BASE, count=2)
    assert result.registers == [STATUS_NEVER, 65535]


# -- exceptions ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("pdu", "answer"),
    [
        (struct.pack(">BHH", 3, 7, 1), b"\x83\x02"),  # just past the gateway block
        (struct.pack(">BHH", 4, 0, 8), b"\x84\x02"),  # a range reaching past the block
        (struct.pack(">BHH", 3, LOBBY_BASE + 128, 2), b"\x83\x02"),  # past the block's end
        (struct.pack(">BHH", 3, 2 * 200, 1), b"\x83\x02"),  # sensor number 2 is not configured
        (struct.pack(">BHH", 2, LOBBY_BASE + 17, 1), b"\x82\x02"),
        (struct.pack(">BHH", 1, LOBBY_BASE, 1), b"\x81\x02"),  # the online bit is no coil
        (struct.pack(">BHH", 3, 65535, 2), b"\x83\x02"),  # beyond the address space
        (struct.pack(">BHH", 3, 0, 0), b"\x83\x03"),  # quantity 0
        (struct.pack(">BHH", 3, 0, 126), b"\x83\x03"),  # quantity above 125
        (struct.pack(">BHH", 1, 220, 2001), b"\x81\x03"),
        (struct.pack(">BH", 3, 0), b"\x83\x03"),  # truncated request
        (b"\x41\x00", b"\xc1\x01"),  # unknown function
        (struct.pack(">BHHHHB", 23, 0, 1, 0, 1, 2) + b"\x00\x01", b"\x97\x01"),  # not supported
        (struct.pack(">BHH", 6, LOBBY_BASE + 4, 1), b"\x86\x02"),  # read-only register
        (struct.pack(">BHH", 5, 222, 0xFF00), b"\x85\x02"),  # no coil there
        (struct.pack(">BHH", 5, 220, 0x1234), b"\x85\x03"),  # a coil is 0xFF00 or 0x0000
        (struct.pack(">BHHB", 15, 220, 1, 2) + b"\x01\x00", b"\x8f\x03"),  # byte count wrong
        (struct.pack(">BHHB", 16, LOBBY_BASE, 1, 2) + b"\x00\x01", b"\x90\x02"),
        (struct.pack(">BHHB", 16, LOBBY_BASE, 2, 2) + b"\x00\x01", b"\x90\x03"),
        (b"\x08\x00\x01\x00\x00", b"\x88\x01"),  # only diagnostics sub-function 0
        (b"\x2b\x0e\x04\x07", b"\xab\x02"),  # device identification: no object 7
        (b"\x2b\x0e\x05\x00", b"\xab\x03"),  # no such access code
        (b"\x2b\x0d\x01\x00", b"\xab\x01"),  # another MEI type
        (struct.pack(">BH", 5, 220), b"\x85\x03"),  # truncated writes
        (struct.pack(">BH", 6, 0), b"\x86\x03"),
        (struct.pack(">BH", 15, 220), b"\x8f\x03"),
        (struct.pack(">BH", 16, 0), b"\x90\x03"),
        (struct.pack(">BHHB", 15, 65535, 8, 1) + b"\x01", b"\x8f\x02"),  # past the last address
        (struct.pack(">BHHB", 16, 65535, 2, 4) + bytes(4), b"\x90\x02"),
    ],
)
async def test_exception_codes(rig_factory: RigFactory, pdu: bytes, answer: bytes) -> None:
    rig = await rig_factory()
    assert await raw_request(rig.port, pdu) == answer
    assert rig.commands.resets == []


@pytest.mark.asyncio
async def test_mbpoll_sees_the_same_exceptions(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    unmapped = await mbpoll(*mbpoll_tcp(rig.port), "-t", "4", "-r", "7", HOST)
    assert unmapped.returncode != 0
    assert unmapped.exception_code() == 2, unmapped.output
    read_only = await mbpoll(*mbpoll_tcp(rig.port), "-t", "4", "-r", str(LOBBY_BASE + 4), HOST, "5")
    assert read_only.exception_code() == 2, read_only.output
    whole_block = await mbpoll(
        *mbpoll_tcp(rig.port), "-t", "3", "-r", str(LOBBY_BASE), "-c", "124", HOST
    )
    assert whole_block.returncode == 0
    assert len(whole_block.values) == 124


@pytest.mark.asyncio
async def test_outcomes_reach_the_metrics_hook(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    await rig.client.read_input_registers(0, count=7)
    await rig.client.read_input_registers(7, count=1)
    await raw_request(rig.port, struct.pack(">BHH", 3, 0, 0))
    await raw_request(rig.port, b"\x41")
    assert rig.requests == [
        ("tcp", "ok"),
        ("tcp", "illegal_address"),
        ("tcp", "illegal_value"),
        ("tcp", "illegal_function"),
    ]


# -- writes ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_reset_coil_runs_the_command_and_reads_back_zero(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    result = await rig.client.write_coil(LOBBY_BASE + 20, True)
    assert not result.isError()
    assert rig.commands.resets == ["lobby"]
    assert (await rig.client.read_coils(LOBBY_BASE + 20, count=1)).bits[0] is False
    await rig.client.write_coil(LOBBY_BASE + 20, False)  # writing 0 does nothing
    assert rig.commands.resets == ["lobby"]
    result = await rig.client.write_coils(MEETING_BASE + 20, [True])
    assert not result.isError()
    assert rig.commands.resets == ["lobby", "meeting"]
    written = await mbpoll(*mbpoll_tcp(rig.port), "-t", "0", "-r", str(LOBBY_BASE + 20), HOST, "1")
    assert written.returncode == 0, written.output
    assert rig.commands.resets == ["lobby", "meeting", "lobby"]


@pytest.mark.asyncio
async def test_failing_command_answers_04(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    rig.commands.fail_with = KeyError("lobby")
    result = await rig.client.write_coil(LOBBY_BASE + 20, True)
    assert result.isError()
    assert result.exception_code == 4
    assert rig.requests[-1] == ("tcp", "device_failure")


@pytest.mark.asyncio
async def test_requests_behind_a_write_wait_for_it(rig_factory: RigFactory) -> None:
    """Pipelined on one connection: the read after a write is answered after the write."""
    rig = await rig_factory()
    release = asyncio.Event()
    started = asyncio.Event()
    calls: list[str] = []

    async def slow_reset(sensor_id: str) -> str:
        calls.append(sensor_id)
        started.set()
        await release.wait()
        return "totals reset"

    rig.commands.reset_counts = slow_reset  # type: ignore[method-assign]
    reader, writer = await asyncio.open_connection(HOST, rig.port)
    try:
        write = struct.pack(">HHHBBHH", 1, 0, 6, 1, 5, LOBBY_BASE + 20, 0xFF00)
        read = struct.pack(">HHHBBHH", 2, 0, 6, 1, 3, 0, 1)
        writer.write(write + read)
        await asyncio.wait_for(started.wait(), 2)
        assert calls == ["lobby"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.05)  # nothing answered yet
        release.set()
        first = await asyncio.wait_for(reader.readexactly(12), 2)
        second = await asyncio.wait_for(reader.readexactly(11), 2)
        assert struct.unpack(">H", first[:2]) == (1,)
        assert struct.unpack(">H", second[:2]) == (2,)
    finally:
        writer.close()


# -- connections -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_malformed_header_closes_the_connection(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    reader, writer = await asyncio.open_connection(HOST, rig.port)
    try:
        writer.write(struct.pack(">HHHB", 1, 7, 6, 1) + b"\x03\x00\x00\x00\x01")  # protocol 7
        assert await asyncio.wait_for(reader.read(100), 2) == b""
    finally:
        writer.close()
    assert ("tcp", "bad_frame") in rig.requests


@pytest.mark.asyncio
async def test_a_newcomer_beyond_the_limit_takes_the_idle_slot(rig_factory: RigFactory) -> None:
    rig = await rig_factory(max_connections=1)  # the rig's own client holds the one slot
    reader, writer = await asyncio.open_connection(HOST, rig.port)
    try:
        writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 1))
        assert len(await asyncio.wait_for(reader.readexactly(11), 2)) == 11
    finally:
        writer.close()
    assert rig.server.tcp_connections <= 1


@pytest.mark.asyncio
async def test_a_function_code_with_the_exception_bit_gets_no_answer(
    rig_factory: RigFactory,
) -> None:
    """`83 01` would read as an exception to function 3: such a request gets silence."""
    rig = await rig_factory()
    reader, writer = await asyncio.open_connection(HOST, rig.port)
    try:
        writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, 0x83, 0, 1))
        writer.write(struct.pack(">HHHBBHH", 2, 0, 6, 1, 3, 0, 1))
        answer = await asyncio.wait_for(reader.readexactly(11), 2)
        assert struct.unpack(">HHHBB", answer[:8]) == (2, 0, 5, 1, 3)  # only the second
    finally:
        writer.close()
    assert ("tcp", "bad_frame") in rig.requests


@pytest.mark.asyncio
async def test_split_and_pipelined_frames(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    reader, writer = await asyncio.open_connection(HOST, rig.port)
    try:
        frames = b"".join(struct.pack(">HHHBBHH", tid, 0, 6, 9, 4, 0, 1) for tid in (1, 2, 3))
        for i in range(0, len(frames), 5):  # dribbled in 5-byte pieces
            writer.write(frames[i : i + 5])
            await writer.drain()
        for tid in (1, 2, 3):
            answer = await asyncio.wait_for(reader.readexactly(11), 2)
            assert answer == struct.pack(
                ">HHHBBBH", tid, 0, 5, 9, 4, 2, GATEWAY_VALUES["heartbeat"]
            )
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_a_failing_metrics_callback_does_not_stop_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(transport: str, outcome: str) -> None:
        raise ValueError(f"{transport}/{outcome} rejected")

    server = ModbusServer(
        modbus_config(tcp_port=free_port()),
        all_points(),
        make_state(),
        FakeCommands(),
        on_request=broken,
    )
    await server.start()
    try:
        for _ in range(3):
            assert (
                await raw_request(server.tcp_port or 0, struct.pack(">BHH", 3, 0, 1))
                == b"\x03\x02\x00\x00"
            )
    finally:
        await server.stop()
    assert caplog.text.count("on_request callback failed") == 1


@pytest.mark.asyncio
async def test_a_taken_tcp_port_fails_start(rig_factory: RigFactory) -> None:
    rig = await rig_factory()
    second = ModbusServer(
        modbus_config(tcp_port=rig.port), all_points(), make_state(), FakeCommands()
    )
    with pytest.raises(OSError, match="address already in use"):
        await second.start()
