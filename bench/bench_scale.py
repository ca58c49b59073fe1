"""5,000 sensors on one gateway: start-up time, CPU and memory, then every object read back.

Run: .venv/bin/python bench/bench_scale.py [--sensors 5000] [--regions 4] [--modes bacnet,modbus]

For each mode the real daemon (`vs121-gateway run`) starts with a generated configuration of N
VS121-P sensors (`bacnet.instance_block = 500`, so numbers past 4,193 have instances; HTTP ingest
on): "bacnet" with Modbus off, "modbus" with Modbus TCP on in `unit_blocks` addressing. It
measures process start to READY (sd_notify), the CPU the process used by then and its peak RSS.
Then it pushes one VS121-P report per sensor over HTTP (a people count and region counts of its
own), and reads back over the network:

- BACnet: Present_Value of every object the point map lists, by ReadPropertyMultiple in chunks
  (a raw UDP client, one request at a time); every answer must be a value, and each sensor's
  people count and region counts must be what was pushed.
- Modbus TCP: every sensor's register block (two reads: 0-124 and the daily totals 125-128) and
  its discrete inputs, at the unit id and address `unit_blocks` gives it; the people count and
  region count registers must be what was pushed.

Then the same daemon starts again on its state (every sensor's state file to load), and the
BACnet read-back is repeated: the pushed values must have survived (--no-restart skips this).

Goals: start under 15 s and under 1 GB at 5,000 sensors, every object readable. Everything binds
127.0.0.1 on free ports; the machine's load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bacnet_floor import (  # noqa: E402
    GatewayProcess,
    RawClient,
    free_port,
    read_property,
    read_property_multiple,
)

from gateway.modbus.units import unit_block_of  # noqa: E402
from gateway.pointdocs import OBJECT_TYPE_CODES  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from objects.catalog import ObjectType  # noqa: E402

DEVICE = 121000
BLOCK = 500
GOALS = {"start_s": 15.0, "rss_mb": 1024.0}
PRESENT_VALUE = 85


def config_text(
    workdir: Path, sensors: int, regions: int, ports: dict[str, int], modbus: bool
) -> str:
    head = (
        f'[gateway]\nstate_dir = "{workdir / "state"}"\nlog_level = "warning"\n'
        f'[bacnet]\naddress = "127.0.0.1/8"\nport = {ports["bacnet"]}\n'
        f"device_instance = {DEVICE}\ninstance_block = {BLOCK}\n"
        '[modbus]\naddressing = "unit_blocks"\n'
        f"[modbus.tcp]\nenabled = {'true' if modbus else 'false'}\n"
        f'host = "127.0.0.1"\nport = {ports["modbus"]}\n'
        f'[http]\nhost = "127.0.0.1"\nport = {ports["http"]}\n'
    )
    return head + "".join(
        f'[[sensors]]\nid = "s{n}"\nname = "Sensor {n}"\nnumber = {n}\nmodel = "vs121-p"\n'
        f'serial = "{n:012d}"\nreport_interval = 3600\nregion_count = {regions}\n'
        for n in range(1, sensors + 1)
    )


class Daemon(GatewayProcess):
    """The gateway as a process (see GatewayProcess), its memory noted at READY."""

    def __init__(self, workdir: Path, config: str) -> None:
        super().__init__(workdir, config, stop_wait_s=60.0)
        self.start_rss_mb = self.peak_rss_mb()


# -- pushing -------------------------------------------------------------------------------------


def pushed_counts(number: int, regions: int) -> tuple[int, list[int]]:
    """What sensor `number` is told: region counts of its own, the people count their sum."""
    per_region = [(number + r) % 7 for r in range(regions)]
    return sum(per_region), per_region


def report(number: int, regions: int) -> bytes:
    total, per_region = pushed_counts(number, regions)
    return json.dumps(
        {
            "event": "Region People Counting",
            "report_type": "interval",
            "device_info": {"device_sn": f"{number:012d}"},
            "time_info": {
                "timezone": "UTC+0:00",
                "start_time": "2026/01/01 00:00:00",
                "end_time": "2026/01/01 00:10:00",
            },
            "current_total": total,
            "max_counted": total,
            "total_mapped_regions": regions,
            "current_counted": per_region,
        }
    ).encode()


def push_all(port: int, sensors: int, regions: int, workers: int = 16) -> float:
    """One report per sensor over keep-alive connections; raises on any non-200."""
    started = time.perf_counter()

    def worker(first: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for n in range(first, sensors + 1, workers):
            conn.request(
                "POST", "/vs121p", report(n, regions), {"Content-Type": "application/json"}
            )
            answer = conn.getresponse()
            body = answer.read()
            if answer.status != 200:
                raise SystemExit(f"push to s{n}: HTTP {answer.status} {body[:200]!r}")
        conn.close()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(1, workers + 1)))
    return time.perf_counter() - started


# -- BACnet read-back ------------------------------------------------------------------------------


def _skip_value(data: bytes, at: int) -> int:
    """Past one application-tagged value (what a Present_Value is)."""
    tag = data[at]
    length = tag & 0x07
    at += 1
    if tag >> 4 == 1:  # boolean: the value is in the length field
        return at
    if length == 5:
        length = data[at]
        at += 1
        if length == 254:
            length = int.from_bytes(data[at : at + 2], "big")
            at += 2
    return at + length


def rpm_values(apdu: bytes) -> list[tuple[int, int, bytes | None]]:
    """(object type, instance, the value's encoding or None for an error) of an RPM-ACK that
    asked one property per object."""
    if apdu[0] != 0x30:
        raise SystemExit(f"RPM: not a Complex-ACK: {apdu[:12].hex()}")
    out = []
    at = 3
    while at < len(apdu):
        if apdu[at] != 0x0C:
            raise SystemExit(f"RPM: unexpected byte {apdu[at]:#x} at {at}")
        (raw,) = struct.unpack_from("!I", apdu, at + 1)
        at += 5 + 1  # the identifier, then the opening tag of the results
        at += 2  # property identifier (one byte: Present_Value)
        if apdu[at] == 0x4E:  # a value
            start = at + 1
            at = start
            while apdu[at] != 0x4F:
                at = _skip_value(apdu, at)
            value: bytes | None = apdu[start:at]
            at += 1
        elif apdu[at] == 0x5E:  # an error
            end = apdu.index(0x5F, at)
            value = None
            at = end + 1
        else:
            raise SystemExit(f"RPM: unexpected result tag {apdu[at]:#x}")
        if apdu[at] != 0x1F:
            raise SystemExit(f"RPM: unexpected byte {apdu[at]:#x} closing a result")
        at += 1
        out.append((raw >> 22, raw & 0x3FFFFF, value))
    return out


@dataclass
class ReadBack:
    seconds: float
    objects: int
    requests: int
    problems: list[str]


def bacnet_read_back(port: int, config: Path, regions: int, chunk: int) -> tuple[int, ReadBack]:
    """Object_List length, then Present_Value of every point object in RPM chunks."""
    settings = load_settings(config)
    points = settings.points()
    wanted: dict[tuple[int, int], tuple[str, str]] = {}
    for p in points:
        wanted[(OBJECT_TYPE_CODES[p.object_type], p.instance)] = (p.sensor_id, p.key)
    client = RawClient(("127.0.0.1", port), timeout=10)
    reply = client.ask(read_property(8, DEVICE, 76, 0))
    listed = int.from_bytes(reply[reply.index(b"\x3e") + 2 : -1], "big")
    objects = sorted(wanted)
    problems: list[str] = []
    real = OBJECT_TYPE_CODES[ObjectType.ANALOG_INPUT]
    expected: dict[tuple[int, int], float] = {}
    for p in points:
        if not p.sensor_id:
            continue
        number = p.sensor_number
        total, per_region = pushed_counts(number, regions)
        if p.key == "people_count_all":
            expected[(real, p.instance)] = float(total)
        elif p.region is not None and p.key == f"region_{p.region}_count":
            expected[(real, p.instance)] = float(per_region[p.region - 1])
    started = time.perf_counter()
    requests = 0
    seen = 0
    for i in range(0, len(objects), chunk):
        batch = objects[i : i + chunk]
        answer = client.ask(read_property_multiple(batch, [PRESENT_VALUE]))
        requests += 1
        for kind, instance, value in rpm_values(answer):
            seen += 1
            if value is None:
                problems.append(f"({kind},{instance}) {wanted.get((kind, instance))}: an error")
                continue
            want = expected.get((kind, instance))
            if want is not None:
                (got,) = struct.unpack("!f", value[1:5])
                if value[0] != 0x44 or got != want:
                    problems.append(f"({kind},{instance}): {value.hex()} != {want}")
    elapsed = time.perf_counter() - started
    client.close()
    if seen != len(objects):
        problems.append(f"{seen} results for {len(objects)} objects")
    return listed, ReadBack(elapsed, seen, requests, problems)


# -- Modbus read-back ------------------------------------------------------------------------------


class MbapClient:
    """One TCP connection, one request at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tid = 0

    def ask(self, unit: int, pdu: bytes) -> bytes:
        self.tid = (self.tid + 1) & 0xFFFF
        self.sock.sendall(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, unit) + pdu)
        header = self._exactly(7)
        tid, _, length, _ = struct.unpack(">HHHB", header)
        body = self._exactly(length - 1)
        if tid != self.tid:
            raise SystemExit(f"Modbus: answer to transaction {tid}, expected {self.tid}")
        return body

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            part = self.sock.recv(size - len(data))
            if not part:
                raise SystemExit("Modbus: connection closed")
            data += part
        return data

    def close(self) -> None:
        self.sock.close()


