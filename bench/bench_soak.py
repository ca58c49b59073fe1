"""Soak: the daemon under steady load, BMS clients and an attacker; exact totals at the end.

Starts mosquitto and the gateway (`vs121-gateway run`, its own process) on loopback, then for
`--duration` seconds (default 600):
- publishes VS121 line-crossing reports (ChirpStack uplinks, QoS 1) for half the sensors and POSTs
  VS121-P line-crossing reports over HTTP for the other half, `--rate` messages/s in all;
- reads every sensor's Modbus TCP block (pymodbus client) and BACnet objects (a bacpypes3 peer
  process subscribed to COV on one object per VS121 sensor);
- keeps `--attackers` HTTP connections open against the gateway, half idle and half dribbling a
  request header that never ends (slowloris), reopening whatever the gateway closes.
Every 10 s it prints the gateway's RSS, open descriptors, HTTP ack p99/max and attacker state;
at the end the exact expected and counted totals of every sensor, the HTTP ack latencies the
client saw, and the gateway's own acknowledgement-delay histogram for MQTT and HTTP.

    .venv/bin/python bench/bench_soak.py [--duration 600] [--rate 200] [--sensors 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from bacnet_peer.harness import Peer, free_udp_port  # noqa: E402
from helpers.broker import MosquittoBroker, free_port  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from gateway.sim_publish import uplink_body, uplink_topic  # noqa: E402

T0 = 1_700_000_000
PERIOD_S = 60
LINE_TEMPLATE = json.loads((ROOT / "tests/data/vs121p/line_interval.json").read_text())
del LINE_TEMPLATE["snapshot"]


@dataclass
class Sensor:
    number: int
    model: str  # "vs121" or "vs121-p"
    seq: int = 0
    sent_in: int = 0
    sent_out: int = 0

    @property
    def id(self) -> str:
        return f"s{self.number}"

    @property
    def dev_eui(self) -> str:
        return f"24e124538c{self.number:06x}"

    @property
    def serial(self) -> str:
        return f"3693620{self.number:05d}"


def config(state: Path, sensors: list[Sensor], ports: dict[str, int]) -> str:
    out = [
        f'[gateway]\nstate_dir = "{state}"\nlog_level = "info"\n',
        f'[bacnet]\naddress = "127.0.0.1/8"\nport = {ports["bacnet"]}\n'
        'broadcast = "127.255.255.255"\n',
        f'[modbus.tcp]\nhost = "127.0.0.1"\nport = {ports["modbus"]}\n',
        f'[http]\nhost = "127.0.0.1"\nport = {ports["http"]}\n',
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {ports["mqtt"]}\n'
        'client_id = "soak-gw"\n'
        '[[mqtt.subscriptions]]\nname = "cs"\ntopic = "application/+/device/+/event/up"\n'
        'envelope = "chirpstack"\n',
    ]
    for s in sensors:
        ident = f'dev_eui = "{s.dev_eui}"' if s.model == "vs121" else f'serial = "{s.serial}"'
        out.append(
            f'[[sensors]]\nid = "{s.id}"\nname = "Sensor {s.number}"\nnumber = {s.number}\n'
            f'model = "{s.model}"\n{ident}\nregion_count = 4\nreport_interval = {PERIOD_S}\n'
        )
    return "\n".join(out)


def lorawan_report(s: Sensor, rng: random.Random) -> tuple[str, bytes]:
    n_in, n_out = rng.randint(0, 9), rng.randint(0, 9)
    s.sent_in += n_in
    s.sent_out += n_out
    ts = (T0 + PERIOD_S * s.seq).to_bytes(4, "little")
    payload = b"\x0f\x85" + ts + b"\x05\xcc" + n_in.to_bytes(2, "little")
    payload += n_out.to_bytes(2, "little")
    s.seq += 1
    return uplink_topic("chirpstack", s.dev_eui), uplink_body(
        "chirpstack", s.dev_eui, s.seq, payload, time.time()
    )


def vs121p_report(s: Sensor, rng: random.Random) -> bytes:
    n_in, n_out = rng.randint(0, 9), rng.randint(0, 9)
    s.sent_in += n_in
    s.sent_out += n_out
    start = T0 + PERIOD_S * s.seq
    s.seq += 1

    def local(t: int) -> str:  # the template's zone is UTC+8
        return time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(t + 8 * 3600))

    doc = dict(LINE_TEMPLATE, in_counted=n_in, out_counted=n_out)
    doc["device_info"] = dict(LINE_TEMPLATE["device_info"], device_sn=s.serial)
    doc["time_info"] = dict(
        LINE_TEMPLATE["time_info"], start_time=local(start), end_time=local(start + PERIOD_S)
    )
    return json.dumps(doc).encode()


@dataclass
class Stats:
    acks: list[float] = field(default_factory=list)  # HTTP POST round trips (s): durable acks
    window: list[float] = field(default_factory=list)
    http_errors: int = 0
    modbus_reads: int = 0
    modbus_errors: int = 0
    bacnet_reads: int = 0
    bacnet_errors: int = 0
    mqtt_sent: int = 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Attacker:
    """Idle and slowloris connections, reopened as the server closes them."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.socks: list[tuple[socket.socket, bool]] = []
        self.reopened = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s, _ in self.socks:
            s.close()

    def _open(self, slow: bool) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            self.refused += 1
            return
        s.setblocking(False)
        if slow:
            with contextlib.suppress(OSError):
                s.send(b"POST /vs121p HTTP/1.1\r\nHost: x\r\n")
        self.socks.append((s, slow))

    def _run(self) -> None:
        for i in range(self.count):
            self._open(slow=i % 2 == 1)
        n = 0
        while not self._stop.wait(1.0):
            n += 1
            alive: list[tuple[socket.socket, bool]] = []
            for s, slow in self.socks:
                closed = False
                try:
                    if s.recv(4096) == b"":
                        closed = True
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                if not closed and slow:
                    try:
                        s.send(f"X-{n}: y\r\n".encode())
                    except OSError:
                        closed = True
                if closed:
                    s.close()
                else:
                    alive.append((s, slow))
            self.socks = alive
            while len(self.socks) < self.count and not self._stop.is_set():
                self._open(slow=len(self.socks) % 2 == 1)
                self.reopened += 1


