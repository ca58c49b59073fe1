"""The overcrowding relay end to end: the real daemon in its own process, uplinks through a real
mosquitto, a relay module (pymodbus's Modbus TCP server, in this process) that the daemon drives
as a Modbus master, a BMS on BACnet (the test client) and a PLC on Modbus TCP (pymodbus's client).

Every wait is on observable state (the module's coil, the daemon's HTTP status), with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bacnet_peer.harness import Peer, free_udp_port
from helpers.broker import MosquittoBroker, free_port
from helpers.daemon import CHIRPSTACK_SUBSCRIPTION, Daemon, gateway_config, new_http_port
from helpers.publisher import ChirpStackUplinks
from helpers.wait import async_wait_until
from pymodbus.client import AsyncModbusTcpClient
from test_relay_drivers import RelayModule

pytestmark = pytest.mark.asyncio

HALL = "24e124538c000001"
WITHIN_S = 20.0
COIL = 4
THRESHOLD_REG = 101  # rule 1: status 100, threshold 101, override 102 (see objects.catalog)
RELAY = "binary-output,500"


SITE = f"""
[[sensors]]
id = "hall"
name = "Hall"
number = 1
model = "vs121"
dev_eui = "{HALL}"
region_count = 2
report_interval = 60

[[alarms]]
id = "hall-crowd"
name = "Hall Crowd"
number = 1
sensors = ["hall"]
threshold = 5
hysteresis = 1
on_stale = "hold"
on_shutdown = "open"

[alarms.output]
type = "modbus"
transport = "tcp"
host = "127.0.0.1"
unit_id = 1
coil = {COIL}
timeout = 0.5
retry_seconds = 0.2
reassert_seconds = 0
"""


def config(state_dir: Path, *, mqtt_port: int, http_port: int, module_port: int) -> str:
    site = SITE + f"tcp_port = {module_port}\n"
    return gateway_config(
        state_dir,
        mqtt_port=mqtt_port,
        http_port=http_port,
        subscriptions=CHIRPSTACK_SUBSCRIPTION,
        sensors=site,
    )


class Uplinks(ChirpStackUplinks):
    """The hall sensor's uplinks, carrying a people count decoded by the network server."""

    def count(self, people: int) -> None:
        self.send(HALL, obj={"people_count_all": people})


class Rig:
    def __init__(self, tmp_path: Path, broker: MosquittoBroker) -> None:
        self.http_port = new_http_port()
        self.module_port = free_port()
        self.bacnet_port = free_udp_port()
        self.modbus_port = free_port()
        text = config(
            tmp_path / "state",
            mqtt_port=broker.port,
            http_port=self.http_port,
            module_port=self.module_port,
        )
        self.daemon = Daemon(tmp_path, text, http_port=self.http_port)
        self.module = RelayModule(unit=1)
        self.env: dict[str, str] = {}

    def with_bms_and_plc(self) -> None:
        """Turn on BACnet and Modbus TCP (environment overrides, as an installer would)."""
        self.env = {
            "VS121GW_BACNET__ENABLED": "true",
            "VS121GW_BACNET__PORT": str(self.bacnet_port),
            "VS121GW_MODBUS__TCP__ENABLED": "true",
            "VS121GW_MODBUS__TCP__PORT": str(self.modbus_port),
        }

    async def start(self) -> None:
        await asyncio.to_thread(self.daemon.start, 30.0, self.env)
        # Subscribed, so the uplinks published from now on reach it.
        await asyncio.to_thread(self.daemon.wait_mqtt, WITHIN_S)

    async def stop(self) -> None:
        assert await asyncio.to_thread(self.daemon.stop) == 0

    def gateway(self) -> dict[str, Any]:
        values: dict[str, Any] = self.daemon.status()["gateway"]
        return values

    async def until(self, what: str, check: Callable[[], Awaitable[bool]]) -> None:
        """Wait, with a deadline, until `check` holds (another process's HTTP API and a
        module's coil: nothing to await but time)."""
        await async_wait_until(check, WITHIN_S, what, detail=self.daemon.log_tail)

    async def coil_is(self, level: bool) -> None:
        async def check() -> bool:
            return await self.module.coil(COIL) is level

        await self.until(f"coil {level}", check)

    async def gateway_value(self, key: str, value: float) -> None:
        async def check() -> bool:
            try:
                return await asyncio.to_thread(lambda: self.gateway().get(key)) == value
            except OSError:
                return False

        await self.until(f"{key} == {value}", check)


@pytest.fixture
def uplinks(mqtt_broker: MosquittoBroker) -> Iterator[Uplinks]:
    pub = Uplinks(mqtt_broker.port, "relay-e2e-publisher")
    yield pub
    pub.close()


