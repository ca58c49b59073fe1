"""The committer when snapshots cannot be written: acknowledgements go on through the journal,
and shutdown tells the truth about what is on disk. Real files; the snapshot directory is made
unusable by putting a plain file where it should be."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.state import GatewayState, Report
from gateway.store import Committer, StateStore
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_000.0


def new_state() -> GatewayState:
    spec = SensorSpec(id="s1", name="S1", number=1, model=Model.VS121, region_count=2)
    return GatewayState([(spec, 600.0, 60.0)], clock=lambda: T0)


def crossing(state: GatewayState, i: int, n_in: int) -> None:
    data = {"timestamp": int(T0) + 60 * i, "people_in": n_in, "people_out": 0}
    state.apply(Report("s1", data, T0 + i, f"k{i}", i))


def broken_store(directory: Path) -> StateStore:
    store = StateStore(directory)
    store.prepare()
    store.sensor_dir.rmdir()
    store.sensor_dir.write_text("not a directory")  # every snapshot write fails
    store.journal.open()
    return store


def reopened_total(directory: Path) -> int:
    (directory / "sensors").unlink()
    state = new_state()
    store = StateStore(directory)
    store.prepare()
    store.load_into(state)
    return int(state.current("s1")["gateway_total_in"])


@pytest.mark.asyncio
async def test_acks_go_on_through_the_journal_when_snapshots_fail(tmp_path: Path) -> None:
    state = new_state()
    store = broken_store(tmp_path)
    committer = Committer(state, store)
    acked: list[int] = []
    crossing(state, 1, 3)
    committer.after_durable(lambda: acked.append(1))
    assert await committer.flush(snapshot=True)
    assert acked == [1]
    assert committer.failing is None
    store.journal.close()
    assert reopened_total(tmp_path) == 3


@pytest.mark.asyncio
async def test_failed_final_snapshot_with_everything_journalled_is_not_lost_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = new_state()
    store = broken_store(tmp_path)
    committer = Committer(state, store)
    crossing(state, 1, 4)
    assert await committer.flush()  # journalled
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        assert await committer.close()
    assert "the journal has it all" in caplog.text
    assert reopened_total(tmp_path) == 4
