"""Commissioning page benchmark: page render time with 200 sensors, and what the live stream of
200 sensors reporting every second costs the gateway.

Runs the real daemon in its own process (200 simulated sensors, half VS121 and half VS121-P, the
built-in simulator stepping every second: each sensor reports once a second) and prints:
- GET time of each page (median and max of several), next to GET /healthz (the HTTP floor of the
  same server, measured interleaved);
- the gateway's CPU use (from /proc) with no page open and with live pages open, in alternating
  windows, and the difference: the cost of the live stream;
- what keeping each message for the page's message list adds to ingesting it (in this process,
  with and without the observer, interleaved).

    .venv/bin/python bench/bench_web.py [--window 15] [--clients 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.daemon import Daemon, new_http_port

from gateway.ingest import Ingest
from gateway.settings import load_settings
from gateway.sim_publish import uplink_body, uplink_topic
from gateway.state import GatewayState
from gateway.web.records import MessageLog

SENSORS = 200
PAGE_BUDGET_S = 1.0
STREAM_BUDGET = 0.05  # of one core


def config(state_dir: Path, http_port: int) -> str:
    lines = [
        f'[gateway]\nstate_dir = "{state_dir}"\nlog_level = "warning"\n',
        "[bacnet]\nenabled = false\n",
        "[modbus.tcp]\nenabled = false\n",
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n',
        "[simulate]\nenabled = true\nperiod = 1\n",
    ]
    for n in range(1, SENSORS + 1):
        ident = f'dev_eui = "24e124538c{n:06x}"' if n % 2 else f'serial = "{6900000000 + n}"'
        model = "vs121" if n % 2 else "vs121-p"
        lines.append(
            f'[[sensors]]\nid = "s{n:03d}"\nname = "Space {n:03d}"\nnumber = {n}\n'
            f'model = "{model}"\n{ident}\nregion_count = 4\nreport_interval = 5\n'
        )
    return "\n".join(lines)


def get(port: int, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        size = len(r.read())
    return time.perf_counter() - started, size


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Viewer(threading.Thread):
    """A live page's event stream, read to the end (as a browser does)."""

    def __init__(self, port: int, topic: str) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/events?topic={topic}"
        self.bytes = 0
        self.events = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with urllib.request.urlopen(self.url, timeout=30) as stream:
            while not self.stop.is_set():
                line = stream.readline()
                if not line:
                    return
                self.bytes += len(line)
                self.events += line.startswith(b"data: ")


def ingest_overhead(tmp: Path, messages: int = 20000, rounds: int = 5) -> None:
    logging.getLogger("gateway").setLevel(logging.ERROR)  # the bench's own faults are not news
    path = tmp / "ingest.toml"
    path.write_text(config(tmp / "ingest-state", 1))
    settings = load_settings(path)
    lorawan = [s for s in settings.sensors if s.model == "vs121"]
    payload = bytes.fromhex("04c90308000506cd05")  # 3 people in regions 1 and 3
    bodies = [
        (
            uplink_topic("chirpstack", s.dev_eui or ""),
            uplink_body("chirpstack", s.dev_eui or "", n, payload, 1e9),
        )
        for n in range(messages // len(lorawan) + 1)
        for s in lorawan
    ][:messages]

    def run(observed: bool) -> float:
        state = GatewayState(
            [(s.spec(), float(s.stale_seconds), float(s.report_interval)) for s in settings.sensors]
        )
        log = MessageLog()
        ingest = Ingest(settings.sensors, state, observe=log.observe if observed else None)
        started = time.perf_counter()
        for topic, body in bodies:
            ingest.uplink("bench", "chirpstack", topic, body)
            state.journal.clear()
        return (time.perf_counter() - started) / len(bodies)

    plain, kept = [], []
    for _ in range(rounds):
        plain.append(run(False))
        kept.append(run(True))
    p, k = statistics.median(plain), statistics.median(kept)
    print(
        f"ingest per message: {p * 1e6:.1f} µs without the message list, {k * 1e6:.1f} µs with it "
        f"(+{(k - p) * 1e6:.1f} µs, {k / p:.2f}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=15.0, help="seconds per CPU window")
    ap.add_argument("--rounds", type=int, default=3, help="idle/live window pairs")
    ap.add_argument("--clients", type=int, default=1, help="live sensor-table pages open")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = new_http_port()
        daemon = Daemon(Path(tmp), config(Path(tmp) / "state", port), http_port=port)
        daemon.start(timeout=60)
        try:
            time.sleep(3)  # a few simulator steps: every sensor has values and messages
            pages = ["/", "/sensors/s001", "/sensors/s002", "/points", "/alarms", "/gateway"]
            print(f"{SENSORS} sensors, each reporting every second (simulator)")
            print(f"{'page':<16}{'median ms':>10}{'max ms':>9}{'KiB':>8}   vs /healthz")
            worst = 0.0
            for path in pages:
                times, floor = [], []
                size = 0
                for _ in range(7):  # interleaved with the trivial response of the same server
                    t, size = get(port, path)
                    times.append(t)
                    floor.append(get(port, "/healthz")[0])
                med, top = statistics.median(times), max(times)
                worst = max(worst, top)
                ratio = med / statistics.median(floor)
                kib = size / 1024
                print(f"{path:<16}{med * 1e3:>10.1f}{top * 1e3:>9.1f}{kib:>8.0f}   {ratio:>6.0f}x")
            verdict = "OK" if worst < PAGE_BUDGET_S else "OVER BUDGET"
            budget = PAGE_BUDGET_S * 1e3
            print(f"slowest page load {worst * 1e3:.0f} ms (budget {budget:.0f} ms): {verdict}")

            idle, live = [], []
            sent = 0
            for _ in range(args.rounds):
                c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
                time.sleep(args.window)
                idle.append((cpu_seconds(daemon.pid) - c0) / (time.monotonic() - t0))
                viewers = [Viewer(port, "sensors") for _ in range(args.clients)]
                for v in viewers:
                    v.start()
                time.sleep(1.5)  # connected and past the first full refresh
                c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
                b0 = sum(v.bytes for v in viewers)
                e0 = sum(v.events for v in viewers)
                time.sleep(args.window)
                span = time.monotonic() - t0
                live.append((cpu_seconds(daemon.pid) - c0) / span)
                sent = int((sum(v.bytes for v in viewers) - b0) / span)
                events = (sum(v.events for v in viewers) - e0) / span / args.clients
                for v in viewers:
                    v.stop.set()
            idle_m, live_m = statistics.median(idle), statistics.median(live)
            cost = max(0.0, live_m - idle_m)
            print(
                f"gateway CPU, no page open: {idle_m * 100:.1f}% of a core; "
                f"{args.clients} live sensor table(s) open: {live_m * 100:.1f}%"
            )
            print(f"stream: {events:.1f} events/s per page, {sent / 1024:.0f} KiB/s in all")
            verdict = "OK" if cost < STREAM_BUDGET else "OVER BUDGET"
            print(
                f"live stream cost: {cost * 100:.2f}% of one core "
                f"(budget {STREAM_BUDGET * 100:.0f}%): {verdict}"
            )
        finally:
            daemon.stop()
        ingest_overhead(Path(tmp))


if __name__ == "__main__":
    main()
