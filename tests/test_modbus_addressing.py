"""Sites past 327 sensors: Modbus address checks only with Modbus on, the one-unit-per-sensor
addressing mode over TCP and RTU, and sensors no scheme can reach (an error, or BACnet only)."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers.broker import free_port
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from test_modbus_helpers import (
    GATEWAY_VALUES,
    HOST,
    LOBBY,
    MEETING,
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
from test_modbus_rtu import RawMaster, read_request, wait_until
from test_modbus_tcp import raw_request

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.modbus import ModbusServer
from gateway.modbus.rtu_framing import with_crc
from gateway.settings import load_settings
from gateway.state import GatewayState
from objects.catalog import Model
from objects.pointmap import SensorSpec

GATEWAY_UNIT = 200

SENSOR = """
[[sensors]]
id = "s{n}"
name = "S{n}"
number = {n}
model = "vs121"
dev_eui = "24e124538c{n:06d}"
"""


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def sensors(*numbers: int) -> str:
    return "".join(SENSOR.format(n=n) for n in numbers)


# -- configuration -----------------------------------------------------------------------------


def test_modbus_off_allows_sensors_past_the_modbus_map(tmp_path: Path) -> None:
    text = "[modbus.tcp]\nenabled = false\n" + sensors(1, 400, 4000)
    settings = load_settings(config(tmp_path, text))
    assert [s.number for s in settings.sensors] == [1, 400, 4000]


def test_modbus_on_still_names_the_sensors_it_cannot_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="beyond 65535"):
        load_settings(config(tmp_path, sensors(1, 400)))
    unit_mode = '[modbus]\naddressing = "unit_per_sensor"\n'
    with pytest.raises(ConfigError, match=r"sensors\[1\]\.number: 300 has no Modbus unit id"):
        load_settings(config(tmp_path, unit_mode + sensors(1, 300)))
    with pytest.raises(ConfigError, match=r"sensors\[1\]\.number: 247 is modbus.gateway_unit_id"):
        load_settings(config(tmp_path, unit_mode + sensors(1, 247)))
    bacnet_only = '[modbus]\nunaddressable_sensors = "bacnet_only"\n'
    assert len(load_settings(config(tmp_path, bacnet_only + sensors(1, 400))).sensors) == 2


def test_the_map_documents_both_modes_and_who_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        '[modbus]\naddressing = "unit_per_sensor"\ngateway_unit_id = 200\n'
        'unaddressable_sensors = "bacnet_only"\n' + sensors(1, 2, 300)
    )
    assert main(["points", "--config", str(config(tmp_path, text)), "--format", "modbus"]) == 0
    out = capsys.readouterr().out
    assert 'This map uses `modbus.addressing = "unit_per_sensor"`' in out
    assert "- `blocks` (default)" in out
    assert "## Not on Modbus\n\ns300 (number 300)" in out
    assert "| s2 | 2 | input | 0 | 128 |" in out  # sensor 2's block at address 0 of unit 2
    assert "| gateway | 200 | input | 0 |" in out
    assert "broadcast" in out.lower()
    assert "not executed" in out or "neither executed" in out
    # The default mode: unchanged addresses, no unit column.
    default = config(tmp_path, sensors(2))
    assert main(["points", "--config", str(default), "--format", "modbus"]) == 0
    out = capsys.readouterr().out
    assert "| s2 | input | 400 | 528 |" in out


# -- serving -----------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def unit_server() -> AsyncIterator[tuple[ModbusServer, FakeCommands, GatewayState]]:
    state = make_state()
    feed(state)
    cfg = modbus_config(
        tcp_port=free_port(), addressing="unit_per_sensor", gateway_unit_id=GATEWAY_UNIT
    )
    commands = FakeCommands()
    server = ModbusServer(cfg, all_points(), state, commands)
    await server.start()
    yield server, commands, state
    await server.stop()


def block_words(state: GatewayState, number: int) -> list[int]:
    """The first 120 registers of sensor `number`'s block, as blocks mode lays them out."""
    registers, _ = expected_image(state, all_points(), "high_first")
    base = number * 200
    return [registers.get(base + a, 0) for a in range(120)]