def proc_sample(pid: int) -> tuple[float, int]:
    rss = 0.0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    return rss, fds


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def metric(port: int, name: str, **labels: str) -> float:
    total = 0.0
    for line in http_get(port, "/metrics").splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ack_delays(port: int, source: str) -> str:
    """The gateway's own acknowledgement-delay histogram for `source`: count, and the bucket
    bounds its median and p99 fall under (the histogram's resolution, not exact values)."""
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(http_get(port, "/metrics")):
        for s in family.samples:
            if s.name == "vs121gw_ack_seconds_bucket" and s.labels.get("source") == source:
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    count = buckets[-1][1] if buckets else 0.0
    if not count:
        return f"{source}: none"

    def under(q: float) -> str:
        bound = next(le for le, n in buckets if n >= q * count)
        return f"<= {bound * 1000:.0f} ms" if bound != float("inf") else "over the top bucket"

    slow = count - next((n for le, n in buckets if le >= 0.1), count)
    return f"{source} n={count:.0f}: median {under(0.5)}, p99 {under(0.99)}, over 100 ms {slow:.0f}"


async def mqtt_load(
    broker: int, sensors: list[Sensor], rate: float, until: float, stats: Stats
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-publisher")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", broker)
    client.loop_start()
    rng = random.Random(1)
    infos: list[mqtt.MQTTMessageInfo] = []
    i = 0
    start = time.monotonic()
    while time.monotonic() < until:
        s = sensors[i % len(sensors)]
        topic, body = lorawan_report(s, rng)
        infos.append(client.publish(topic, body, qos=1))
        stats.mqtt_sent += 1
        i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, 30)
    client.disconnect()
    client.loop_stop()


