"""The published register map: a golden snapshot, and proof that it describes what is served.

The golden files under tests/data/ change only on purpose: a diff here is a change to the
contract with every PLC program. Regenerate them with
``VS121GW_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_modbus_map.py`` and review the diff.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers.broker import free_port
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU
from test_modbus_helpers import HOST, FakeCommands, modbus_config, sensor_report

from gateway.modbus import ModbusServer
from gateway.pointdocs import modbus_block_rows, render_modbus_csv, render_modbus_markdown
from gateway.settings import Settings
from gateway.state import GatewayState, Report
from objects.pointmap import ResolvedPoint, resolve

DATA = Path(__file__).parent / "data"
UPDATE = os.environ.get("VS121GW_UPDATE_GOLDEN") == "1"
NOW = 1_763_700_000.0

SAMPLE: dict[str, object] = {
    "modbus": {"word_order": "high_first"},
    "sensors": [
        {
            "id": "lobby",
            "name": "Lobby",
            "number": 1,
            "model": "vs121",
            "dev_eui": "24e124538c000001",
            "region_count": 4,
        },
        {
            "id": "meeting",
            "name": "Meeting Room",
            "number": 3,
            "model": "vs121-p",
            "serial": "369362028335",
            "region_count": 2,
            "exclude_points": ["a_to_a", "region_{n}_dwell_time_max"],
        },
        {
            "id": "hall",
            "name": "Hall",
            "number": 12,
            "model": "vs121",
            "dev_eui": "24e124538c00000c",
        },
    ],
}


def sample_settings(word_order: str = "high_first") -> Settings:
    return Settings.model_validate({**SAMPLE, "modbus": {"word_order": word_order}})


def sample_points() -> list[ResolvedPoint]:
    return resolve(sample_settings().sensor_specs())


@pytest.mark.parametrize(
    ("name", "render"),
    [("modbus_map.md", render_modbus_markdown), ("modbus_map.csv", render_modbus_csv)],
)
def test_map_matches_the_golden_file(name: str, render: object) -> None:
    assert callable(render)
    text = render(sample_points(), "high_first")
    golden = DATA / name
    if UPDATE:
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden} missing: regenerate with VS121GW_UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), (
        f"the register map changed; if on purpose, regenerate {golden.name} "
        "with VS121GW_UPDATE_GOLDEN=1 and review the diff"
    )


def test_map_documents_the_rules_a_plc_programmer_needs() -> None:
    text = render_modbus_markdown(sample_points(), "low_first")
    assert "the low word first" in text
    assert "reads 0" in text
    assert "02 any address outside the blocks" in text
    assert "| hall | input | 2400 | 2528 | 302401 | 302529 |" in text


# -- the map against the running server --------------------------------------------------------


@pytest_asyncio.fixture(params=["high_first", "low_first"])
async def served(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[AsyncModbusTcpClient, GatewayState, str]]:
    word_order: str = request.param
    settings = sample_settings(word_order)
    specs = settings.sensor_specs()
    state = GatewayState([(s, 600.0, 60.0) for s in specs], clock=lambda: NOW)
    for i, spec in enumerate(specs):
        state.apply(Report(spec.id, sensor_report(spec, salt=i + 1), NOW - 30 * i))
    state.publish_gateway(
        {"heartbeat": 9, "uptime": 123_456, "version": 100, "sensors_configured": 3}
    )
    state.tick(NOW)
    server = ModbusServer(
        modbus_config(tcp_port=free_port(), word_order=word_order),
        resolve(specs),
        state,
        FakeCommands(),
    )
    await server.start()
    client = AsyncModbusTcpClient(HOST, port=server.tcp_port or 0, timeout=2, retries=0)
    assert await client.connect()
    yield client, state, word_order
    client.close()
    await server.stop()


async def _read(client: AsyncModbusTcpClient, table: str, address: int, count: int) -> ModbusPDU:
    reader = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "input": client.read_input_registers,
        "holding": client.read_holding_registers,
    }[table]
    return await reader(address, count=count)


@pytest.mark.asyncio
async def test_every_documented_row_is_served_as_documented(
    served: tuple[AsyncModbusTcpClient, GatewayState, str],
) -> None:
    """Decode each point the way the map tells a PLC programmer to, and get the state's value."""
    client, state, word_order = served
    points = sample_points()
    rows = list(csv.DictReader(io.StringIO(render_modbus_csv(points, word_order))))
    by_name = {p.name: p for p in points}
    assert len(rows) > 250
    for row in rows:
        rp = by_name[row["name"]]
        values = state.gateway_values if rp.sensor_id == "" else state.current(rp.sensor_id)
        want = values.get(rp.key, 0)
        address, width, table = int(row["address"]), int(row["width"]), row["table"]
        assert int(row["plc_address"][1:]) == address + 1
        result = await _read(client, table, address, width)
        assert not result.isError(), row
        if row["type"] == "bit":
            assert result.bits[0] == bool(want), row
            continue
        words = list(result.registers)
        if width == 2 and row["word_order"] == "low_first":
            words.reverse()
        raw = int.from_bytes(b"".join(w.to_bytes(2, "big") for w in words), "big")
        if row["type"].startswith("int") and raw >= 1 << (16 * width - 1):
            raw -= 1 << (16 * width)
        assert raw == round(want * int(row["scale"])), row


@pytest.mark.asyncio
async def test_documented_blocks_are_exactly_what_answers(
    served: tuple[AsyncModbusTcpClient, GatewayState, str],
) -> None:
    client, _, _ = served
    blocks = modbus_block_rows(sample_points())[1:]
    covered = {
        (t, a)
        for t, first, last in ((b[1], int(b[2]), int(b[3])) for b in blocks)
        for a in range(first, last + 1)
    }
    for _, table, first_s, last_s, _, _ in blocks:
        first, last = int(first_s), int(last_s)
        for start in range(first, last + 1, 125):  # a request reads at most 125 registers
            part = await _read(client, table, start, min(125, last + 1 - start))
            assert not part.isError(), (table, start, last)
        for outside in (first - 1, last + 1):
            if outside < 0 or (table, outside) in covered:
                continue
            result = await _read(client, table, outside, 1)
            assert result.isError(), (table, outside)
            assert result.exception_code == 2
