"""BACnet server benchmark: COV latency, ReadProperty / ReadPropertyMultiple round trips,
start-up time and memory with 1,000 sensors.

Run: .venv/bin/python bench/bench_bacnet.py [--changes N] [--rate R] [--reads N]

The server runs in this process, fed through GatewayState exactly as in the daemon. The client
is another process on its own UDP port with a raw socket: requests are pre-encoded and
notifications are timestamped on arrival, so the numbers are the server's and the loopback's,
not a client library's. Both processes read CLOCK_MONOTONIC, which Linux shares between
processes, so a notification's latency is its arrival time minus the time the state change was
applied. Start-up is measured in a fresh process so its peak RSS is the server's alone.
Everything binds 127.0.0.1 on free ports; nothing is broadcast beyond 127.255.255.255.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.bacnet import BacnetServer  # noqa: E402
from gateway.settings import BacnetSection  # noqa: E402
from gateway.state import GatewayState, Report  # noqa: E402
from objects.catalog import Model  # noqa: E402
from objects.pointmap import SensorSpec, resolve  # noqa: E402

GOALS = {"cov_p50_ms": 2.0, "cov_p99_ms": 10.0, "rp_p50_ms": 1.0, "start_s": 15.0, "rss_mb": 400}
PEOPLE_OFFSET = 1  # catalog: people_count_all is AI number * 1000 + 1
AI = 0


# -- wire helpers (the client side, independent of bacpypes3) ---------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def objid(kind: int, instance: int) -> bytes:
    return struct.pack("!I", (kind << 22) | instance)


def confirmed(invoke: int, service: int, body: bytes) -> bytes:
    """BVLC unicast + NPDU expecting a reply + confirmed-request APCI (max APDU 1476)."""
    apdu = bytes([0x00, 0x05, invoke & 0xFF, service]) + body
    npdu = b"\x01\x04" + apdu
    return b"\x81\x0a" + struct.pack("!H", 4 + len(npdu)) + npdu


def read_property(invoke: int, instance: int, prop: int = 85) -> bytes:
    return confirmed(invoke, 12, b"\x0c" + objid(AI, instance) + bytes([0x19, prop]))


def read_property_multiple(invoke: int, instances: list[int], props: list[int]) -> bytes:
    body = b""
    for instance in instances:
        body += b"\x0c" + objid(AI, instance) + b"\x1e"
        body += b"".join(bytes([0x09, p]) for p in props) + b"\x1f"
    return confirmed(invoke, 14, body)


def subscribe_cov(invoke: int, process: int, instance: int, lifetime: int = 600) -> bytes:
    body = bytes([0x09, process]) + b"\x1c" + objid(AI, instance)
    body += b"\x29\x00" + b"\x3a" + struct.pack("!H", lifetime)  # unconfirmed, lifetime
    return confirmed(invoke, 5, body)


def parse_cov(data: bytes) -> tuple[int, float] | None:
    """(monitored instance, present value) of an unconfirmed COV notification we sent."""
    if len(data) < 8 or data[6] != 0x10 or data[7] != 0x02 or data[5] != 0x00:
        return None
    at = 8
    at += 1 + (data[at] & 0x07)  # [0] subscriber process identifier
    at += 5  # [1] initiating device identifier
    if data[at] != 0x2C:
        return None
    (oid,) = struct.unpack("!I", data[at + 1 : at + 5])
    marker = data.find(b"\x09\x55\x2e\x44", at)  # present-value, opening [2], Real
    if marker < 0:
        return None
    (value,) = struct.unpack("!f", data[marker + 4 : marker + 8])
    return oid & 0x3FFFFF, value


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, ordered[-1]


# -- the client process -----------------------------------------------------------------------


def client_main(args: argparse.Namespace) -> None:
    server = ("127.0.0.1", args.server_port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    sock.settimeout(5.0)
    out: dict[str, Any] = {}
    instances = [n * 1000 + PEOPLE_OFFSET for n in range(1, args.sensors + 1)]

    def round_trips(make: Any, count: int) -> list[float]:
        times = []
        for i in range(count + 50):
            packet = make(i)
            started = time.perf_counter()
            sock.sendto(packet, server)
            reply = sock.recv(65535)
            elapsed = time.perf_counter() - started
            if reply[6] >> 4 not in (2, 3):  # simple or complex ack
                raise SystemExit(f"unexpected reply {reply.hex()}")
            if i >= 50:  # the first ones warm caches and the JIT-less interpreter's paths
                times.append(elapsed * 1000)
        return times

    out["rp_ms"] = round_trips(
        lambda i: read_property(i, instances[i % len(instances)]), args.reads
    )
    rpm_props = [85, 111, 103, 77, 81]  # present value, flags, reliability, name, out-of-service
    rpm = round_trips(
        lambda i: read_property_multiple(i, instances[:10], rpm_props), args.reads // 4
    )
    out["rpm_ms"] = rpm

    for i, instance in enumerate(instances):
        sock.sendto(subscribe_cov(i, i + 1, instance), server)
    acks = 0
    while acks < len(instances):  # the acks, and the first notification of each subscription
        data = sock.recv(65535)
        acks += data[6] >> 4 == 2
    print(json.dumps({"subscribed": len(instances)}), flush=True)
    received = []
    sock.settimeout(args.quiet)
    while True:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        now = time.monotonic()
        parsed = parse_cov(data)
        if parsed is not None:
            received.append((parsed[0], parsed[1], now))
    out["cov"] = received
    print(json.dumps(out), flush=True)


# -- the server side --------------------------------------------------------------------------


def specs(count: int, region_count: int = 16) -> list[SensorSpec]:
    return [
        SensorSpec(
            id=f"s{n}",
            name=f"Sensor {n}",
            number=n,
            model=Model.VS121 if n % 2 else Model.VS121_P,
            region_count=region_count,
        )
        for n in range(1, count + 1)
    ]


class Commands:
    async def reset_counts(self, sensor_id: str) -> str:
        return "reset"


async def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    sensors = specs(args.sensors)
    now = time.time()
    state = GatewayState([(s, 3600.0, 600.0) for s in sensors], clock=time.time)
    for s in sensors:
        state.apply(Report(s.id, {"people_count_all": 0}, received_at=now))
    port = free_port()
    with tempfile.TemporaryDirectory() as state_dir:
        server = BacnetServer(
            BacnetSection(port=port),
            resolve(sensors),
            state,
            Commands(),
            state_dir=Path(state_dir),
            version="bench",
        )
        await server.start()
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            "--port",
            str(free_port()),
            "--server-port",
            str(port),
            "--sensors",
            str(args.sensors),
            "--reads",
            str(args.reads),
            "--quiet",
            "1.0",
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # the results come back as one JSON line
        )
        assert client.stdout is not None
        line = await asyncio.wait_for(client.stdout.readline(), 120)
        if not line:
            raise SystemExit("bench client failed before subscribing")
        sent: dict[tuple[int, float], float] = {}
        values = dict.fromkeys(range(args.sensors), 0)
        loop = asyncio.get_running_loop()
        period = 1.0 / args.rate
        next_at = loop.time()
        for i in range(args.changes):
            n = i % args.sensors
            values[n] += 1
            instance = (n + 1) * 1000 + PEOPLE_OFFSET
            sent[(instance, float(values[n]))] = time.monotonic()
            state.apply(Report(f"s{n + 1}", {"people_count_all": values[n]}, received_at=now))
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        result = json.loads(await asyncio.wait_for(client.stdout.readline(), 120))
        await client.wait()
        await server.stop()
    latencies = [
        (t - sent[(oid, value)]) * 1000 for oid, value, t in result["cov"] if (oid, value) in sent
    ]
    return {
        "rp_ms": result["rp_ms"],
        "rpm_ms": result["rpm_ms"],
        "cov_ms": latencies,
        "cov_expected": args.changes,
        "notifications_sent": server.notifications_sent,
    }


def startup_main(args: argparse.Namespace) -> None:
    """In a fresh process: build state and points for N sensors and start the server."""

    async def run() -> dict[str, Any]:
        started = time.perf_counter()
        sensors = specs(args.sensors)
        state = GatewayState([(s, 1500.0, 600.0) for s in sensors])
        points = resolve(sensors)
        built = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as state_dir:
            server = BacnetServer(
                BacnetSection(port=free_port()),
                points,
                state,
                Commands(),
                state_dir=Path(state_dir),
                version="bench",
            )
            await server.start()
            total = time.perf_counter() - started
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            await server.stop()
        return {
            "sensors": args.sensors,
            "objects": len(points) + 2,
            "state_and_points_s": built,
            "server_start_s": server.started_in,
            "total_s": total,
            "peak_rss_mb": rss_mb,
        }

    print(json.dumps(asyncio.run(run())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=2000, help="state changes to time")
    parser.add_argument("--rate", type=float, default=200.0, help="state changes per second")
    parser.add_argument("--sensors", type=int, default=20, help="subscriptions (one per sensor)")
    parser.add_argument("--reads", type=int, default=2000, help="ReadProperty round trips")
    parser.add_argument("--startup-sensors", type=int, default=1000)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--startup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--server-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.client:
        client_main(args)
        return 0
    if args.startup:
        startup_main(args)
        return 0

    misses = []
    result = asyncio.run(run_latency(args))
    rp50, rp99, rpmax = percentiles(result["rp_ms"])
    rpm50, rpm99, rpmmax = percentiles(result["rpm_ms"])
    print(f"ReadProperty (present value), {len(result['rp_ms'])} round trips:")
    print(f"  p50 {rp50:.3f} ms  p99 {rp99:.3f} ms  max {rpmax:.3f} ms")
    print(f"ReadPropertyMultiple (10 objects x 5 = 50 properties), {len(result['rpm_ms'])} trips:")
    print(f"  p50 {rpm50:.3f} ms  p99 {rpm99:.3f} ms  max {rpmmax:.3f} ms")
    cov = result["cov_ms"]
    got, expected = len(cov), result["cov_expected"]
    c50, c99, cmax = percentiles(cov) if cov else (float("nan"),) * 3
    print(
        f"COV latency, state change -> notification in the client process, {args.rate:.0f} "
        f"changes/s over {args.sensors} subscriptions: {got}/{expected} received"
    )
    print(f"  p50 {c50:.3f} ms  p99 {c99:.3f} ms  max {cmax:.3f} ms")
    if got < expected:
        misses.append(f"{expected - got} notifications missing")
    if rp50 > GOALS["rp_p50_ms"]:
        misses.append("ReadProperty p50")
    if c50 > GOALS["cov_p50_ms"]:
        misses.append("COV p50")
    if c99 > GOALS["cov_p99_ms"]:
        misses.append("COV p99")

    startup = subprocess.run(
        [sys.executable, __file__, "--startup", "--sensors", str(args.startup_sensors)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    s = json.loads(startup.stdout.strip().splitlines()[-1])
    print(f"Start-up with {s['sensors']} sensors ({s['objects']:,} objects, all points):")
    print(
        f"  state and points {s['state_and_points_s']:.2f} s, BACnet server start "
        f"{s['server_start_s']:.2f} s, total {s['total_s']:.2f} s, peak RSS "
        f"{s['peak_rss_mb']:.0f} MB"
    )
    if s["total_s"] > GOALS["start_s"]:
        misses.append("start-up time")
    if s["peak_rss_mb"] > GOALS["rss_mb"]:
        misses.append("start-up memory")
    goals = "COV p50 <= 2 ms, p99 <= 10 ms; RP p50 <= 1 ms; start <= 15 s under 400 MB"
    print(f"goals ({goals}): " + ("all met" if not misses else "MISSED " + ", ".join(misses)))
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
