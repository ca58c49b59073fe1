"""`unit_blocks` addressing: 100 sensors per unit id, sensor n on unit 1 + n // 100 at
(n % 100) x 200 + offset, served over Modbus TCP and RTU and read by pymodbus and mbpoll."""

from __future__ import annotations

import os
import struct
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers.broker import free_port
from helpers.daemon import Daemon, gateway_config, new_http_port
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from test_modbus_helpers import (
    GATEWAY_VALUES,
    HOST,
    FakeCommands,
    SocatPair,
    expected_image,
    make_state,
    mbpoll,
    mbpoll_rtu,
    mbpoll_tcp,
    modbus_config,
    sensor_report,
)
from test_modbus_rtu import RawMaster, read_request, wait_until
from test_modbus_tcp import raw_request

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.modbus import ModbusServer
from gateway.modbus.rtu_framing import with_crc
from gateway.pointdocs import render_modbus_csv
from gateway.settings import load_settings
from gateway.state import GatewayState, Report
from objects.catalog import Model
from objects.pointmap import ResolvedPoint, RuleSpec, SensorSpec, resolve

# Sensor 1 and 99 on unit 1 (the blocks layout), 4999 on unit 50 at 19800, 8000 on unit 81 at 0.
SPECS = tuple(
    SensorSpec(
        id=f"s{n}",
        name=f"S{n}",
        number=n,
        model=Model.VS121 if n % 2 else Model.VS121_P,
        region_count=4,
    )
    for n in (1, 99, 4999, 8000)
)
UNIT_OF = {1: (1, 200), 99: (1, 19800), 4999: (50, 19800), 8000: (81, 0)}


def points() -> list[ResolvedPoint]:
    return resolve(list(SPECS), bacnet_block=500)


def fed_state() -> GatewayState:
    state = make_state(SPECS)
    now = time.time()
    for i, spec in enumerate(SPECS):
        state.apply(Report(spec.id, sensor_report(spec, salt=i), now))
    state.publish_gateway(dict(GATEWAY_VALUES))
    return state


def block_words(state: GatewayState, number: int, count: int = 120) -> list[int]:
    """The first registers of sensor `number`'s block, as the blocks layout computes them."""
    registers, _ = expected_image(state, points(), "high_first")
    return [registers.get(number * 200 + a, 0) for a in range(count)]


@pytest_asyncio.fixture
async def tcp_server() -> AsyncIterator[tuple[ModbusServer, FakeCommands, GatewayState]]:
    state = fed_state()
    commands = FakeCommands()
    cfg = modbus_config(tcp_port=free_port(), addressing="unit_blocks")
    server = ModbusServer(cfg, points(), state, commands)
    await server.start()
    yield server, commands, state
    await server.stop()


@pytest.mark.asyncio
async def test_tcp_every_sensor_at_its_unit_and_address(
    tcp_server: tuple[ModbusServer, FakeCommands, GatewayState],
) -> None:
    server, commands, state = tcp_server
    port = server.tcp_port or 0
    client = AsyncModbusTcpClient(HOST, port=port, timeout=2, retries=0)
    assert await client.connect()
    try:
        for number, (unit, address) in UNIT_OF.items():
            got = await client.read_input_registers(address, count=120, device_id=unit)
            assert got.registers == block_words(state, number), number
        heartbeat = await client.read_holding_registers(0, count=1, device_id=1)
        assert heartbeat.registers == [GATEWAY_VALUES["heartbeat"]]
    finally:
        client.close()
    # Unit 2 holds no configured sensor, unit 0 is no unit: exception 0B.
    for unit in (2, 0, 82):
        assert await raw_request(port, struct.pack(">BHH", 3, 0, 1), unit=unit) == b"\x83\x0b"
    # The gateway's block is on unit 1 only; unit 50 has nothing at 0.
    assert await raw_request(port, struct.pack(">BHH", 3, 0, 1), unit=50) == b"\x83\x02"
    # A read may not run past the end of a unit (20000 addresses).
    assert await raw_request(port, struct.pack(">BHH", 3, 19990, 20), unit=50) == b"\x83\x02"
    # A write lands on the unit's sensor and echoes the address the master sent.
    reset = struct.pack(">BHH", 5, 19800 + 20, 0xFF00)
    assert await raw_request(port, reset, unit=50) == reset
    assert commands.resets == ["s4999"]


