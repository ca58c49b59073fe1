"""The loopback demo: simulated sensors decoded by the real codecs, one line per report."""

from __future__ import annotations

import json
import signal
import threading
import time
from types import FrameType
from typing import TextIO

from gateway.codec.vs121_uplink import decode_uplink
from gateway.codec.vs121p import parse_report
from gateway.settings import SensorSection, Settings
from gateway.simulate import SimulatedSpace

DEMO_PERIOD_S = 2.0


def _summary(sensor: SensorSection, kind: str, data: dict[str, object]) -> str:
    keep = {k: v for k, v in data.items() if not isinstance(v, list | dict)}
    return f"{sensor.id} {kind}: " + json.dumps(keep, separators=(",", ":"))


def run_demo(settings: Settings, out: TextIO, *, rounds: int | None = None) -> int:
    """Print decoded simulated traffic every DEMO_PERIOD_S until SIGINT/SIGTERM (or `rounds`)."""
    stop = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    spaces = {
        s.id: SimulatedSpace(regions=s.region_count or 1, seed=s.number) for s in settings.sensors
    }
    out.write(f"vs121-gateway demo: {len(spaces)} simulated sensors; Ctrl-C stops\n")
    done = 0
    try:
        while not stop.is_set() and (rounds is None or done < rounds):
            now = time.time()
            for sensor in settings.sensors:
                space = spaces[sensor.id]
                space.step()
                if sensor.model == "vs121":
                    payload = space.uplink_occupancy(int(now)) + space.uplink_line()
                    result = decode_uplink(payload, 85)
                    out.write(_summary(sensor, payload.hex(), result["data"]) + "\n")
                else:
                    serial = sensor.serial or ""
                    report = space.report_region_counting(serial, now, int(DEMO_PERIOD_S))
                    result = parse_report(report)
                    out.write(_summary(sensor, "region counting", result["data"]) + "\n")
            out.flush()
            done += 1
            stop.wait(DEMO_PERIOD_S)
    except KeyboardInterrupt:
        pass
    return 0