def modbus_read_back(port: int, sensors: int, regions: int) -> ReadBack:
    client = MbapClient(port)
    problems: list[str] = []
    requests = 0
    started = time.perf_counter()
    for n in range(1, sensors + 1):
        unit, base = unit_block_of(n)
        address = n * 200 - base
        total, per_region = pushed_counts(n, regions)
        first = client.ask(unit, struct.pack(">BHH", 4, address, 125))
        daily = client.ask(unit, struct.pack(">BHH", 4, address + 125, 4))
        bits = client.ask(unit, struct.pack(">BHH", 2, address, 17))
        requests += 3
        if first[:2] != b"\x04\xfa" or daily[:2] != b"\x04\x08" or bits[:2] != b"\x02\x03":
            problems.append(f"s{n} (unit {unit}, {address}): {first[:2].hex()} {daily[:2].hex()}")
            continue
        words = struct.unpack(">125H", first[2:])
        if words[4] != total or list(words[24 : 24 + regions]) != per_region:
            problems.append(f"s{n}: people {words[4]} regions {words[24 : 24 + regions]}")
    elapsed = time.perf_counter() - started
    client.close()
    return ReadBack(elapsed, sensors, requests, problems)


# -- main --------------------------------------------------------------------------------------


def run_mode(args: argparse.Namespace, work: Path, mode: str) -> list[str]:
    modbus = mode == "modbus"
    ports = {
        "bacnet": free_port(),
        "modbus": free_port(socket.SOCK_STREAM),
        "http": free_port(socket.SOCK_STREAM),
    }
    label = "BACnet + Modbus TCP (unit_blocks)" if modbus else "BACnet only"
    print(f"\n{args.sensors} VS121-P sensors, {args.regions} regions, {label}:", flush=True)
    load_before = os.getloadavg()
    config = config_text(work / mode, args.sensors, args.regions, ports, modbus)
    daemon = Daemon(work / mode, config)
    misses = []
    try:
        print(
            f"  start {daemon.start_s:.2f} s to READY, {daemon.start_cpu_s:.2f} s of CPU, "
            f"peak RSS {daemon.start_rss_mb:.0f} MB (load average before "
            f"{load_before[0]:.2f})"
        )
        if daemon.start_s > GOALS["start_s"]:
            misses.append(f"{mode}: start {daemon.start_s:.1f} s")
        pushed_s = push_all(ports["http"], args.sensors, args.regions)
        print(f"  pushed {args.sensors} reports over HTTP in {pushed_s:.2f} s")
        listed, bac = bacnet_read_back(ports["bacnet"], daemon.config, args.regions, args.chunk)
        print(
            f"  BACnet: Object_List has {listed} entries; Present_Value of {bac.objects} point "
            f"objects read in {bac.requests} RPMs of {args.chunk} in {bac.seconds:.2f} s, "
            f"{len(bac.problems)} problems"
        )
        misses += [f"{mode}: BACnet {p}" for p in bac.problems[:5]]
        if modbus:
            mb = modbus_read_back(ports["modbus"], args.sensors, args.regions)
            print(
                f"  Modbus TCP: {mb.objects} sensor blocks ({mb.requests} requests) read in "
                f"{mb.seconds:.2f} s, {len(mb.problems)} problems"
            )
            misses += [f"{mode}: Modbus {p}" for p in mb.problems[:5]]
        rss = daemon.peak_rss_mb()
        print(
            f"  after the read-back: peak RSS {rss:.0f} MB, {daemon.cpu_seconds():.2f} s of CPU "
            f"in all; load average {os.getloadavg()[0]:.2f}"
        )
        if rss > GOALS["rss_mb"]:
            misses.append(f"{mode}: RSS {rss:.0f} MB")
    finally:
        daemon.stop()
    if args.restart:
        misses += restart(args, work / mode, config, ports, mode)
    return misses