@pytest.mark.asyncio
async def test_mbpoll_reads_unit_50_over_tcp(
    tcp_server: tuple[ModbusServer, FakeCommands, GatewayState],
) -> None:
    server, _, state = tcp_server
    port = str(server.tcp_port or 0)
    polled = await mbpoll(
        *mbpoll_tcp(int(port)), "-a", "50", "-t", "3", "-r", "19800", "-c", "30", HOST
    )
    assert polled.returncode == 0, polled.output
    assert list(polled.values.values()) == block_words(state, 4999, 30)
    assert list(polled.values) == list(range(19800, 19830))
    first = await mbpoll(*mbpoll_tcp(int(port)), "-a", "1", "-t", "3", "-r", "200", "-c", "5", HOST)
    assert first.returncode == 0, first.output
    assert list(first.values.values()) == block_words(state, 1, 5)


@pytest.mark.asyncio
async def test_rtu_answers_its_units_and_nobody_else(tmp_path: Path) -> None:
    pair = SocatPair(tmp_path)
    pair.start()
    state = fed_state()
    cfg = modbus_config(rtu_port=str(pair.slave_path), addressing="unit_blocks")
    server = ModbusServer(cfg, points(), state, FakeCommands(), reopen_backoff=(0.05, 0.2))
    await server.start()
    try:
        await wait_until(lambda: server.rtu_port_open, "the slave to open its port")
        master = RawMaster(pair.master_path)
        try:
            for unit in (2, 0, 49, 247):  # no sensor there, broadcast, unknown: silence
                master.send(read_request(unit, 3, 0, 1))
            master.send(read_request(1, 4, 0, 1))
            assert await master.receive(7) == with_crc(
                bytes([1, 4, 2, 0, GATEWAY_VALUES["heartbeat"]])
            )
            assert master.pending == b""
        finally:
            master.close()
        client = AsyncModbusSerialClient(str(pair.master_path), baudrate=9600, timeout=1)
        assert await client.connect()
        try:
            got = await client.read_input_registers(19800, count=120, device_id=50)
            assert got.registers == block_words(state, 4999)
        finally:
            client.close()
        polled = await mbpoll(
            *mbpoll_rtu(unit=81), "-t", "3", "-r", "0", "-c", "10", str(pair.master_path)
        )
        assert polled.returncode == 0, polled.output
        assert list(polled.values.values()) == block_words(state, 8000, 10)
    finally:
        await server.stop()
        pair.stop()


# -- configuration and the published map --------------------------------------------------------

