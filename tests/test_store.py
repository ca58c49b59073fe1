"""The journal and snapshots: what survives a crash at each step, and what is never doubled."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from gateway.state import GatewayState, Report
from gateway.store import Committer, Journal, StateStore, atomic_write
from objects.catalog import Model
from objects.pointmap import SensorSpec

T0 = 1_700_000_000.0


def new_state() -> GatewayState:
    specs = [
        SensorSpec(id=f"s{n}", name=f"S{n}", number=n, model=Model.VS121, region_count=2)
        for n in (1, 2)
    ]
    return GatewayState([(spec, 600.0, 60.0) for spec in specs], clock=lambda: T0)


def crossing(state: GatewayState, sensor: str, i: int, n_in: int) -> None:
    data = {"timestamp": int(T0) + 60 * i, "people_in": n_in, "people_out": 0}
    state.apply(Report(sensor, data, T0 + i, f"k{i}", i))


def total_in(state: GatewayState, sensor: str) -> int:
    return int(state.current(sensor).get("gateway_total_in", 0))


def reopen(directory: Path) -> GatewayState:
    state = new_state()
    store = StateStore(directory)
    store.prepare()
    store.load_into(state)
    return state


async def committed(directory: Path, steps: list[tuple[str, int, int]], *, snapshot: bool) -> None:
    state = new_state()
    store = StateStore(directory)
    store.prepare()
    store.load_into(state)
    store.journal.open()
    committer = Committer(state, store)
    for sensor, i, n in steps:
        crossing(state, sensor, i, n)
    await committer.flush(snapshot=snapshot)
    store.journal.close()


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_journal_alone_restores_everything(tmp_path: Path) -> None:
    asyncio.run(committed(tmp_path, [("s1", 1, 3), ("s2", 2, 4), ("s1", 3, 1)], snapshot=False))
    assert not list((tmp_path / "sensors").iterdir())  # nothing but the journal yet
    state = reopen(tmp_path)
    assert total_in(state, "s1") == 4
    assert total_in(state, "s2") == 4


def test_snapshot_then_journal_never_doubles(tmp_path: Path) -> None:
    asyncio.run(committed(tmp_path, [("s1", 1, 3)], snapshot=True))
    asyncio.run(committed(tmp_path, [("s1", 2, 5)], snapshot=False))
    state = reopen(tmp_path)
    assert total_in(state, "s1") == 8
    # Reopening again (replaying the same journal on the same snapshot) changes nothing.
    assert total_in(reopen(tmp_path), "s1") == 8


def test_crash_between_snapshot_and_journal_restart(tmp_path: Path) -> None:
    asyncio.run(committed(tmp_path, [("s1", 1, 3), ("s1", 2, 2)], snapshot=False))
    journal = (tmp_path / "journal.jsonl").read_bytes()
    # A snapshot written, but the process died before the journal was emptied.
    state = reopen(tmp_path)
    doc = json.dumps(state.sensors["s1"].to_json()).encode()
    atomic_write(tmp_path / "sensors" / "s1.json", doc)
    assert (tmp_path / "journal.jsonl").read_bytes() == journal
    assert total_in(reopen(tmp_path), "s1") == 5


def test_torn_last_line_is_dropped_and_damaged_line_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(committed(tmp_path, [("s1", 1, 3), ("s1", 2, 2)], snapshot=False))
    path = tmp_path / "journal.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"{garbage\n" + lines[0] + lines[1][:10])
    state = reopen(tmp_path)
    assert total_in(state, "s1") == 3  # the first record; the torn second was never acknowledged
    assert "line 1 is damaged" in caplog.text


def test_damaged_snapshot_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(committed(tmp_path, [("s1", 1, 3)], snapshot=True))
    (tmp_path / "sensors" / "s1.json").write_text('{"version": 1, "id": "s1"')
    state = reopen(tmp_path)
    # No previous snapshot yet: the previous journal still holds the record.
    assert total_in(state, "s1") == 3
    assert any(p.name.startswith("s1.json.damaged-") for p in (tmp_path / "sensors").iterdir())
    assert "state of sensor s1 in s1.json unusable" in caplog.text


def test_callbacks_run_only_after_the_batch_is_written(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        state = new_state()
        store = StateStore(tmp_path)
        store.prepare()
        store.journal.open()
        committer = Committer(state, store)
        events: list[str] = []
        crossing(state, "s1", 1, 2)
        committer.after_durable(
            lambda: events.append(
                "acked with journal " + str(len((tmp_path / "journal.jsonl").read_bytes()) > 0)
            )
        )
        assert events == []
        await committer.flush()
        return events

    assert asyncio.run(scenario()) == ["acked with journal True"]


def test_reset_is_journaled(tmp_path: Path) -> None:
    async def scenario() -> None:
        state = new_state()
        store = StateStore(tmp_path)
        store.prepare()
        store.journal.open()
        committer = Committer(state, store)
        crossing(state, "s1", 1, 7)
        state.reset_totals("s1")
        crossing(state, "s1", 2, 1)
        await committer.flush()
        store.journal.close()

    asyncio.run(scenario())
    assert total_in(reopen(tmp_path), "s1") == 1


def test_state_directory_is_locked_against_a_second_gateway(tmp_path: Path) -> None:
    import subprocess
    import sys

    first = StateStore(tmp_path)
    first.prepare()
    first.lock()
    # flock locks are per open file: a second process must be refused while we hold it.
    code = (
        "import sys\nfrom pathlib import Path\nfrom gateway.store import StateStore\n"
        "from gateway.errors import GatewayError\n"
        "s = StateStore(Path(sys.argv[1]))\ntry:\n    s.lock()\nexcept GatewayError as e:\n"
        "    print(e)\n    sys.exit(3)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 3
    assert "is in use by another vs121-gateway" in out.stdout


def test_torn_tail_is_cut_before_the_next_append(tmp_path: Path) -> None:
    asyncio.run(committed(tmp_path, [("s1", 1, 3)], snapshot=False))
    path = tmp_path / "journal.jsonl"
    path.write_bytes(path.read_bytes() + b'{"s":2,"id":"s1","d":{"peo')  # crash mid-append
    asyncio.run(committed(tmp_path, [("s1", 3, 4)], snapshot=False))
    assert total_in(reopen(tmp_path), "s1") == 7
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["s"] for line in lines] == [1, 2]


@pytest.mark.parametrize("torn", [3 * (1 << 20) // 2, 5 * (1 << 20) + 7])
def test_torn_tail_over_a_mebibyte_is_cut_whole(tmp_path: Path, torn: int) -> None:
    # A batch of many records torn mid-write: more than one read chunk without a newline.
    asyncio.run(committed(tmp_path, [("s1", 1, 3)], snapshot=False))
    path = tmp_path / "journal.jsonl"
    complete = path.stat().st_size
    with path.open("ab") as f:
        f.write(b'{"s":2,"id":"s1","d":{"x":"' + b"y" * torn)
    asyncio.run(committed(tmp_path, [("s1", 3, 4)], snapshot=False))
    # The record acknowledged after the tear survives the next start, and the one after it.
    assert total_in(reopen(tmp_path), "s1") == 7
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["s"] for line in lines] == [1, 2]
    assert path.stat().st_size < complete * 3
    asyncio.run(committed(tmp_path, [("s1", 5, 1)], snapshot=False))
    assert total_in(reopen(tmp_path), "s1") == 8


def test_journal_without_any_newline_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b"x" * (2 * (1 << 20) + 1))
    journal = Journal(path)
    journal.open()
    journal.append(b'{"a":1}\n')
    journal.close()
    assert journal.records() == [{"a": 1}]


def test_failed_append_leaves_no_partial_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.open()
    journal.append(b'{"a":1}\n')

    class DiskFullError(OSError):
        pass

    real_write = os.write
    calls = {"n": 0}

    def half_then_fail(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:5])  # a short write ...
        raise DiskFullError(28, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(DiskFullError):
        journal.append(b'{"b":2}\n')
    monkeypatch.undo()
    journal.append(b'{"c":3}\n')
    journal.close()
    assert journal.records() == [{"a": 1}, {"c": 3}]


def three_generations(directory: Path) -> None:
    """s1: 3 in a snapshot, +5 in the next snapshot, +1 in the journal only (9 in all)."""
    asyncio.run(committed(directory, [("s1", 1, 3)], snapshot=True))
    asyncio.run(committed(directory, [("s1", 2, 5), ("s2", 3, 2)], snapshot=True))
    asyncio.run(committed(directory, [("s1", 4, 1)], snapshot=False))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (b'{"version": 2, "id": "s1", "val', "Unterminated string"),
        (b"\x00" * 100, "Expecting value"),
        (None, "written by a newer vs121-gateway (state version 99, this one reads 2)"),
    ],
    ids=["cut", "zeros", "newer-version"],
)
def test_unusable_snapshot_falls_back_to_the_previous_generation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: bytes | None, reason: str
) -> None:
    three_generations(tmp_path)
    current = tmp_path / "sensors" / "s1.json"
    assert (tmp_path / "sensors" / "s1.json.prev").exists()
    if damage is None:
        doc = json.loads(current.read_bytes())
        doc["version"] = 99
        doc["lines"]["total_in"] = 1234  # a newer gateway's numbers are never half-read
        damage = json.dumps(doc).encode()
    current.write_bytes(damage)
    state = reopen(tmp_path)
    assert total_in(state, "s1") == 9
    assert total_in(state, "s2") == 2
    assert reason in caplog.text
    assert "sensor s1: restored from the previous snapshot" in caplog.text
    aside = [p for p in (tmp_path / "sensors").iterdir() if p.name.startswith("s1.json.damaged-")]
    assert [p.read_bytes() for p in aside] == [damage]  # kept for a look, never deleted


def test_fallback_then_snapshot_then_restart_never_doubles(tmp_path: Path) -> None:
    three_generations(tmp_path)
    (tmp_path / "sensors" / "s1.json").write_bytes(b"{")
    asyncio.run(committed(tmp_path, [("s1", 5, 10)], snapshot=True))
    assert total_in(reopen(tmp_path), "s1") == 19
    asyncio.run(committed(tmp_path, [("s1", 6, 1)], snapshot=False))
    assert total_in(reopen(tmp_path), "s1") == 20
    assert total_in(reopen(tmp_path), "s1") == 20


def test_snapshot_ahead_of_the_journal_skips_nothing_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(committed(tmp_path, [("s1", 1, 3)], snapshot=True))
    asyncio.run(committed(tmp_path, [("s1", 2, 5), ("s1", 1, 3)], snapshot=False))  # + a repeat
    path = tmp_path / "sensors" / "s1.json"
    doc = json.loads(path.read_bytes())
    doc["applied_seq"] = 1000  # e.g. a snapshot from another state directory
    atomic_write(path, json.dumps(doc).encode())
    state = reopen(tmp_path)
    assert total_in(state, "s1") == 8  # k2 was not in the snapshot: applied; k1 was: not again
    assert "sensor s1: its snapshot (sequence 1000) is ahead of the journal" in caplog.text
    assert "1 applied, 1 already in the snapshot" in caplog.text
    assert total_in(reopen(tmp_path), "s1") == 8
    # New records are numbered past the snapshot, so the next start applies them normally.
    asyncio.run(committed(tmp_path, [("s1", 7, 2)], snapshot=True))
    asyncio.run(committed(tmp_path, [("s1", 8, 1)], snapshot=False))
    assert total_in(reopen(tmp_path), "s1") == 11


def test_snapshot_journal_marks_do_not_make_a_normal_start_ahead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    three_generations(tmp_path)
    asyncio.run(committed(tmp_path, [], snapshot=True))
    asyncio.run(committed(tmp_path, [], snapshot=True))
    assert total_in(reopen(tmp_path), "s1") == 9
    assert "ahead" not in caplog.text
    assert "previous snapshot" not in caplog.text