def restart(
    args: argparse.Namespace, workdir: Path, config: str, ports: dict[str, int], mode: str
) -> list[str]:
    """The same configuration again, now with the state of every sensor to load."""
    misses = []
    daemon = Daemon(workdir, config)
    try:
        print(
            f"  restart with {args.sensors} sensors' state: {daemon.start_s:.2f} s to READY, "
            f"{daemon.start_cpu_s:.2f} s of CPU, peak RSS {daemon.start_rss_mb:.0f} MB"
        )
        if daemon.start_s > GOALS["start_s"]:
            misses.append(f"{mode}: restart {daemon.start_s:.1f} s")
        _, bac = bacnet_read_back(ports["bacnet"], daemon.config, args.regions, args.chunk)
        print(
            f"  BACnet after the restart: {bac.objects} objects read in {bac.seconds:.2f} s, "
            f"{len(bac.problems)} problems (the pushed values survived)"
        )
        misses += [f"{mode} restarted: BACnet {p}" for p in bac.problems[:5]]
    finally:
        daemon.stop()
    return misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=5000)
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--modes", default="bacnet,modbus", help="bacnet, modbus or both")
    parser.add_argument("--chunk", type=int, default=50, help="objects per RPM")
    parser.add_argument(
        "--no-restart", dest="restart", action="store_false", help="skip the restart"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; uptime: {subprocess.getoutput('uptime').strip()}")
    misses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for mode in args.modes.split(","):
            misses += run_mode(args, Path(tmp), mode.strip())
    goals = f"start < {GOALS['start_s']:.0f} s, RSS < 1 GB, every object read back as pushed"
    print(f"\ngoals ({goals}): " + ("all met" if not misses else "MISSED " + "; ".join(misses)))
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
