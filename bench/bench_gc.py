"""What full line-crossing ledgers cost the garbage collector, and their save/load speed.

One sensor's ledger is filled through the ledger's own entry points as the gateway calls them:
three weeks of 10-minute reports (periodic counts with the sensor's time and accumulated
counters), one to three trigger reports without sensor time per period, every 25th periodic
report lost and delivered later as history. Its `to_json` document is then loaded into
`--sensors` ledgers, each from its own parse of the text (as a restart does), and the bench
prints, per run:

- the objects the cycle collector still tracks after a full collection, in all and per ledger;
- how long one full `gc.collect()` then takes (the pause every acknowledgement waits for);
- `to_json` and `load_json` per ledger, and the resident memory per ledger;
and, once, the time the ledger itself took per period of reports while it was filled.

    .venv/bin/python bench/bench_gc.py [--sensors 1000] [--rounds 3]

Measured on the 2-core machine, 1,000 sensors (medians): 6,210 objects tracked per ledger, a
full gc.collect() 0.93-0.99 s, load_json 34-35 ms and to_json 2.6-3.1 ms a ledger, 938 KiB
RSS a ledger. A variant keeping the entries as plain tuples inside tuples (which the collector
stops tracking) took the full collection to 5 ms, but each change then copies a 2,048-entry
tuple and, in bench_soak.py, the ack p99 rose with the ledgers (10 ms to 24 ms in 250 s, where
the present layout stays at 10-17 ms between collections), so it was not adopted: the
present layout's cost is a rare full collection, the variant's a steady one.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from typing import Any

from gateway.linecount import KEPT, LineLedger

INTERVAL = 600.0
T0 = 1_700_000_400.0
OFFSET = 37.0  # the sensor's clock runs this far behind the gateway's


def new_ledger() -> LineLedger:
    return LineLedger(interval=INTERVAL, window=60.0, modulo=1 << 16)


def fill(ledger: LineLedger, periods: int, seed: int = 1) -> float:
    """Three weeks of one sensor's reports; returns the seconds the ledger took for them."""
    rng = random.Random(seed)
    acc_in = acc_out = 65000  # wraps on the way
    lost: list[tuple[float, int, int, int, int]] = []
    spent = 0.0
    for k in range(1, periods + 1):
        end = T0 + INTERVAL * k
        n_in = n_out = 0
        calls: list[tuple[float, int, int]] = []
        for _ in range(rng.randint(1, 3)):
            at = end - INTERVAL + rng.uniform(20.0, INTERVAL - 20.0)
            i, o = rng.randint(0, 2), rng.randint(0, 2)
            if i or o:
                calls.append((at, i, o))
                n_in += i
                n_out += o
        acc_in = (acc_in + n_in) % (1 << 16)
        acc_out = (acc_out + n_out) % (1 << 16)
        started = time.perf_counter()
        for at, i, o in sorted(calls):
            ledger.trigger(at + OFFSET + rng.uniform(0.5, 3.0), None, i, o, history=False)
        received = end + OFFSET + rng.uniform(0.5, 3.0)
        if k % 25 == 0:
            lost.append((end, n_in, n_out, acc_in, acc_out))
        else:
            ledger.observe_clock(received, end)
            ledger.period(received, end, n_in, n_out, history=False)
            ledger.accumulated(received, end, acc_in, acc_out, history=False, period=(n_in, n_out))
        if k % 25 == 5 and lost:  # the sensor retransmits what the network lost
            for end_h, h_in, h_out, a_in, a_out in lost:
                ledger.period(received, end_h, h_in, h_out, history=True)
                ledger.accumulated(received, end_h, a_in, a_out, history=True, period=(h_in, h_out))
            lost.clear()
        spent += time.perf_counter() - started
    return spent


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tracked() -> int:
    return len(gc.get_objects())


def one_round(text: str, sensors: int) -> dict[str, float]:
    gc.collect()
    base_objects, base_rss = tracked(), rss_kib()
    ledgers: list[LineLedger] = []
    started = time.perf_counter()
    for _ in range(sensors):
        ledger = new_ledger()
        ledger.load_json(json.loads(text))
        ledgers.append(ledger)
    load_s = (time.perf_counter() - started) / sensors
    gc.collect()  # the first full collection after they were built; the daemon's next ones:
    pauses = []
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        pauses.append(time.perf_counter() - started)
    objects = tracked() - base_objects
    rss = rss_kib() - base_rss
    sample = ledgers[: min(len(ledgers), 100)]
    started = time.perf_counter()
    for ledger in sample:
        ledger.to_json()
    save_s = (time.perf_counter() - started) / len(sample)
    del ledgers, sample
    return {
        "tracked": objects,
        "collect_s": min(pauses),
        "load_ms": load_s * 1e3,
        "save_ms": save_s * 1e3,
        "rss_kib": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--periods", type=int, default=3 * 7 * 144, help="10-minute reports")
    args = parser.parse_args()

    ledger = new_ledger()
    fill_s = fill(ledger, args.periods)
    doc: dict[str, Any] = ledger.to_json()
    text = json.dumps(doc)
    sizes = {k: len(doc[k]) for k in ("spans", "triggers", "readings", "pending")}
    print(
        f"one ledger: {sizes} (kept at most {KEPT} each), {len(text) / 1024:.0f} KiB of JSON; "
        f"{args.periods} periods through the ledger in {fill_s:.2f} s "
        f"({fill_s / args.periods * 1e6:.0f} us a period)"
    )
    print(f"{args.sensors} ledgers loaded from it, {args.rounds} rounds:")
    results = []
    for r in range(args.rounds):
        res = one_round(text, args.sensors)
        results.append(res)
        print(
            f"  round {r + 1}: tracked after a full collection {res['tracked']:,.0f} "
            f"({res['tracked'] / args.sensors:,.1f} a ledger); full gc.collect() "
            f"{res['collect_s'] * 1e3:,.1f} ms; load_json {res['load_ms']:.2f} ms, "
            f"to_json {res['save_ms']:.2f} ms a ledger; RSS {res['rss_kib'] / args.sensors:,.0f} "
            "KiB a ledger"
        )
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"median: tracked {med['tracked'] / args.sensors:,.1f} a ledger, full collection "
        f"{med['collect_s'] * 1e3:,.1f} ms, load_json {med['load_ms']:.2f} ms, to_json "
        f"{med['save_ms']:.2f} ms, RSS {med['rss_kib'] / args.sensors:,.0f} KiB a ledger"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
