"""VS121 uplink decoder throughput: payloads per second for typical uplinks, one process, one core.

Run: .venv/bin/python bench/bench_decode.py [--count N] [--repeat R]
Each kind is decoded N times in a loop timed with time.perf_counter; the best of R runs is printed.
The goal is 200,000 payloads/s for a typical periodic uplink.
"""

from __future__ import annotations

import argparse
import time

from gateway.codec.vs121_uplink import decode_uplink

GOAL = 200_000

# The guide's chapter-7 examples, plus a batch of stored records as the device resends them.
KINDS: dict[str, str] = {
    "basic info": "ff0101ff086600b0940976ff090100ff1f1f07004b",
    "occupancy periodic": "04c9030800a106cd05",
    "counting periodic": "07d5000100000000000306cd050ee40004000b00",
    "line cross periodic": "0f85e8ba146605cc020001000dcc10000100",
    "line cross trigger": "10f701000300",
    "flow periodic": (
        "09da00010000000000000ada00000000000000000bda00000000000000000cda0000000000000000"
    ),
    "history (1 record)": "20ce0d755b630307",
    "history (4 records)": (
        "20ce0d755b63030720ce0d755b63020300010020ce0d755b63100010000120ce0d755b63110004000b00"
    ),
    "config reply (f8)": "f8870b00",
}


def measure(payload: bytes, count: int, repeat: int) -> float:
    """Best payloads/s over `repeat` runs of `count` decodes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(count):
            decode_uplink(payload)
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> int:
    parser = argparse.ArgumentParser(description="VS121 uplink decoder throughput")
    parser.add_argument("--count", type=int, default=200_000, help="decodes per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per kind; the best is shown")
    args = parser.parse_args()

    print(f"decode_uplink, {args.count:,} payloads per run, best of {args.repeat}")
    print(f"{'kind':<22} {'bytes':>5} {'payloads/s':>12} {'us/payload':>11}")
    slowest = float("inf")
    for kind, text in KINDS.items():
        payload = bytes.fromhex(text)
        result = decode_uplink(payload)
        if result["errors"] or result["warnings"]:  # measure the real path, not an early stop
            raise SystemExit(f"{kind}: bench payload does not decode cleanly: {result}")
        rate = measure(payload, args.count, args.repeat)
        if "periodic" in kind:
            slowest = min(slowest, rate)
        print(f"{kind:<22} {len(payload):>5} {rate:>12,.0f} {1e6 / rate:>11.2f}")
    verdict = "meets" if slowest >= GOAL else "MISSES"
    print(f"slowest periodic uplink: {slowest:,.0f}/s, {verdict} the {GOAL:,}/s goal")
    return 0 if slowest >= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