@pytest.mark.asyncio
async def test_tcp_unit_per_sensor(
    unit_server: tuple[ModbusServer, FakeCommands, GatewayState],
) -> None:
    server, commands, state = unit_server
    port = server.tcp_port or 0
    client = AsyncModbusTcpClient(HOST, port=port, timeout=2, retries=0)
    assert await client.connect()
    try:
        for spec in (LOBBY, MEETING):
            got = await client.read_input_registers(0, count=120, device_id=spec.number)
            assert got.registers == block_words(state, spec.number), spec.id
        heartbeat = await client.read_holding_registers(0, count=1, device_id=GATEWAY_UNIT)
        assert heartbeat.registers == [GATEWAY_VALUES["heartbeat"]]
    finally:
        client.close()
    # No sensor 2: exception 0B (gateway target failed to respond).
    assert await raw_request(port, struct.pack(">BHH", 3, 0, 1), unit=2) == b"\x83\x0b"
    # A read may not spill into the next unit's block.
    assert await raw_request(port, struct.pack(">BHH", 3, 150, 60), unit=1) == b"\x83\x02"
    # A write lands on the unit's sensor and echoes the address the master sent.
    reset = struct.pack(">BHH", 5, 20, 0xFF00)
    assert await raw_request(port, reset, unit=LOBBY.number) == reset
    assert commands.resets == ["lobby"]


@pytest.mark.asyncio
async def test_rtu_unit_per_sensor_answers_its_units_and_nobody_else(tmp_path: Path) -> None:
    pair = SocatPair(tmp_path)
    pair.start()
    state = make_state()
    feed(state)
    cfg = modbus_config(
        rtu_port=str(pair.slave_path), addressing="unit_per_sensor", gateway_unit_id=GATEWAY_UNIT
    )
    server = ModbusServer(cfg, all_points(), state, FakeCommands(), reopen_backoff=(0.05, 0.2))
    await server.start()
    try:
        await wait_until(lambda: server.rtu_port_open, "the slave to open its port")
        with RawMaster(pair.master_path) as master:
            for unit in (2, 0, 5, 247):  # no such sensor, broadcast, unknown: silence
                master.send(read_request(unit, 3, 0, 1))
            master.send(read_request(GATEWAY_UNIT, 4, 0, 1))
            assert await master.receive(7) == with_crc(
                bytes([GATEWAY_UNIT, 4, 2, 0, GATEWAY_VALUES["heartbeat"]])
            )
            assert master.pending == b""
        client = AsyncModbusSerialClient(str(pair.master_path), baudrate=9600, timeout=1)
        assert await client.connect()
        try:
            got = await client.read_input_registers(0, count=120, device_id=MEETING.number)
            assert got.registers == block_words(state, MEETING.number)
        finally:
            client.close()
        # libmodbus's mbpoll as the independent master, reading unit 1 at address 0.
        polled = await mbpoll(
            *mbpoll_rtu(unit=LOBBY.number), "-t", "3", "-r", "0", "-c", "10", str(pair.master_path)
        )
        assert polled.returncode == 0, polled.output
        assert list(polled.values.values()) == block_words(state, LOBBY.number)[:10]
    finally:
        await server.stop()
        pair.stop()


@pytest.mark.asyncio
async def test_bacnet_only_sensors_are_named_once_and_the_rest_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    far = SensorSpec(id="far", name="Far", number=400, model=Model.VS121, region_count=1)
    specs = (LOBBY, far)
    state = make_state(specs)
    feed(state)
    cfg = modbus_config(tcp_port=free_port()).model_copy(
        update={"unaddressable_sensors": "bacnet_only"}
    )
    server = ModbusServer(cfg, all_points(specs), state, FakeCommands())
    with caplog.at_level(logging.WARNING, logger="gateway.modbus"):
        await server.start()
    try:
        assert server.left_out == [("far", 400)]
        warnings = [r.getMessage() for r in caplog.records if "BACnet-only" in r.getMessage()]
        assert len(warnings) == 1
        assert "far (#400)" in warnings[0]
        port = server.tcp_port or 0
        lobby = await raw_request(port, struct.pack(">BHH", 4, 200, 1))
        assert lobby[:2] == b"\x04\x02"
    finally:
        await server.stop()
