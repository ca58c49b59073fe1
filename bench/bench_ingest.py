"""Ingest benchmark: sustained messages/s and publish-to-state latency through a real broker.

Runs the gateway in this process (one event loop, no BACnet or Modbus subscribers) against a
mosquitto it starts on a free loopback port, and prints:
- in-process ingest rate (envelope + decode + state + durable batch), no broker;
- sustained rate through mosquitto (publisher in another thread, QoS 1, manual acks);
- publish-to-state latency at 200 messages/s (median, p99).

    .venv/bin/python bench/bench_ingest.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.broker import MosquittoBroker

from gateway.app import Gateway
from gateway.settings import Settings
from gateway.sim_publish import uplink_body, uplink_topic
from gateway.state import Change

SENSORS = 20
EUIS = [f"24e124538c{n:06x}" for n in range(1, SENSORS + 1)]


def settings(state_dir: Path, mqtt_port: int | None) -> Settings:
    mqtt_cfg: dict[str, object] = {"enabled": False}
    if mqtt_port is not None:
        mqtt_cfg = {
            "enabled": True,
            "port": mqtt_port,
            "client_id": f"bench-{time.monotonic_ns()}",
            "queue_size": 10000,
            "subscriptions": [
                {"name": "cs", "topic": "application/+/device/+/event/up", "envelope": "chirpstack"}
            ],
        }
    return Settings(
        gateway={"state_dir": state_dir, "log_level": "warning"},
        http={"enabled": False},
        mqtt=mqtt_cfg,
        sensors=[
            {
                "id": f"s{n}",
                "name": f"Sensor {n}",
                "number": n,
                "model": "vs121",
                "dev_eui": eui,
                "region_count": 8,
            }
            for n, eui in enumerate(EUIS, start=1)
        ],
    )


def payload(seq: int) -> bytes:
    # Occupancy + counts + a flow channel whose first field carries the sequence number.
    flow = b"\x09\xda" + (seq & 0xFFFF).to_bytes(2, "little") + bytes(6)
    return bytes.fromhex("04c9030800a106cd05") + flow


async def in_process(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(settings(Path(tmp), None))
        stop = asyncio.Event()
        runner = asyncio.create_task(gw.run(stop))
        await gw.ready.wait()
        bodies = [
            (EUIS[i % SENSORS], uplink_body("chirpstack", EUIS[i % SENSORS], i, payload(i), 0))
            for i in range(n)
        ]
        start = time.perf_counter()
        for i, (eui, body) in enumerate(bodies):
            gw.ingest.uplink("bench", "chirpstack", uplink_topic("chirpstack", eui), body)
            if i % 500 == 499:
                await gw.committer.durable()
        await gw.committer.durable()
        elapsed = time.perf_counter() - start
        stop.set()
        await runner
        return n / elapsed


PUBLISHER = """
import sys, time, json
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, rate, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
messages = [line.split(" ", 1) for line in open(path).read().splitlines()]
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
client.max_inflight_messages_set(100)
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port)
client.loop_start()
interval = 1.0 / rate if rate > 0 else 0.0
next_at = time.perf_counter()
sent = []
infos = []
for topic, body in messages:
    if interval:
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        next_at += interval
    sent.append(time.time())
    infos.append(client.publish(topic, body.encode(), qos=1))
for info in infos:
    info.wait_for_publish(60)
client.disconnect()
client.loop_stop()
print(json.dumps(sent))
"""


async def through_broker(port: int, n: int, rate: float) -> tuple[float, list[float]]:
    """A separate publisher process sends n messages (as fast as it can when rate is 0);
    returns the gateway's messages/s and each message's publish-to-state latency."""
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(settings(Path(tmp), port))
        seen_at: dict[int, float] = {}
        got = asyncio.Event()

        def on_change(change: Change) -> None:
            seq = change.values.get("a_to_a")
            if seq is not None:
                seen_at[int(seq)] = time.time()
                if len(seen_at) >= n:
                    got.set()

        gw.state.subscribe(on_change)
        stop = asyncio.Event()
        runner = asyncio.create_task(gw.run(stop))
        await gw.ready.wait()
        await gw.mqtt_up.wait()
        lines = Path(tmp) / "messages.txt"
        # Sequence numbers start at 1 and never repeat, so every message changes a_to_a.
        lines.write_text(
            "".join(
                f"{uplink_topic('chirpstack', EUIS[i % SENSORS])} "
                f"{uplink_body('chirpstack', EUIS[i % SENSORS], i, payload(i + 1), 0).decode()}\n"
                for i in range(n)
            )
        )
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PUBLISHER,
            str(port),
            str(rate),
            str(lines),
            stdout=asyncio.subprocess.PIPE,
        )
        await asyncio.wait_for(got.wait(), timeout=300)
        out, _ = await publisher.communicate()
        sent = json.loads(out)
        stop.set()
        await runner
        first, last = sent[0], max(seen_at.values())
        latencies = [seen_at[i + 1] - t for i, t in enumerate(sent)]
        return n / (last - first), latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    rate = await in_process(20_000)
    print(f"in-process ingest (envelope+decode+state+durable): {rate:,.0f} messages/s")
    # The broker may queue the whole burst for the gateway: its default limit of 1,000 queued
    # messages per client would drop the rest of a 20,000-message burst.
    extra = "max_queued_messages 100000\n"
    with (
        tempfile.TemporaryDirectory() as tmp,
        MosquittoBroker(Path(tmp), extra_config=extra) as broker,
    ):
        sustained, _ = await through_broker(broker.port, 20_000, 0)
        print(f"through mosquitto, QoS 1, manual ack:               {sustained:,.0f} messages/s")
        _, lat = await through_broker(broker.port, 2_000, 200.0)
        ms = [x * 1000 for x in lat]
        print(
            f"publish-to-state latency at 200 msg/s (n={len(ms)}): "
            f"median {statistics.median(ms):.2f} ms, p99 {pct(ms, 0.99):.2f} ms, "
            f"max {max(ms):.2f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
