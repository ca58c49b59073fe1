"""Snapshots are written beside the acknowledgements, not in front of them.

The periodic snapshot starts a fresh journal and then writes its files in the background; a
batch applied meanwhile is journaled and acknowledged at once. These tests hold a snapshot's file
writes at a gate (a store whose write_snapshots waits for the test to open it, then writes the
real files) and read the state directory as a restarted gateway would at each point, which is
what a `kill -9` at that moment leaves. Real files throughout.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from gateway.state import GatewayState, Report
from gateway.store import Committer, StateStore
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_000.0
SENSORS = ("s1", "s2")


def new_state() -> GatewayState:
    specs = [
        SensorSpec(id=sid, name=sid.upper(), number=n, model=Model.VS121, region_count=2)
        for n, sid in enumerate(SENSORS, start=1)
    ]
    return GatewayState([(spec, 600.0, 60.0) for spec in specs], clock=lambda: T0)


def crossing(state: GatewayState, sensor: str, i: int, n_in: int) -> None:
    data = {"timestamp": int(T0) + 60 * i, "people_in": n_in, "people_out": 0}
    state.apply(Report(sensor, data, T0 + i, f"{sensor}:k{i}", i))


class GatedStore(StateStore):
    """Snapshot files wait at a gate; the test opens it, or makes the write fail after
    `fail_after` files (the first ones really written, as a disk filling up would)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail_after: int | None = None
        self.attempts = 0

    def write_snapshots(self, docs: dict[str, bytes], high: int = 0) -> None:
        self.attempts += 1
        self.entered.set()
        self.gate.wait(30)
        if self.fail_after is None:
            super().write_snapshots(docs, high)
            return
        first = dict(list(docs.items())[: self.fail_after])
        super().write_snapshots(first, high)
        raise OSError(28, "No space left on device")


def open_store(directory: Path) -> GatedStore:
    store = GatedStore(directory)
    store.prepare()
    store.journal.open()
    return store


def restarted_totals(directory: Path, tmp_path: Path) -> dict[str, int]:
    """What a gateway started on a copy of `directory` as it is now would count."""
    copy = tmp_path / f"copy-{len(list(tmp_path.glob('copy-*')))}"
    shutil.copytree(directory, copy)
    state = new_state()
    store = StateStore(copy)
    store.prepare()
    store.load_into(state)
    return {sid: int(state.current(sid).get("gateway_total_in", 0)) for sid in SENSORS}


