"""Allow-lists: BACnet writes and device management only from listed BMS stations, Modbus TCP
connections only from listed client networks. Refused peers are counted and logged once.

Real clients on loopback: 127.0.0.0/8 is all loopback, so a client bound to 127.0.0.2 is a
different station from one on 127.0.0.1, with no network namespace needed.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from bacnet_peer.harness import Peer, PeerError
from bacnet_peer.rig import Rig
from helpers.broker import free_port
from pydantic import ValidationError
from test_modbus_helpers import (
    FakeCommands,
    all_points,
    feed,
    make_state,
    mbpoll,
    mbpoll_tcp,
    modbus_config,
)

from gateway.modbus import ModbusServer
from gateway.settings import BacnetSection, ModbusTcpSection

OUTSIDER = "127.0.0.2"


@pytest_asyncio.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path, allow_writes_from=["127.0.0.1/32"])
    await rig.start()
    yield rig
    await rig.stop()


async def _peer(host: str) -> Peer:
    return await Peer.start("client.py", None, "--address", f"{host}/8", host=host)


@pytest.mark.asyncio
async def test_bacnet_writes_only_from_the_allowed_station(
    guarded: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    reset = guarded.object_id("lobby", "reset_counts")
    write = {
        "address": guarded.address,
        "object": reset,
        "property": "presentValue",
        "value": 1,
        "type": "enumerated",
    }
    bms = await _peer("127.0.0.1")
    outsider = await _peer(OUTSIDER)
    try:
        await bms.call("write", **write)
        assert guarded.commands.resets == ["lobby"]
        with caplog.at_level(logging.WARNING, logger="gateway.access"):
            for _ in range(3):
                with pytest.raises(PeerError) as err:
                    await outsider.call("write", **write)
                assert (err.value.error_class, err.value.code) == (
                    "property",
                    "write-access-denied",
                )
            for op, extra in (("dcc", {"state": "disable"}), ("reinit", {"state": "warmstart"})):
                with pytest.raises(PeerError) as err:
                    await outsider.call(op, address=guarded.address, **extra)
                assert (err.value.error_class, err.value.code) == (
                    "services",
                    "service-request-denied",
                )
        assert guarded.commands.resets == ["lobby"]
        assert guarded.server.communication == "enable"
        # Reads stay open to every station.
        answer = await outsider.call(
            "read", address=guarded.address, object=reset, property="presentValue"
        )
        assert answer["value"] == "inactive"
        refusals = [r for r in caplog.records if OUTSIDER in r.getMessage()]
        assert len(refusals) == 1
    finally:
        await bms.stop()
        await outsider.stop()


def test_allow_lists_are_validated_naming_the_key() -> None:
    with pytest.raises(ValidationError, match=r"bacnet.allow_writes_from: 'bms' is not an IP"):
        BacnetSection(allow_writes_from=["bms"])
    with pytest.raises(ValidationError, match=r"modbus.tcp.allow_from: '10.0.0.0/33'"):
        ModbusTcpSection(allow_from=["10.0.0.0/33"])
    assert ModbusTcpSection(allow_from=["10.1.2.0/24", "192.168.1.7"]).allow_from


async def _modbus_read_from(source: str, port: int) -> bytes:
    """Read holding register 0 from `source`; b"" when the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(struct.pack(">HHHB", 1, 0, 6, 1) + bytes.fromhex("0300000001"))
        return await asyncio.wait_for(reader.read(64), 5)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_modbus_tcp_only_from_allowed_networks(caplog: pytest.LogCaptureFixture) -> None:
    state = make_state()
    feed(state)
    cfg = modbus_config(tcp_port=free_port())
    cfg = cfg.model_copy(
        update={"tcp": cfg.tcp.model_copy(update={"allow_from": ["127.0.0.1/32"]})}
    )
    refused: list[int] = []
    server = ModbusServer(
        cfg, all_points(), state, FakeCommands(), on_refused=lambda: refused.append(1)
    )
    await server.start()
    port = server.tcp_port
    assert port is not None
    try:
        # An independent master from the allowed address is answered.
        result = await mbpoll(*mbpoll_tcp(port), "-t", "4", "-r", "1", "127.0.0.1")
        assert result.returncode == 0, result.output
        assert len(await _modbus_read_from("127.0.0.1", port)) > 7
        with caplog.at_level(logging.WARNING, logger="gateway.access"):
            for _ in range(3):
                assert await _modbus_read_from(OUTSIDER, port) == b""
        assert len(refused) == 3
        assert len([r for r in caplog.records if OUTSIDER in r.getMessage()]) == 1
    finally:
        await server.stop()
