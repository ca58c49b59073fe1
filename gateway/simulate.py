"""Realistic simulated sensor traffic for demos, tests and benchmarks.

A `SimulatedSpace` is a room where people arrive, move between regions and leave; it produces the
VS121 LoRaWAN uplink bytes (seed 000 chapter 7) and the VS121-P JSON reports (seed 001 chapter 8)
that a real sensor watching that room would send. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from objects.catalog import MAX_REGIONS

FLOW_NAMES = [f"{a}-{b}" for a in "ABCD" for b in "ABCD"]


@dataclass
class SimulatedSpace:
    """The state of one watched room; `step` advances it by one reporting interval."""

    regions: int = 4
    capacity: int = 30
    seed: int = 1
    people: list[int] = field(default_factory=list)  # region (0-based) of each person present
    total_in: int = 0
    total_out: int = 0
    period_in: int = 0
    period_out: int = 0
    period_max: int = 0
    flows: list[int] = field(default_factory=lambda: [0] * 16)
    dwell_avg: list[int] = field(default_factory=list)
    dwell_max: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311  (a simulation, not cryptography)
        self.regions = max(1, min(self.regions, MAX_REGIONS))
        self.dwell_avg = [0] * self.regions
        self.dwell_max = [0] * self.regions

    def step(self) -> None:
        """One interval: some arrive, some leave, some move; counters for the period restart."""
        rng = self._rng
        self.period_in = self.period_out = 0
        self.flows = [0] * 16
        arrivals = rng.randint(0, 4) if len(self.people) < self.capacity else 0
        for _ in range(arrivals):
            self.people.append(rng.randrange(self.regions))
        self.period_in = arrivals
        leaving = rng.randint(0, min(3, len(self.people)))
        for _ in range(leaving):
            self.people.pop(rng.randrange(len(self.people)))
        self.period_out = leaving
        for i, region in enumerate(self.people):
            if rng.random() < 0.2:
                dest = rng.randrange(self.regions)
                self.flows[(region % 4) * 4 + dest % 4] += 1
                self.people[i] = dest
        self.total_in = (self.total_in + self.period_in) & 0xFFFF
        self.total_out = (self.total_out + self.period_out) & 0xFFFF
        self.period_max = len(self.people) + rng.randint(0, 2)
        for r in range(self.regions):
            self.dwell_avg[r] = rng.randint(5, 600) if self.region_counts()[r] else 0
            self.dwell_max[r] = self.dwell_avg[r] + rng.randint(0, 300) if self.dwell_avg[r] else 0

    def region_counts(self) -> list[int]:
        counts = [0] * self.regions
        for r in self.people:
            counts[r] += 1
        return counts

    # -- VS121 LoRaWAN ----------------------------------------------------------------------

    def uplink_occupancy(self, timestamp: int | None = None) -> bytes:
        """Periodic occupancy report: 04c9 count/regions/bitmap + 06cd max (+ 0f85 time)."""
        bitmap = 0
        for r, c in enumerate(self.region_counts()):
            if c:
                bitmap |= 1 << r
        out = b""
        if timestamp is not None:
            out += b"\x0f\x85" + struct.pack("<I", timestamp)
        # The bitmap's two bytes are sent high byte first (the guide's "00 a1" is regions 1,6,8).
        out += b"\x04\xc9" + bytes([min(len(self.people), 255), self.regions])
        out += struct.pack(">H", bitmap)
        out += b"\x06\xcd" + bytes([min(self.period_max, 255)])
        return out

    def uplink_counting(self) -> bytes:
        """Periodic per-region counting report: 07d5 (+08d5) counts, 06cd max, 0ee4 dwell."""
        counts = [*self.region_counts(), *([0] * MAX_REGIONS)][:MAX_REGIONS]
        out = b"\x07\xd5" + bytes(min(c, 255) for c in counts[:8])
        if self.regions > 8:
            out += b"\x08\xd5" + bytes(min(c, 255) for c in counts[8:])
        out += b"\x06\xcd" + bytes([min(self.period_max, 255)])
        avg = max(self.dwell_avg) if self.dwell_avg else 0
        mx = max(self.dwell_max) if self.dwell_max else 0
        out += b"\x0e\xe4\x00" + struct.pack("<HH", min(avg, 0xFFFF), min(mx, 0xFFFF))
        return out

    def uplink_line(self, timestamp: int | None = None) -> bytes:
        """Periodic line-crossing report: 05cc period in/out + 0dcc accumulated (+0f85 time)."""
        out = b""
        if timestamp is not None:
            out += b"\x0f\x85" + struct.pack("<I", timestamp)
        out += b"\x05\xcc" + struct.pack("<HH", self.period_in, self.period_out)
        out += b"\x0d\xcc" + struct.pack("<HH", self.total_in, self.total_out)
        return out

    def uplink_flow(self) -> bytes:
        out = b""
        for i, channel in enumerate((0x09, 0x0A, 0x0B, 0x0C)):
            out += bytes([channel, 0xDA]) + struct.pack("<4H", *self.flows[i * 4 : i * 4 + 4])
        return out

    def uplink_history_line(self, timestamp: int) -> bytes:
        """A retransmitted periodic line-crossing record (history type 0x02)."""
        return b"\x20\xce" + struct.pack("<IBHH", timestamp, 0x02, self.period_in, self.period_out)

    @staticmethod
    def uplink_basic_info(serial: str = "6600b0940976") -> bytes:
        return bytes.fromhex("ff0101ff08" + serial + "ff090100ff1f1f07004b")

    # -- VS121-P JSON -----------------------------------------------------------------------

    def _device_info(self, serial: str) -> dict[str, str]:
        return {
            "device": "Workplace Sensor",
            "device_sn": serial,
            "device_mac": "00:16:28:00:00:01",
            "ip_address": "127.0.0.1",
        }

    @staticmethod
    def _time_info(end: float, period: int) -> dict[str, Any]:
        fmt = "%Y/%m/%d %H:%M:%S"
        return {
            "timezone": "UTC+0:00",
            "dst_status": False,
            "start_time": time.strftime(fmt, time.gmtime(end - period)),
            "end_time": time.strftime(fmt, time.gmtime(end)),
        }

    def report_region_counting(self, serial: str, end: float, period: int) -> dict[str, Any]:
        counts = self.region_counts()
        return {
            "event": "Region People Counting",
            "report_type": "interval",
            "device_info": self._device_info(serial),
            "time_info": self._time_info(end, period),
            "current_total": len(self.people),
            "max_counted": self.period_max,
            "total_mapped_regions": self.regions,
            "numbering_regions": list(range(1, self.regions + 1)),
            "current_counted": counts,
            "occupancy": [1 if c else 0 for c in counts],
        }

    def report_line_crossing(self, serial: str, end: float, period: int) -> dict[str, Any]:
        return {
            "event": "Line Crossing Counting",
            "report_type": "interval",
            "device_info": self._device_info(serial),
            "time_info": self._time_info(end, period),
            "in_counted": self.period_in,
            "out_counted": self.period_out,
            "capacity_counted": self.period_in - self.period_out,
            "total_data": {
                "in_cumulative_counted": self.total_in,
                "out_cumulative_counted": self.total_out,
                "capacity_cumulative_counted": self.total_in - self.total_out,
            },
        }

    def report_dwell(self, serial: str, end: float, period: int) -> dict[str, Any]:
        return {
            "event": "Dwell Time Detection",
            "report_type": "interval",
            "device_info": self._device_info(serial),
            "time_info": self._time_info(end, period),
            "dwell_time_data": [
                {"region": r + 1, "max_dwell_time": mx, "avg_dwell_time": avg}
                for r, (avg, mx) in enumerate(zip(self.dwell_avg, self.dwell_max, strict=True))
            ],
        }

    def report_flow(self, serial: str, end: float, period: int) -> dict[str, Any]:
        return {
            "event": "People Flow Analysis",
            "report_type": "interval",
            "device_info": self._device_info(serial),
            "time_info": self._time_info(end, period),
            "flow_data": dict(zip(FLOW_NAMES, self.flows, strict=True)),
        }