async def http_load(
    port: int, sensors: list[Sensor], rate: float, until: float, stats: Stats
) -> None:
    rng = random.Random(2)
    url = f"http://127.0.0.1:{port}/vs121p"
    tasks: set[asyncio.Task[None]] = set()
    # One report per sensor at a time: each sensor's reports go in order, as a real one's do.
    locks = {s.id: asyncio.Lock() for s in sensors}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:

        async def post(s: Sensor) -> None:
            async with locks[s.id]:
                body = vs121p_report(s, rng)
                for _attempt in range(20):
                    t = time.perf_counter()
                    try:
                        async with session.post(url, data=body) as resp:
                            await resp.read()
                            ok = resp.status == 200
                    except aiohttp.ClientError:
                        ok = False
                    if ok:
                        took = time.perf_counter() - t
                        stats.acks.append(took)
                        stats.window.append(took)
                        return
                    stats.http_errors += 1
                    await asyncio.sleep(0.2)

        i = 0
        start = time.monotonic()
        while time.monotonic() < until:
            task = asyncio.create_task(post(sensors[i % len(sensors)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)


async def modbus_load(port: int, sensors: list[Sensor], until: float, stats: Stats) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    await client.connect()
    while time.monotonic() < until:
        for s in sensors:
            try:
                rr = await client.read_holding_registers(s.number * 200, count=24)
                stats.modbus_reads += 1
                if rr.isError():
                    stats.modbus_errors += 1
            except Exception:
                stats.modbus_errors += 1
        await asyncio.sleep(0.5)
    client.close()


async def bacnet_load(port: int, sensors: list[Sensor], until: float, stats: Stats) -> None:
    peer = await Peer.start("client.py", free_udp_port())
    address = f"127.0.0.1:{port}"
    try:
        for s in sensors[:20]:
            with contextlib.suppress(Exception):
                await peer.call(
                    "subscribe",
                    address=address,
                    object=f"analog-input,{s.number * 1000 + 12}",
                    process=s.number,
                )
        while time.monotonic() < until:
            for s in sensors[:20]:
                try:
                    await peer.call(
                        "read",
                        address=address,
                        object=f"analog-input,{s.number * 1000 + 12}",
                        property="presentValue",
                    )
                    stats.bacnet_reads += 1
                except Exception:
                    stats.bacnet_errors += 1
            peer.drain_events()
            await asyncio.sleep(1.0)
    finally:
        await peer.stop()


async def sampler(
    pid: int, until: float, stats: Stats, attacker: Attacker, *, every: float
) -> None:
    started = time.monotonic()
    print(
        f"{'t/s':>6} {'RSS/MiB':>8} {'fds':>5} {'acks':>6} {'p99/ms':>7} {'max/ms':>7} "
        f"{'attack open':>11} {'reopened':>8}"
    )
    while time.monotonic() < until:
        await asyncio.sleep(every)
        rss, fds = proc_sample(pid)
        window, stats.window = stats.window, []
        print(
            f"{time.monotonic() - started:6.0f} {rss:8.1f} {fds:5d} {len(window):6d} "
            f"{pct(window, 0.99) * 1000:7.1f} {max(window, default=float('nan')) * 1000:7.1f} "
            f"{len(attacker.socks):11d} {attacker.reopened:8d}",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s, all sources")
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--attackers", type=int, default=200)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args()

    sensors = [Sensor(n, "vs121" if n % 2 else "vs121-p") for n in range(1, args.sensors + 1)]
    lorawan = [s for s in sensors if s.model == "vs121"]
    pushed = [s for s in sensors if s.model == "vs121-p"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        MosquittoBroker(Path(tmp), extra_config="max_queued_messages 100000\n") as broker,
    ):
        ports = {
            "bacnet": free_udp_port(),
            "modbus": free_port(),
            "http": free_port(),
            "mqtt": broker.port,
        }
        cfg = Path(tmp) / "gateway.toml"
        cfg.write_text(config(Path(tmp) / "state", sensors, ports))
        log = (Path(tmp) / "gateway.log").open("wb")
        gw = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--config",
            str(cfg),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    if metric(ports["http"], "vs121gw_mqtt_connected") == 1:
                        break
                await asyncio.sleep(0.2)
            print(
                f"soak: {args.duration:.0f} s at {args.rate:.0f} msg/s, {len(sensors)} sensors "
                f"({len(lorawan)} VS121 over MQTT, {len(pushed)} VS121-P over HTTP), Modbus TCP "
                f"and BACnet clients, {args.attackers} idle/slowloris HTTP connections"
            )
            stats = Stats()
            attacker = Attacker(ports["http"], args.attackers)
            attacker.start()
            until = time.monotonic() + args.duration
            await asyncio.gather(
                mqtt_load(broker.port, lorawan, args.rate / 2, until, stats),
                http_load(ports["http"], pushed, args.rate / 2, until, stats),
                modbus_load(ports["modbus"], sensors, until, stats),
                bacnet_load(ports["bacnet"], lorawan, until, stats),
                sampler(gw.pid, until, stats, attacker, every=args.sample),
            )
            attacker.stop()
            # Let the gateway drain what the broker still holds, then compare totals.
            expected = {s.id: (s.sent_in, s.sent_out) for s in sensors}
            counted: dict[str, tuple[int, int]] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                doc = json.loads(http_get(ports["http"], "/api/sensors"))["sensors"]
                counted = {
                    sid: (
                        int(doc[sid]["values"].get("gateway_total_in", 0)),
                        int(doc[sid]["values"].get("gateway_total_out", 0)),
                    )
                    for sid in expected
                }
                if counted == expected:
                    break
                await asyncio.sleep(1.0)
            rss, fds = proc_sample(gw.pid)
            log_bytes = os.fstat(log.fileno()).st_size
            exp_in = sum(v[0] for v in expected.values())
            exp_out = sum(v[1] for v in expected.values())
            got_in = sum(v[0] for v in counted.values())
            got_out = sum(v[1] for v in counted.values())
            wrong = [sid for sid in expected if counted.get(sid) != expected[sid]]
            print(
                f"messages sent: MQTT {stats.mqtt_sent}, HTTP acked {len(stats.acks)} "
                f"(HTTP retries {stats.http_errors})"
            )
            print(
                f"totals in/out: expected {exp_in}/{exp_out}, counted {got_in}/{got_out}; "
                f"sensors wrong: {len(wrong)} {wrong[:5]}"
            )
            print(
                f"HTTP ack latency (n={len(stats.acks)}): median "
                f"{pct(stats.acks, 0.5) * 1000:.1f} ms, p99 {pct(stats.acks, 0.99) * 1000:.1f} "
                f"ms, max {max(stats.acks, default=float('nan')) * 1000:.1f} ms"
            )
            print(
                "gateway's own acknowledgement delays (vs121gw_ack_seconds): "
                f"{ack_delays(ports['http'], 'mqtt')}; {ack_delays(ports['http'], 'http')}"
            )
            print(
                f"Modbus reads {stats.modbus_reads} (errors {stats.modbus_errors}), BACnet reads "
                f"{stats.bacnet_reads} (errors {stats.bacnet_errors})"
            )
            refused = metric(ports["http"], "vs121gw_connections_refused_total")
            print(
                f"attacker connections reopened {attacker.reopened} (refused {attacker.refused});"
                f" gateway refused {refused:.0f}; end RSS {rss:.1f} MiB, {fds} descriptors; "
                f"log {log_bytes} bytes"
            )
        finally:
            gw.terminate()
            await gw.wait()
            log.close()


if __name__ == "__main__":
    # Stopped early (SIGTERM as well as Ctrl-C): the gateway and the broker are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
