"""The alarm rules' points on the wire: a BMS overriding the relay over BACnet (the test client
in its own process), a PLC writing the threshold and the override over Modbus TCP (pymodbus's
client), both against the gateway's real servers, state and relay service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bacnet_peer.harness import Peer, PeerError, free_udp_port
from helpers.broker import free_port
from pymodbus.client import AsyncModbusTcpClient
from test_modbus_helpers import modbus_config
from test_relay_service import RecordingDriver

from gateway.bacnet import BacnetServer
from gateway.modbus import ModbusServer
from gateway.relay import RelayService
from gateway.settings import AlarmSection, BacnetSection
from gateway.state import GatewayState, Report
from objects.catalog import Model
from objects.pointmap import SensorSpec, resolve

pytestmark = pytest.mark.asyncio

LOBBY = SensorSpec(id="lobby", name="Lobby", number=1, model=Model.VS121, region_count=2)
RULE = AlarmSection.model_validate(
    {"id": "lobby-crowd", "name": "Lobby Crowd", "number": 2, "sensors": ["lobby"], "threshold": 10}
)
# Rule 2: BACnet instances 510.., Modbus 105.. (see objects.catalog).
RELAY = "binary-output,510"
ALARM = "binary-input,510"
THRESHOLD = "analog-value,510"
OVERRIDE = "analog-value,511"
STATUS_REG, THRESHOLD_REG, OVERRIDE_REG = 105, 106, 107
ALARM_BIT, RELAY_COIL = 105, 106


class Commands:
    """What the daemon's Gateway does for the sinks: delegate to the relay service."""

    def __init__(self, relay: RelayService) -> None:
        self.relay = relay

    async def reset_counts(self, sensor_id: str) -> str:
        raise KeyError(sensor_id)

    async def set_alarm_threshold(self, rule_id: str, threshold: float) -> str:
        return await self.relay.set_alarm_threshold(rule_id, threshold)

    async def command_relay(self, rule_id: str, priority: int, value: bool | None) -> str:
        return await self.relay.command_relay(rule_id, priority, value)


class Site:
    def __init__(self, state_dir: Path) -> None:
        self.state = GatewayState([(LOBBY, 600.0, 60.0)])
        self.driver = RecordingDriver()
        self.relay = RelayService(
            [RULE], self.state, state_dir=state_dir, drivers=lambda cfg: self.driver
        )
        points = resolve([LOBBY], rules=[RULE.spec()])
        commands = Commands(self.relay)
        self.bacnet = BacnetServer(
            BacnetSection(port=free_udp_port(), device_instance=121500),
            points,
            self.state,
            commands,
            state_dir=state_dir,
            version="1.0.0",
        )
        self.modbus = ModbusServer(
            modbus_config(tcp_port=free_port()), points, self.state, commands
        )

    async def start(self) -> None:
        await self.relay.start()
        await self.bacnet.start()
        await self.modbus.start()

    async def stop(self) -> None:
        await self.modbus.stop()
        await self.bacnet.stop()
        await self.relay.stop()

    def report(self, count: int) -> None:
        self.state.apply(Report("lobby", {"people_count_all": count}, received_at=_now()))

    def command_priority(self) -> int | None:
        """The BACnet object's Current_Command_Priority (the test client cannot decode it)."""
        obj = self.bacnet.object_for("", "rule_2_relay")
        assert obj is not None
        return obj.command_priority()

    def priorities(self) -> list[float | None]:
        obj = self.bacnet.object_for("", "rule_2_relay")
        assert obj is not None
        assert obj.priorities is not None
        return list(obj.priorities)

    async def energised(self) -> bool:
        assert await self.relay.rules["lobby-crowd"].worker.settled(5.0)
        return self.driver.levels[-1]


def _now() -> float:
    import time

    return time.time()


@pytest_asyncio.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path)
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def plc(site: Site) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=site.modbus.tcp_port or 0, timeout=2, retries=0)
    assert await c.connect()
    yield c
    c.close()


# -- BACnet ----------------------------------------------------------------------------------------


async def read(client: Peer, site: Site, obj: str, prop: str, index: int | None = None) -> Any:
    addr = site.bacnet.address
    return (await client.call("read", address=addr, object=obj, property=prop, index=index))[
        "value"
    ]


async def write(client: Peer, site: Site, obj: str, value: Any, kind: str, **kw: Any) -> Any:
    return await client.call(
        "write",
        address=site.bacnet.address,
        object=obj,
        property="presentValue",
        value=value,
        type=kind,
        **kw,
    )


