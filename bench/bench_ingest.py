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
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.broker import MosquittoBroker  # noqa: E402

from gateway.app import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.sim_publish import uplink_body, uplink_topic  # noqa: E402
from gateway.state import Change  # noqa: E402

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


class Publisher:
    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def through_broker(port: int, n: int, rate: float | None) -> tuple[float, list[float]]:
    """Publish n messages (as fast as possible, or at `rate`/s); return msgs/s and latencies."""
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(settings(Path(tmp), port))
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        got = asyncio.Event()
        count = 0

        def on_change(change: Change) -> None:
            nonlocal count
            seq = change.values.get("a_to_a")
            if seq is None:
                return
            t = sent_at.get(int(seq))
            if t is not None:
                latencies.append(time.perf_counter() - t)
            count += 1
            if count >= n:
                got.set()

        gw.state.subscribe(on_change)
        stop = asyncio.Event()
        runner = asyncio.create_task(gw.run(stop))
        await gw.ready.wait()
        while gw.mqtt is None or not gw.mqtt.connected:
            await asyncio.sleep(0.01)
        pub = Publisher(port)
        # Sequence numbers start at 1 and never repeat, so every message changes a_to_a.
        bodies = [
            (EUIS[i % SENSORS], uplink_body("chirpstack", EUIS[i % SENSORS], i, payload(i + 1), 0))
            for i in range(n)
        ]

        def publish_all() -> None:
            interval = 0.0 if rate is None else 1.0 / rate
            next_at = time.perf_counter()
            for i, (eui, body) in enumerate(bodies):
                if interval:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    next_at += interval
                sent_at[i + 1] = time.perf_counter()
                pub.client.publish(uplink_topic("chirpstack", eui), body, qos=1)

        start = time.perf_counter()
        thread = threading.Thread(target=publish_all)
        thread.start()
        await asyncio.wait_for(got.wait(), timeout=300)
        elapsed = time.perf_counter() - start
        thread.join()
        pub.close()
        stop.set()
        await runner
        return n / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    rate = await in_process(20_000)
    print(f"in-process ingest (envelope+decode+state+durable): {rate:,.0f} messages/s")
    with tempfile.TemporaryDirectory() as tmp, MosquittoBroker(Path(tmp)) as broker:
        sustained, _ = await through_broker(broker.port, 20_000, None)
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