@pytest_asyncio.fixture
async def rig(tmp_path: Path, mqtt_broker: MosquittoBroker) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, mqtt_broker)
    await r.module.serve_tcp(r.module_port)
    yield r
    if r.daemon.running():
        await r.stop()
    await r.module.stop()


async def test_uplinks_switch_the_relay_module_and_shutdown_opens_it(
    rig: Rig, uplinks: Uplinks
) -> None:
    await rig.start()
    # No data yet (on_stale = hold): normal, contact closed, so the coil is energised.
    await rig.coil_is(True)
    uplinks.count(3)
    await rig.gateway_value("rule_1_status", 0b00100)  # fresh data, contact closed
    uplinks.count(6)  # over the threshold of 5
    await rig.gateway_value("rule_1_alarm", 1)
    await rig.coil_is(False)  # contact open, as the VS121-P's DO
    uplinks.count(5)  # within the hysteresis band (clears at 4)
    await asyncio.to_thread(
        rig.daemon.wait_until, lambda: rig.daemon.values("hall")["people_count_all"] == 5
    )
    assert rig.gateway()["rule_1_alarm"] == 1
    uplinks.count(4)
    await rig.gateway_value("rule_1_alarm", 0)
    await rig.coil_is(True)
    assert rig.daemon.metric("vs121gw_alarm_active", rule="hall-crowd") == 0

    await rig.stop()
    await rig.coil_is(False)  # on_shutdown = open
    assert "left de-energised" in rig.daemon.log_text()

    # Started again, the output is driven to what the rule says (normal: energised) at once.
    await rig.start()
    await rig.coil_is(True)


async def test_module_outage_is_counted_and_the_rest_keeps_working(
    rig: Rig, uplinks: Uplinks
) -> None:
    await rig.start()
    await rig.coil_is(True)
    await rig.module.stop()
    uplinks.count(9)
    await rig.gateway_value("rule_1_alarm", 1)

    async def failing() -> bool:
        errors = await asyncio.to_thread(
            rig.daemon.metric, "vs121gw_relay_output_errors_total", rule="hall-crowd"
        )
        return errors >= 2

    await rig.until("output errors counted", failing)
    assert rig.gateway()["rule_1_status"] & 0x20  # output fault
    assert rig.daemon.metric("vs121gw_relay_output_fault", rule="hall-crowd") == 1
    uplinks.count(10)  # ingestion goes on
    await asyncio.to_thread(
        rig.daemon.wait_until, lambda: rig.daemon.values("hall")["people_count_all"] == 10
    )
    rig.module = RelayModule(unit=1)  # the module is back
    await rig.module.serve_tcp(rig.module_port)
    await rig.coil_is(False)
    await rig.gateway_value("rule_1_status", 0b00011)
    assert rig.daemon.log_text().count("cannot drive") == 1


async def test_bms_override_and_plc_threshold_survive_a_restart(rig: Rig, uplinks: Uplinks) -> None:
    rig.with_bms_and_plc()
    await rig.start()
    uplinks.count(2)
    await rig.gateway_value("rule_1_status", 0b00100)
    await rig.coil_is(True)

    bms = await Peer.start("client.py")
    plc = AsyncModbusTcpClient("127.0.0.1", port=rig.modbus_port, timeout=2, retries=0)
    try:
        bacnet = f"127.0.0.1:{rig.bacnet_port}"
        await bms.call(
            "write",
            address=bacnet,
            object=RELAY,
            property="presentValue",
            value=1,
            type="enumerated",
            priority=8,
        )
        await rig.coil_is(False)  # forced active: contact open, though the hall is nearly empty
        assert rig.gateway()["rule_1_override"] == 2

        assert await plc.connect()
        assert not (await plc.write_register(THRESHOLD_REG, 1)).isError()
        await rig.gateway_value("rule_1_alarm", 1)  # 2 people > 1
        plc.close()

        await rig.stop()
        await rig.coil_is(False)  # shutdown state (open)
        rig.module.writes.clear()
        await rig.start()
        await rig.gateway_value("rule_1_threshold", 1)
        assert rig.gateway()["rule_1_override"] == 2
        await rig.coil_is(False)
        assert rig.module.writes[0] == (COIL, False)  # written at start-up, not left as it was

        answer = await bms.call("read", address=bacnet, object=RELAY, property="presentValue")
        assert answer["value"] == "active"
        await bms.call(
            "write",
            address=bacnet,
            object=RELAY,
            property="presentValue",
            value=None,
            type="null",
            priority=8,
        )
        await rig.gateway_value("rule_1_override", 0)
        assert rig.gateway()["rule_1_alarm"] == 1  # automatic again: still over 1
        uplinks.count(0)
        await rig.gateway_value("rule_1_alarm", 0)
        await rig.coil_is(True)
    finally:
        plc.close()
        await bms.stop()