async def stopped(runner: asyncio.Task[None]) -> None:
    """Cancel the committer's loop and see it end by that cancellation."""
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def until(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


@pytest.mark.asyncio
async def test_acks_go_on_while_snapshot_files_are_written(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    state = new_state()
    store = open_store(directory)
    committer = Committer(state, store, snapshot_interval=0.0)
    runner = asyncio.create_task(committer.run())
    try:
        crossing(state, "s1", 1, 3)
        crossing(state, "s2", 1, 2)
        await committer.durable()
        await until(store.entered)  # the snapshot's files are being written, held at the gate
        assert committer.snapshot_running
        # Reports arriving now are acknowledged without waiting for those files.
        crossing(state, "s1", 2, 4)
        await asyncio.wait_for(committer.durable(), 5)
        assert committer.snapshot_running
        assert not store.gate.is_set()
        # A kill -9 now: the previous journal generation and the fresh one hold everything.
        assert restarted_totals(directory, tmp_path) == {"s1": 7, "s2": 2}
        store.gate.set()
        crossing(state, "s2", 2, 5)
        await committer.durable()
    finally:
        store.gate.set()
        await stopped(runner)
    assert await committer.close()
    store.journal.close()
    assert restarted_totals(directory, tmp_path) == {"s1": 7, "s2": 7}
    assert (directory / "sensors" / "s1.json").exists()


@pytest.mark.asyncio
async def test_failed_snapshot_keeps_the_journal_generation_its_files_lack(tmp_path: Path) -> None:
    """A snapshot that wrote only some files must not start yet another journal: the previous
    generation is all that holds the records of the sensors whose files failed."""
    directory = tmp_path / "state"
    state = new_state()
    store = open_store(directory)
    committer = Committer(state, store, snapshot_interval=0.0)
    # A complete snapshot first (a start's first one never drops a generation).
    store.gate.set()
    crossing(state, "s1", 0, 0)
    assert await committer.flush(snapshot=True)
    store.gate.clear()
    store.entered.clear()
    store.fail_after = 1  # s1's file is written, s2's is not
    runner = asyncio.create_task(committer.run())
    try:
        crossing(state, "s1", 1, 3)
        crossing(state, "s2", 1, 2)
        await committer.durable()
        await until(store.entered)
        store.gate.set()
        # The next batches are acknowledged; the failed snapshot is retried later.
        crossing(state, "s1", 2, 1)
        await asyncio.wait_for(committer.durable(), 5)
        crossing(state, "s1", 3, 1)
        await asyncio.wait_for(committer.durable(), 5)
    finally:
        await stopped(runner)
    await committer.settled()  # (a copy taken while files are written is no crash image)
    assert restarted_totals(directory, tmp_path) == {"s1": 5, "s2": 2}
    # The retry fails the same way (nothing else to write: the flush reports the failure);
    # the journals must still hold s2's record.
    assert not await committer.flush(snapshot=True)
    assert store.attempts >= 2
    assert restarted_totals(directory, tmp_path) == {"s1": 5, "s2": 2}
    # Once a snapshot writes every file, start-up needs nothing older.
    store.fail_after = None
    crossing(state, "s2", 2, 6)
    assert await committer.flush(snapshot=True)
    store.journal.close()
    assert restarted_totals(directory, tmp_path) == {"s1": 5, "s2": 8}


@pytest.mark.asyncio
async def test_shutdown_waits_for_a_snapshot_in_progress(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    state = new_state()
    store = open_store(directory)
    committer = Committer(state, store, snapshot_interval=0.0)
    runner = asyncio.create_task(committer.run())
    crossing(state, "s1", 1, 3)
    await committer.durable()
    await until(store.entered)
    await stopped(runner)
    crossing(state, "s1", 2, 2)
    closing = asyncio.create_task(committer.close())
    # While the files are held, close must not finish: it waits for them.
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done
    store.gate.set()
    assert await closing
    store.journal.close()
    # The final snapshot holds everything: the next start replays nothing (a mark is no record).
    assert [r for r in store.journal.records() if "mark" not in r] == []
    assert store.journal.records() == [{"mark": 2}]
    assert restarted_totals(directory, tmp_path) == {"s1": 5, "s2": 0}


@pytest.mark.asyncio
async def test_snapshots_cut_short_at_two_starts_in_a_row_lose_nothing(tmp_path: Path) -> None:
    """kill -9 after a snapshot started a fresh journal but before its files were written, then
    the same again in the next process: the records only the previous generation holds must
    survive the second process's snapshot."""
    first = tmp_path / "first"
    state = new_state()
    store = open_store(first)
    store.gate.set()
    committer = Committer(state, store, snapshot_interval=0.0)
    runner = asyncio.create_task(committer.run())
    crossing(state, "s1", 1, 3)
    await committer.durable()
    await until(store.entered)
    await committer.settled()  # a complete snapshot: s1's file holds 3
    store.gate.clear()
    store.entered.clear()
    crossing(state, "s1", 2, 4)
    crossing(state, "s2", 2, 5)
    await committer.durable()
    await until(store.entered)  # fresh journal started; files held at the gate
    crashed = tmp_path / "crashed"
    shutil.copytree(first, crashed)  # what kill -9 leaves now
    store.gate.set()
    await stopped(runner)
    await committer.close()
    store.journal.close()

    # The next process: it replays both generations, takes a report, and is killed the same way.
    state = new_state()
    store = GatedStore(crashed)
    store.prepare()
    store.load_into(state)
    store.journal.open()
    assert {sid: int(state.current(sid).get("gateway_total_in", 0)) for sid in SENSORS} == {
        "s1": 7,
        "s2": 5,
    }
    committer = Committer(state, store, snapshot_interval=0.0)
    runner = asyncio.create_task(committer.run())
    crossing(state, "s2", 3, 1)
    await committer.durable()
    await until(store.entered)
    assert restarted_totals(crashed, tmp_path) == {"s1": 7, "s2": 6}
    store.gate.set()
    await stopped(runner)
    await committer.close()
    store.journal.close()
    assert restarted_totals(crashed, tmp_path) == {"s1": 7, "s2": 6}