async def test_bms_override_at_8_and_relinquish(site: Site, client: Peer) -> None:
    site.report(15)
    assert await read(client, site, ALARM, "presentValue") == "active"
    assert await read(client, site, RELAY, "presentValue") == "active"
    assert site.command_priority() == 16
    assert len(await read(client, site, RELAY, "priorityArray")) == 16
    assert await read(client, site, RELAY, "relinquishDefault") == "inactive"
    assert await read(client, site, RELAY, "objectName") == "Lobby Crowd Relay"
    assert await site.energised() is False  # contact open: overcrowded

    await client.call("subscribe", address=site.bacnet.address, object=RELAY, process=3)
    await client.next_event(lambda e: e.get("event") == "cov")  # the initial notification

    await write(client, site, RELAY, 0, "enumerated", priority=8)
    assert await read(client, site, RELAY, "presentValue") == "inactive"
    assert site.command_priority() == 8
    assert site.priorities()[7] == 0.0
    assert site.priorities()[15] == 1.0
    assert await read(client, site, ALARM, "presentValue") == "active"  # still overcrowded
    assert await read(client, site, OVERRIDE, "presentValue") == 1.0
    assert await site.energised() is True
    cov = await client.next_event(lambda e: e.get("event") == "cov")
    assert cov["values"]["presentValue"] == "inactive"

    await write(client, site, RELAY, None, "null", priority=8)  # relinquish
    assert await read(client, site, RELAY, "presentValue") == "active"
    assert site.command_priority() == 16
    assert await read(client, site, OVERRIDE, "presentValue") == 0.0
    assert await site.energised() is False

    # Level 16 is the alarm's own command; 6 is reserved for minimum on/off time.
    for priority in (16, 6):
        with pytest.raises(PeerError) as err:
            await write(client, site, RELAY, 1, "enumerated", priority=priority)
        assert err.value.code == "write-access-denied"
    with pytest.raises(PeerError) as err:
        await write(client, site, RELAY, 1, "enumerated")  # no priority means 16
    assert err.value.code == "write-access-denied"


async def test_bms_threshold_and_override_values(site: Site, client: Peer) -> None:
    site.report(15)
    assert await read(client, site, THRESHOLD, "presentValue") == 10.0
    await write(client, site, THRESHOLD, 20.0, "real")
    assert await read(client, site, ALARM, "presentValue") == "inactive"
    assert await read(client, site, THRESHOLD, "presentValue") == 20.0
    for bad in (-1.0, 65536.0):
        with pytest.raises(PeerError) as err:
            await write(client, site, THRESHOLD, bad, "real")
        assert err.value.code == "value-out-of-range"
    with pytest.raises(PeerError) as err:
        await write(client, site, OVERRIDE, 1.5, "real")
    assert err.value.code == "value-out-of-range"
    await write(client, site, OVERRIDE, 2.0, "real")  # the same as BO priority 8 active
    assert await read(client, site, RELAY, "presentValue") == "active"
    assert site.command_priority() == 8
    assert site.relay.snapshot()["lobby-crowd"]["level"] == 8


# -- Modbus ----------------------------------------------------------------------------------------


async def test_plc_writes_the_threshold(site: Site, plc: AsyncModbusTcpClient) -> None:
    site.report(15)
    assert (await plc.read_discrete_inputs(ALARM_BIT, count=1)).bits[0] is True
    regs = await plc.read_holding_registers(STATUS_REG, count=3)
    assert regs.registers == [0b00011, 10, 0]  # alarm, relay active; threshold 10; automatic
    assert not (await plc.write_register(THRESHOLD_REG, 16)).isError()
    assert (await plc.read_discrete_inputs(ALARM_BIT, count=1)).bits[0] is False
    assert (await plc.read_input_registers(THRESHOLD_REG, count=1)).registers == [16]
    assert site.relay.snapshot()["lobby-crowd"]["threshold"] == 16
    assert await site.energised() is True
    # The whole rule block reads in one request; its spare addresses read 0.
    block = await plc.read_holding_registers(STATUS_REG, count=5)
    assert block.registers == [0b00100, 16, 0, 0, 0]  # contact closed


async def test_plc_override_register_and_coil(site: Site, plc: AsyncModbusTcpClient) -> None:
    site.report(15)
    assert (await plc.read_coils(RELAY_COIL, count=1)).bits[0] is True
    assert not (await plc.write_register(OVERRIDE_REG, 1)).isError()  # force inactive
    assert (await plc.read_coils(RELAY_COIL, count=1)).bits[0] is False
    status = (await plc.read_holding_registers(STATUS_REG, count=1)).registers[0]
    assert status == 0b01101  # alarm, contact closed, overridden
    result = await plc.write_register(OVERRIDE_REG, 3)
    assert result.isError()
    assert result.exception_code == 3
    assert not (await plc.write_register(OVERRIDE_REG, 0)).isError()  # back to automatic
    assert (await plc.read_coils(RELAY_COIL, count=1)).bits[0] is True
    assert not (await plc.write_coil(RELAY_COIL, False)).isError()  # coil: override at 8
    assert (await plc.read_holding_registers(OVERRIDE_REG, count=1)).registers == [1]
    assert site.relay.snapshot()["lobby-crowd"]["relay"] is False
    result = await plc.write_register(THRESHOLD_REG - 1, 5)  # the status word is read-only
    assert result.isError()
    assert result.exception_code == 2
