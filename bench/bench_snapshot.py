"""How long a periodic snapshot holds the event loop, and acknowledgements, up.

100 sensors whose state has grown (1,024 remembered report keys and a week of periods each), all
dirty. Two measurements, each alternating the gateway's way with the old way in the same run:

- loop stall: the committer writes a snapshot while a probe task measures how late the loop runs
  it (1 ms period); serialising in slices between yields against in one go;
- acknowledgement wait: a report is applied and waited for (`durable`) every 2 ms while the
  periodic snapshot is written; its files written in the background after a fresh journal starts
  (now) against the snapshot written inside the batch that triggered it (before), when every
  acknowledgement arriving meanwhile waited for the files and their fsyncs.

    .venv/bin/python bench/bench_snapshot.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from gateway import store
from gateway.state import GatewayState, Report
from gateway.store import Committer, StateStore
from objects.catalog import Model
from objects.pointmap import SensorSpec

SENSORS = 100
T0 = 1_700_000_000


def grown_state() -> GatewayState:
    specs = [
        SensorSpec(id=f"s{n}", name=f"S{n}", number=n, model=Model.VS121, region_count=8)
        for n in range(1, SENSORS + 1)
    ]
    state = GatewayState([(s, 600.0, 600.0) for s in specs])
    for spec in specs:
        for i in range(1024):
            data = {"people_count_all": i % 7, "timestamp": T0 + 600 * i, "people_in": i % 3}
            state.apply(Report(spec.id, data, T0 + 600 * i, f"cs:{spec.id}:{i:032x}", i))
    state.journal.clear()
    return state


async def stall_during_snapshot(state: GatewayState, directory: Path) -> float:
    """The longest the loop went without running the probe while one snapshot was written."""
    st = StateStore(directory)
    st.prepare()
    st.journal.open()
    committer = Committer(state, st)
    state.dirty = set(state.ids())
    worst = 0.0
    running = True

    async def probe() -> None:
        nonlocal worst
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.01)
    await committer.flush(snapshot=True)
    running = False
    await task
    st.journal.close()
    return worst


async def ack_waits(state: GatewayState, directory: Path, *, background: bool) -> list[float]:
    """Each acknowledgement's wait, from a little before a snapshot until it is on disk."""
    st = StateStore(directory)
    st.prepare()
    st.journal.open()
    committer = Committer(state, st, snapshot_interval=0.0 if background else 3600.0)
    state.dirty = set(state.ids())
    done = asyncio.Event()

    async def old_batches() -> None:
        # The batch that found the snapshot due wrote it before its callbacks ran.
        await asyncio.sleep(0.01)
        await committer.flush(snapshot=True)
        done.set()
        while True:
            await asyncio.sleep(0.002)
            await committer.flush()

    async def watch() -> None:
        # The committer starts the snapshot on its own; a benchmark may poll its flag.
        while not committer.snapshot_running:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        while committer.snapshot_running:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        done.set()

    batches = asyncio.create_task(committer.run() if background else old_batches())
    watcher = asyncio.create_task(watch()) if background else None
    waits: list[float] = []
    i = 0
    while not done.is_set() or i < 20:
        i += 1
        sid = f"s{1 + i % SENSORS}"
        data = {"people_count_all": i % 7}
        state.apply(Report(sid, data, T0 + 10**6 + i, f"ack:{directory.name}:{i}", 10**6 + i))
        started = time.perf_counter()
        await committer.durable()
        waits.append(time.perf_counter() - started)
        await asyncio.sleep(0.002)
    batches.cancel()
    for task in (batches, watcher):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await committer.close()
    st.journal.close()
    return waits


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    state = grown_state()
    size = sum(len(json.dumps(s.to_json())) for s in state.sensors.values()) / SENSORS
    sliced: list[float] = []
    whole: list[float] = []
    slice_s = store.SNAPSHOT_SLICE_S
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            store.SNAPSHOT_SLICE_S = slice_s
            sliced.append(await stall_during_snapshot(state, Path(tmp) / f"a{r}"))
            store.SNAPSHOT_SLICE_S = 1e9  # one go, as the snapshot used to be serialised
            whole.append(await stall_during_snapshot(state, Path(tmp) / f"b{r}"))
    store.SNAPSHOT_SLICE_S = slice_s
    now: list[float] = []
    before: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            now += await ack_waits(state, Path(tmp) / f"c{r}", background=True)
            before += await ack_waits(state, Path(tmp) / f"d{r}", background=False)
    print(f"{SENSORS} dirty sensors, {size / 1024:.0f} KiB of state each")
    for name, values in (("in slices (now)", sliced), ("in one go (before)", whole)):
        ms = [v * 1000 for v in values]
        print(
            f"loop held up by the snapshot, {name:>18}: median {statistics.median(ms):6.1f} ms, "
            f"max {max(ms):6.1f} ms"
        )
    for name, values in (("files in background (now)", now), ("inside the batch (before)", before)):
        ms = [v * 1000 for v in values]
        print(
            f"ack wait during a snapshot, {name:>25}: n={len(ms)} median "
            f"{statistics.median(ms):6.1f} ms, p99 {pct(ms, 0.99):7.1f} ms, max {max(ms):7.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
