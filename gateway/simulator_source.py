"""The demo source: simulated sensors feeding the real pipeline, no broker or hardware needed.

VS121 sensors are delivered as ChirpStack v4 uplink JSON (frame counter, base64 payload) and
VS121-P sensors as chapter-8 JSON, through the same `Ingest` the real sources use.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Callable

from gateway.downlink_events import Event
from gateway.ingest import Ingest
from gateway.settings import SensorSection, Settings
from gateway.simulate import SimulatedSpace
from gateway.state import GatewayState
from gateway.store import Committer

log = logging.getLogger("gateway.simulator")

SIM_SOURCE = "simulator"


def chirpstack_uplink(
    dev_eui: str, fcnt: int, payload: bytes, *, app: str = "demo", run: str = "0"
) -> bytes:
    """A ChirpStack v4 `event/up` body for `payload`; `run` keeps dedup ids unique per run."""
    return json.dumps(
        {
            "deduplicationId": f"sim-{run}-{dev_eui}-{fcnt}",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "deviceInfo": {"applicationId": app, "devEui": dev_eui, "deviceName": "sim"},
            "fCnt": fcnt,
            "fPort": 85,
            "data": base64.b64encode(payload).decode(),
        }
    ).encode()


class SimulatorSource:
    def __init__(
        self, settings: Settings, ingest: Ingest, committer: Committer, state: GatewayState
    ) -> None:
        self._settings = settings
        self._state = state
        self._ingest = ingest
        self._committer = committer
        self._spaces = {
            s.id: SimulatedSpace(regions=max(1, s.region_count), seed=s.number)
            for s in settings.sensors
        }
        self._fcnt = dict.fromkeys(self._spaces, 0)
        self._run = secrets.token_hex(4)
        # The demo's network server: downlinks waiting for the sensor's next uplink, and where
        # its events go (see `deliver`).
        self._downlinks: dict[str, list[bytes]] = {}
        self.on_event: Callable[[Event], None] | None = None

    def deliver(self, sensor_id: str, payload: bytes) -> None:
        """Take a downlink as a network server would: at the sensor's next uplink it is sent
        and acknowledged, and the simulated sensor echoes the setting in that uplink, as the
        VS121 does."""
        self._downlinks.setdefault(sensor_id, []).append(payload)

    def _describe(self, sensor: SensorSection) -> None:
        v = self._state.current(sensor.id)
        occupied = [str(n) for n in range(1, 17) if v.get(f"region_{n}") == 1]
        log.info(
            "demo %s: %s people, regions occupied: %s, total in %s / out %s",
            sensor.id,
            v.get("people_count_all", "?"),
            ",".join(occupied) or "none",
            v.get("gateway_total_in", "?"),
            v.get("gateway_total_out", "?"),
        )

    def step(self) -> None:
        now = time.time()
        period = self._settings.simulate.period
        for sensor in self._settings.sensors:
            space = self._spaces[sensor.id]
            space.step()
            if sensor.model == "vs121":
                self._lorawan(sensor, space, now)
            else:
                serial = sensor.serial or ""
                for report in (
                    space.report_region_counting(serial, now, int(period)),
                    space.report_line_crossing(serial, now, int(period)),
                    space.report_dwell(serial, now, int(period)),
                ):
                    self._ingest.vs121p(SIM_SOURCE, json.dumps(report).encode(), received_at=now)
            self._describe(sensor)

    def _lorawan(self, sensor: SensorSection, space: SimulatedSpace, now: float) -> None:
        eui = sensor.dev_eui or ""
        topic = f"application/demo/device/{eui}/event/up"
        echoes = b""
        for downlink in self._downlinks.pop(sensor.id, []):
            if self.on_event is not None:
                self.on_event(Event("sent", SIM_SOURCE, dev_eui=eui))
                self.on_event(Event("ack", SIM_SOURCE, dev_eui=eui))
            echoes += downlink
        for payload in (
            space.uplink_occupancy(int(now)) + space.uplink_line() + echoes,
            space.uplink_counting(),
        ):
            self._fcnt[sensor.id] += 1
            body = chirpstack_uplink(eui, self._fcnt[sensor.id], payload, run=self._run)
            self._ingest.uplink(SIM_SOURCE, "chirpstack", topic, body, received_at=now)

    async def run(self) -> None:
        while True:
            self.step()
            self._committer.request_flush()
            await asyncio.sleep(self._settings.simulate.period)
