"""A gateway BACnet server under test: real state, real server, fake commands, test clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bacnet_peer.harness import free_udp_port
from gateway.bacnet import BacnetServer
from gateway.settings import BacnetSection
from gateway.state import GatewayState, Report
from objects.catalog import Model
from objects.pointmap import ResolvedPoint, RuleSpec, SensorSpec, resolve

DEVICE_INSTANCE = 121000
STALE_AFTER_S = 30.0

SENSORS = (
    SensorSpec(id="lobby", name="Lobby", number=1, model=Model.VS121, region_count=4),
    SensorSpec(id="meeting", name="Meeting", number=2, model=Model.VS121_P, region_count=2),
)


@dataclass
class FakeCommands:
    """Records what BACnet writes asked for; `fail_with` makes the next command raise."""

    resets: list[str] = field(default_factory=list)
    fail_with: BaseException | None = None

    async def reset_counts(self, sensor_id: str) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.resets.append(sensor_id)
        return "totals reset"


class Rig:
    """One BACnet server on its own UDP port, fed by a GatewayState with a settable clock."""

    def __init__(
        self,
        state_dir: Path,
        *,
        sensors: tuple[SensorSpec, ...] = SENSORS,
        rules: tuple[RuleSpec, ...] = (),
        port: int | None = None,
        **bacnet: Any,
    ) -> None:
        self.now = time.time()
        self.sensors = sensors
        self.state_dir = state_dir
        self.port = port or free_udp_port()
        self.cfg = BacnetSection(port=self.port, device_instance=DEVICE_INSTANCE, **bacnet)
        self.state = GatewayState(
            [(s, STALE_AFTER_S, 10.0) for s in sensors], clock=lambda: self.now
        )
        self.points: list[ResolvedPoint] = resolve(
            list(sensors), rules=rules, bacnet_block=self.cfg.instance_block
        )
        self.commands = FakeCommands()
        self.fd_changes: asyncio.Queue[bool] = asyncio.Queue()
        self.server = self._server()

    def _server(self) -> BacnetServer:
        return BacnetServer(
            self.cfg,
            self.points,
            self.state,
            self.commands,
            state_dir=self.state_dir,
            version="1.2.3",
            on_fd_change=self.fd_changes.put_nowait,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def device(self) -> str:
        return f"device,{DEVICE_INSTANCE}"

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def restart(self) -> None:
        """A new server process in all but name: fresh objects, same state dir and port."""
        await self.server.stop()
        self.server = self._server()
        await self.server.start()

    async def fd_change(self, within: float) -> bool:
        """The next foreign-device registration transition."""
        return await asyncio.wait_for(self.fd_changes.get(), within)

    def report(self, sensor_id: str, data: Mapping[str, Any]) -> None:
        self.state.apply(Report(sensor_id, dict(data), received_at=self.now))

    def advance(self, seconds: float) -> None:
        """Move the clock and let the state re-evaluate freshness (as the daemon's tick does)."""
        self.now += seconds
        self.state.tick()

    def publish(self, values: Mapping[str, Any]) -> None:
        """Gateway-level values (the alarm rules' points), as the relay service publishes."""
        self.state.publish_gateway(dict(values))

    def object_id(self, sensor_id: str, key: str) -> str:
        for p in self.points:
            if p.sensor_id == sensor_id and p.key == key:
                obj = self.server.object_for(sensor_id, key)
                assert obj is not None
                return f"{obj.profile.bacnet_type},{p.instance}"
        raise KeyError((sensor_id, key))