SENSOR = """
[[sensors]]
id = "s{n}"
name = "S{n}"
number = {n}
model = "vs121"
dev_eui = "24e124538c{n:06d}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_config_with_sensors_past_4193_and_their_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[bacnet]\ninstance_block = 500\n[modbus]\naddressing = "unit_blocks"\n' + "".join(
        SENSOR.format(n=n) for n in (1, 150, 4999, 8000)
    )
    path = write(tmp_path, text)
    assert len(load_settings(path).sensors) == 4
    assert main(["points", "--config", str(path), "--format", "modbus"]) == 0
    out = capsys.readouterr().out
    assert 'This map uses `modbus.addressing = "unit_blocks"`' in out
    assert "| gateway | 1 | input | 0 |" in out
    assert "| s1 | 1 | input | 200 | 328 |" in out
    assert "| s150 | 2 | input | 10000 | 10128 |" in out
    assert "| s4999 | 50 | input | 19800 | 19928 |" in out
    assert "| s8000 | 81 | input | 0 | 128 |" in out
    assert "## Not on Modbus" not in out
    assert main(["points", "--config", str(path), "--format", "modbus-csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("unit,address,plc_address,table")
    assert "81,4,300005,input,1,uint16" in "\n".join(rows)  # s8000 people count


def test_a_mode_that_does_not_exist_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, '[modbus]\naddressing = "unit_block"\n'))
    msg = str(err.value)
    assert "modbus.addressing = 'unit_block'" in msg
    assert "'unit_blocks'" in msg
    assert "'blocks'" in msg


def test_unit_ids_set_by_hand_are_refused_in_unit_blocks(tmp_path: Path) -> None:
    text = (
        '[modbus]\naddressing = "unit_blocks"\ngateway_unit_id = 200\n'
        "[modbus.rtu]\nunit_id = 5\n" + SENSOR.format(n=1)
    )
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    msg = str(err.value)
    assert 'modbus.gateway_unit_id = 200: not used with modbus.addressing = "unit_blocks"' in msg
    assert "modbus.rtu.unit_id = 5: not used" in msg


def test_blocks_mode_points_at_unit_blocks_for_sensors_it_cannot_reach(tmp_path: Path) -> None:
    text = "[bacnet]\ninstance_block = 500\n" + SENSOR.format(n=4999)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    msg = str(err.value)
    assert 'sensors[0].number: 4999 has no Modbus address with modbus.addressing = "blocks"' in msg
    assert 'set modbus.addressing = "unit_blocks" (1..24699' in msg
    assert msg.count("\n") == 0  # one line for the sensor, not one per point


GOLDEN = Path(__file__).parent / "data" / "modbus_map_unit_blocks.csv"


def test_the_unit_blocks_map_matches_its_golden_file() -> None:
    """Addresses of this mode never move either: regenerate only on purpose
    (VS121GW_UPDATE_GOLDEN=1) and review the diff."""
    cfg = modbus_config(tcp_port=5020, addressing="unit_blocks")
    text = render_modbus_csv(points(), "high_first", cfg)
    if os.environ.get("VS121GW_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_csv_and_ede_name_the_unit_and_the_address_a_request_carries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[bacnet]\ninstance_block = 500\n[modbus]\naddressing = "unit_blocks"\n' + "".join(
        SENSOR.format(n=n) for n in (1, 4999)
    )
    path = write(tmp_path, text)
    assert main(["points", "--config", str(path), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert ',AI 2499501,S4999 People Count,noUnits,1,no,"unit 50 input:19804,holding:19804",' in out
    assert ',AI 501,S1 People Count,noUnits,1,no,"unit 1 input:204,holding:204",' in out
    assert main(["points", "--config", str(path), "--format", "ede"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("s4999.people_count_all;"))
    assert row.endswith(";unit 50 19804")


def test_unit_1_is_the_blocks_layout_of_sensors_1_to_99_rules_included() -> None:
    low = [s for s in SPECS if s.number < 100]
    rules = [
        RuleSpec(id="crowd", name="Crowd", number=1),
        RuleSpec(id="hall", name="Hall", number=20),
    ]
    pts = resolve(low, rules=rules)
    blocks = render_modbus_csv(pts, "high_first", modbus_config(tcp_port=5020))
    units = render_modbus_csv(
        pts, "high_first", modbus_config(tcp_port=5020, addressing="unit_blocks")
    )
    unit_rows = units.splitlines()
    assert unit_rows[0] == "unit," + blocks.splitlines()[0]
    assert {row.split(",", 1)[0] for row in unit_rows[1:]} == {"1"}
    assert [row.split(",", 1)[1] for row in unit_rows] == blocks.splitlines()
    assert ",Hall Overcrowded," in blocks  # rule 20's points are there too


def test_the_commissioning_page_shows_the_unit_and_the_address_a_request_carries(
    tmp_path: Path,
) -> None:
    port = new_http_port()
    text = gateway_config(
        tmp_path / "state",
        mqtt_port=None,
        http_port=port,
        sensors=SENSOR.format(n=1234),
        extra='[modbus]\naddressing = "unit_blocks"\n',
    )
    daemon = Daemon(tmp_path, text, http_port=port)
    daemon.start()
    try:
        url = f"http://127.0.0.1:{port}/points?q=unit+13%3A+input+6804"
        with urllib.request.urlopen(url, timeout=10) as answer:
            page = answer.read().decode()
    finally:
        assert daemon.stop() == 0
    assert "S1234 People Count" in page
    assert "unit 13: input 6804 (306805)" in page
    assert "S1234 Online" not in page  # the search matched the people count only
