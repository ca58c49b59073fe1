"""Durable state: a write-ahead journal plus atomic per-sensor snapshots.

Every change the state makes (a report applied, a reset) is a journal record. Records are
appended and fsynced in batches; only then do the callbacks waiting on them run, and those
acknowledge the messages to their sources (MQTT manual ack, HTTP 2xx). So `kill -9` at any moment
loses nothing a source considers delivered, and one fsync covers a whole burst.

Now and then (and at shutdown) the journal starts afresh and the changed sensors are written as
snapshots, each atomically (temporary file, fsync, rename, fsync of the directory); the periodic
ones are written in the background while new batches go to the fresh journal. At start the
snapshots are loaded and both journal generations replayed; each snapshot remembers the last
record it holds, so a record is never applied twice, even after a crash at any step.

One generation back is kept: a snapshot replaces `<sensor>.json` only after the old one became
`<sensor>.json.prev`, and a journal with records becomes `journal.jsonl.prev` when it starts
afresh. A snapshot that cannot be used (damaged, or written by a newer version) is set aside and
the previous one loaded, with both journals replayed from its sequence. Before snapshots are
written the journal gets a mark with the highest sequence they hold, so a snapshot that claims
more than the journals ever saw is recognised at start, rather than silently skipping records.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import fdlimit
from gateway.diskspace import SpaceReserve, free_bytes, is_full, mib
from gateway.errors import GatewayError
from gateway.state import STATE_VERSION, GatewayState

log = logging.getLogger("gateway.store")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
SNAPSHOT_INTERVAL_S = 60.0
SNAPSHOT_JOURNAL_BYTES = 8 * 1024 * 1024
SNAPSHOT_RETRY_S = 5.0  # a failed snapshot is tried again after this, not on every batch
SNAPSHOT_SLICE_S = 0.005  # longest stretch of snapshot serialisation between two yields
SNAPSHOT_YIELD_S = 0.05  # longest a background snapshot waits for a batch to be acknowledged
FLUSH_AT_PENDING = 16  # below a broker's usual in-flight window (mosquitto: 20)


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file, fsync it, rename over the target, fsync the directory."""
    tmp = _synced_temp(path, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _synced_temp(path: Path, data: bytes) -> Path:
    """`data` in a temporary file beside `path`, fsynced, ready to be renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


_TAIL_CHUNK = 1 << 20


def _after_last_newline(fd: int, size: int) -> int:
    """The offset just past the file's last newline (0 if it has none), read from the end."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


class Journal:
    """An append-only file of JSON lines, fsynced per batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous = path.with_name(path.name + ".prev")
        self._fd: int | None = None
        self.size = 0
        self._has_records = False
        # Batches are appended from worker threads while a snapshot writer may add its mark.
        self._lock = threading.Lock()

    def open(self) -> None:
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        self.size = os.fstat(self._fd).st_size
        self._has_records = self.size > 0
        # A torn last line (a crash mid-append) must not swallow the next record: cut it off,
        # however long it is (one batch can be megabytes).
        keep = _after_last_newline(self._fd, self.size)
        if keep != self.size:
            log.warning(
                "journal %s: cut %d bytes of an unfinished record (a crash mid-write)",
                self.path,
                self.size - keep,
            )
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
            self.size = keep
        if created:
            _fsync_dir(self.path.parent)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def append(self, data: bytes) -> None:
        with self._lock:
            self._append(data)

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self.open()  # a restart that failed half way (a full volume) left it closed
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except OSError:
            # Part of the batch may be on disk: remove it, the whole batch is retried.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
            raise
        self.size += len(data)
        self._has_records = True

    def mark(self, seq: int) -> None:
        """Record that snapshots up to `seq` are about to be written (see the module doc)."""
        if self._fd is not None:
            self.append(_dumps({"mark": seq}) + b"\n")

    def records(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line (crash mid-append, never acknowledged) is
        dropped, and a damaged line elsewhere is logged and skipped."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = raw.split(b"\n")
        out: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
                out.append(doc)
            except ValueError:
                if number != len(lines):
                    log.error("journal %s line %d is damaged; skipped", self.path, number)
        return out

    def restart(self) -> None:
        """Replace the journal with an empty one (after a snapshot made it redundant), keeping
        the old one as the previous generation when it held anything."""
        with self._lock:
            self.close()
            if self._has_records:
                os.replace(self.path, self.previous)
            atomic_write(self.path, b"")
            self.open()

    def previous_records(self) -> list[dict[str, Any]]:
        """The records of the previous generation (empty when there is none)."""
        return Journal(self.previous).records()


class StateStore:
    """Snapshots (one JSON file per sensor under ``sensors/``) and the journal."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sensor_dir = directory / "sensors"
        self.journal = Journal(directory / "journal.jsonl")
        self._lock_fd: int | None = None

    def prepare(self) -> None:
        self.sensor_dir.mkdir(parents=True, exist_ok=True, mode=0o750)

    def lock(self) -> None:
        """Hold an exclusive lock on the state directory for the life of the process."""
        path = self.directory / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise GatewayError(
                f"state directory {self.directory} is in use by another vs121-gateway "
                f"(pid {other}); give each gateway its own gateway.state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd  # closed by the OS when the process ends

    def path_for(self, sensor_id: str) -> Path:
        return self.sensor_dir / f"{_SAFE.sub('_', sensor_id)}.json"

    def load_into(self, state: GatewayState) -> int:
        """Restore snapshots, then replay the journal; damaged files are set aside, never fatal.
        Returns how many sensors had a snapshot."""
        restored = 0
        fallbacks: list[str] = []
        for sensor_id in list(state.ids()):
            loaded = self._load_snapshot(state, sensor_id)
            restored += loaded is not None
            if loaded == "previous":
                fallbacks.append(sensor_id)
        records = self.journal.previous_records() + self.journal.records()
        seqs = [r["s"] for r in records if type(r.get("s")) is int]
        marks = [r["mark"] for r in records if type(r.get("mark")) is int]
        high = max(seqs + marks, default=0)
        for sensor_id in fallbacks:
            self._check_fallback(sensor_id, state.sensors[sensor_id].applied_seq, seqs)
        ahead = {
            sid: _Ahead(state.sensors[sid].applied_seq)
            for sid in state.ids()
            if state.sensors[sid].applied_seq > high
        }
        replayed = 0
        state.replaying = True
        try:
            for record in records:
                if "mark" in record:
                    continue
                try:
                    check = ahead.get(str(record.get("id")))
                    admitted = record if check is None else check.admit(record, state)
                    if admitted is not None:
                        replayed += state.replay(admitted)
                except (KeyError, TypeError, ValueError) as exc:
                    log.error("journal record skipped: %s", exc)
        finally:
            state.replaying = False
        state.seq = max(state.seq, high)
        for sensor_id, check in ahead.items():
            check.report(sensor_id, high)
        if replayed:
            log.info("replayed %d journal records", replayed)
        state.journal.clear()
        return restored

    def _check_fallback(self, sensor_id: str, seq: int, seqs: list[int]) -> None:
        # The journals cover every record after the oldest one they hold; a previous snapshot
        # older than that may miss records that only an older journal had.
        oldest = min(seqs, default=None)
        if oldest is not None and seq < oldest - 1:
            log.error(
                "sensor %s: the previous snapshot (sequence %d) is older than the journals "
                "(from %d): records in between are lost; its totals may be low",
                sensor_id,
                seq,
                oldest,
            )
        else:
            log.warning(
                "sensor %s: restored from the previous snapshot (sequence %d) and the journal",
                sensor_id,
                seq,
            )

    def _load_snapshot(self, state: GatewayState, sensor_id: str) -> str | None:
        """Load the sensor's snapshot, else its previous one; which one, or None."""
        path = self.path_for(sensor_id)
        if self._load_file(state, sensor_id, path):
            return "current"
        previous = path.with_name(path.name + ".prev")
        if previous.exists() and self._load_file(state, sensor_id, previous):
            return "previous"
        if previous.exists() or path.exists():
            log.error("sensor %s: no usable snapshot; starting from the journal alone", sensor_id)
        return None

    def _load_file(self, state: GatewayState, sensor_id: str, path: Path) -> bool:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("state of sensor %s unreadable (%s)", sensor_id, exc)
            return False
        try:
            doc = json.loads(raw)
            version = doc.get("version") if isinstance(doc, dict) else None
            if type(version) is int and version > STATE_VERSION:
                reason = f"written by a newer vs121-gateway (state version {version}, this one"
                raise ValueError(f"{reason} reads {STATE_VERSION})")
            state.restore(sensor_id, doc)
        except (ValueError, TypeError, KeyError, ArithmeticError, AttributeError) as exc:
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            with contextlib.suppress(OSError):
                path.rename(aside)
            log.error(
                "state of sensor %s in %s unusable (%s); kept as %s",
                sensor_id,
                path.name,
                exc,
                aside.name,
            )
            return False
        return True

    def write_snapshots(self, docs: dict[str, bytes], high: int = 0) -> None:
        """Write the sensors' snapshots; `high` is the highest sequence any of them holds."""
        if not docs:
            return
        # Only an aid for the start-up check: a full disk must not stop the snapshot for it.
        with contextlib.suppress(OSError):
            self.journal.mark(high)
        for sensor_id, data in docs.items():
            path = self.path_for(sensor_id)
            tmp = _synced_temp(path, data)
            # The one being replaced becomes the previous generation, kept as a fallback.
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, path.with_name(path.name + ".prev"))
            os.replace(tmp, path)
        _fsync_dir(self.sensor_dir)


class _Ahead:
    """Replay for a snapshot whose sequence is past everything the journals hold: its records
    cannot be judged by sequence, so each is judged by its report key instead."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.applied = self.known = self.unkeyed = 0

    def admit(self, record: dict[str, Any], state: GatewayState) -> dict[str, Any] | None:
        key = record.get("k")
        if key is None:
            self.unkeyed += 1  # cannot tell whether the snapshot holds it; never doubled
            return None
        if key in state.sensors[record["id"]].seen:
            self.known += 1
            return None
        self.applied += 1
        self.seq += 1
        return {**record, "s": self.seq}  # renumbered past the snapshot, so it is applied

    def report(self, sensor_id: str, high: int) -> None:
        if self.applied or self.known or self.unkeyed:
            log.error(
                "sensor %s: its snapshot (sequence %d) is ahead of the journal (%d); journal "
                "records checked by report key: %d applied, %d already in the snapshot, %d "
                "without a key skipped",
                sensor_id,
                self.seq - self.applied,
                high,
                self.applied,
                self.known,
                self.unkeyed,
            )


class Committer:
    """Makes the state durable in batches, then runs the callbacks waiting on each batch.

    A periodic snapshot first starts a fresh journal (the old one becomes the previous
    generation), then serialises the changed sensors and writes their files in the background:
    batches keep going to the fresh journal and being acknowledged while the files are written
    and fsynced. Start-up replays both journal generations by sequence, so whatever a file does
    not hold yet is in one of them. Until a snapshot has written every one of its files, the
    next one does not start another journal (the previous generation still holds records that
    some sensors' files lack)."""

    def __init__(
        self,
        state: GatewayState,
        store: StateStore,
        *,
        batch_window: float = 0.002,
        snapshot_interval: float = SNAPSHOT_INTERVAL_S,
        on_write: Callable[[float], None] | None = None,
    ) -> None:
        self._state = state
        self._store = store
        self._window = batch_window
        self._snapshot_interval = snapshot_interval
        self._on_write = on_write
        self._callbacks: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._last_snapshot = time.monotonic()
        self.space = SpaceReserve(store.directory)
        self._force_snapshot = False  # the volume was full: compact the journal next
        self.failing: str | None = None  # why state cannot be written now (None: it can)
        self._failures = 0
        self._failing_since = 0.0
        self._snapshot_retry_at = 0.0
        self._background: asyncio.Task[None] | None = None  # snapshot files being written
        # The last snapshot did not write all its files, so the previous journal generation
        # holds records that only it has. Also true at start: a crash between a fresh journal
        # and the files leaves such records, and the replay cannot tell; the first snapshot
        # (of every sensor the replay touched) must be complete before a generation is dropped.
        self._incomplete = True
        self._snapshot_failing: str | None = None
        self._quiet = asyncio.Event()  # no batch is waiting or being written
        self._quiet.set()

    def after_durable(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything applied so far is on disk."""
        self._callbacks.append(callback)
        self._quiet.clear()
        self._wake.set()
        if len(self._callbacks) >= FLUSH_AT_PENDING:
            self._full.set()

    async def durable(self) -> None:
        """Wait until everything applied so far is on disk."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def _release() -> None:
            if not done.done():
                done.set_result(None)

        self.after_durable(_release)
        await done

    def request_flush(self) -> None:
        self._wake.set()

    @property
    def snapshot_running(self) -> bool:
        return self._background is not None and not self._background.done()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            # Let a burst gather so one fsync covers many messages, unless enough are waiting.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._window)
            self._wake.clear()
            self._full.clear()
            # After a failed snapshot, batches go to the journal for a while before the next try.
            backoff = time.monotonic() < self._snapshot_retry_at
            if self._force_snapshot and not backoff and not self.snapshot_running:
                # The journal cannot take more: these records wait for a snapshot to hold them.
                await self.flush(snapshot=True)
                continue
            due = time.monotonic() - self._last_snapshot >= self._snapshot_interval
            big = self._store.journal.size >= SNAPSHOT_JOURNAL_BYTES
            if await self.flush() and (due or big) and not backoff:
                await self._begin_snapshot()

    async def flush(self, *, snapshot: bool = False) -> bool:
        """Write what was applied; True once it is on disk (and its callbacks have run). With
        `snapshot`, also a whole snapshot, written before this returns."""
        callbacks, self._callbacks = self._callbacks, []
        records, self._state.journal = self._state.journal, []
        started = time.perf_counter()
        self._quiet.clear()
        try:
            await self._write(records, snapshot=snapshot)
        except OSError as exc:
            # Nothing is acknowledged: sources redeliver, and the next batch tries again.
            self._state.journal[:0] = records
            self._callbacks[:0] = callbacks
            self._failed(exc)
            self._wake.set()
            await asyncio.sleep(1.0)
            return False
        if records or snapshot:  # something reached the disk: writing works again
            self._recovered()
        if (records or snapshot) and self._on_write is not None:
            self._on_write(time.perf_counter() - started)
        for cb in callbacks:
            cb()
        if not self._callbacks:
            self._quiet.set()
        return True

    async def _write(self, records: list[dict[str, Any]], *, snapshot: bool) -> None:
        data = b"".join(_dumps(r) + b"\n" for r in records)
        journaled = not records
        if records:
            try:
                await asyncio.to_thread(self._store.journal.append, data)
                journaled = True
            except OSError as exc:
                if not snapshot:
                    if is_full(exc):
                        self._force_snapshot = True  # it empties the journal, using the reserve
                    raise
                # A full disk must not block the snapshot that empties the journal: the records
                # are durable once its files hold them.
        if not snapshot:
            return
        await self._settle()
        try:
            await self._rotate()
            await self._snapshot()
        except OSError as exc:
            self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
            if not (records and journaled):
                raise  # nothing else was written: this flush failed
            # Acknowledgements must not wait for the snapshot: the journal took the records.
            self._snapshot_failed(exc)

    async def _begin_snapshot(self) -> None:
        """Start a fresh journal, then write the snapshot files in the background."""
        if self.snapshot_running:
            return
        try:
            await self._rotate()
        except OSError as exc:
            self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
            self._snapshot_failed(exc)
            return
        self._background = asyncio.create_task(self._background_snapshot())

    async def _background_snapshot(self) -> None:
        try:
            await self._snapshot(background=True)
        except OSError as exc:
            self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
            self._snapshot_failed(exc)
        except Exception:  # a fault of ours: the journal still holds everything
            self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
            log.exception("snapshot failed; the journal keeps every record")

    async def settled(self) -> None:
        """Wait until no snapshot is being written."""
        await self._settle()

    async def _settle(self) -> None:
        """Wait for a background snapshot to finish (it never raises)."""
        if self._background is not None:
            await asyncio.shield(self._background)
            self._background = None

    async def _rotate(self) -> None:
        self._last_snapshot = time.monotonic()
        if self._incomplete:
            return  # the previous generation still holds records some files lack: keep it
        await asyncio.to_thread(self._with_reserves, self._store.journal.restart)

    async def _snapshot(self, *, background: bool = False) -> None:
        # Serialised here, in the loop, one sensor at a time with yields between slices, so no
        # acknowledgement waits behind the whole snapshot; in the background, each slice also
        # lets a waiting batch be written and acknowledged first. Each file holds its sensor's
        # applied_seq; records applied meanwhile go to the fresh journal, and replay skips those
        # a file already holds.
        dirty, self._state.dirty = self._state.dirty, set()
        try:
            docs: dict[str, bytes] = {}
            high = 0
            budget = time.perf_counter() + SNAPSHOT_SLICE_S
            for sid in dirty:
                sensor = self._state.sensors[sid]
                docs[sid] = _dumps(sensor.to_json())
                high = max(high, sensor.applied_seq)
                if time.perf_counter() >= budget:
                    await asyncio.sleep(0)
                    if background:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._quiet.wait(), SNAPSHOT_YIELD_S)
                    budget = time.perf_counter() + SNAPSHOT_SLICE_S
            self.space.size_for(sum(len(d) for d in docs.values()))
            # New files need free descriptors and room: the reserves cover a process that has
            # none left, so the journal can always be emptied.
            await asyncio.to_thread(self._with_reserves, self._store.write_snapshots, docs, high)
        except BaseException:
            self._state.dirty |= dirty
            self._incomplete = True
            raise
        self._incomplete = False
        self._force_snapshot = False
        self._snapshot_recovered()
        await asyncio.to_thread(self.space.ensure)

    def _snapshot_failed(self, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        if self._snapshot_failing is None:
            log.warning(
                "snapshot not written (%s); the journal keeps every record, retried in %.0f s",
                reason,
                SNAPSHOT_RETRY_S,
            )
        self._snapshot_failing = reason

    def _snapshot_recovered(self) -> None:
        if self._snapshot_failing is not None:
            log.info("snapshot written again")
        self._snapshot_failing = None

    def _failed(self, exc: OSError) -> None:
        self._failures += 1
        if self.failing is None:
            self._failing_since = time.monotonic()
            self.failing = f"cannot write state: {exc.strerror or exc}"
            log.error(
                "cannot write state in %s: %s; nothing is acknowledged until it can (%s free)",
                self._store.directory,
                exc,
                mib(free_bytes(self._store.directory)),
            )
        elif self._failures % 60 == 0:
            log.error(
                "still cannot write state: %d attempts in %.0f s (%s)",
                self._failures,
                time.monotonic() - self._failing_since,
                exc.strerror or exc,
            )

    def _recovered(self) -> None:
        if self.failing is not None:
            log.info(
                "state written again after %d failed attempts in %.0f s",
                self._failures,
                time.monotonic() - self._failing_since,
            )
        self.failing = None
        self._failures = 0

    def _with_reserves(self, fn: Callable[..., None], *args: Any) -> None:
        self.space.run(fdlimit.RESERVED.run, fn, *args)

    async def close(self) -> bool:
        """Final snapshot at shutdown (the next start needs no replay); False if it failed."""
        await self._settle()  # a snapshot still being written
        fresh = not self._incomplete  # the final snapshot starts a fresh journal itself
        saved = await self.flush(snapshot=True)
        if saved and not fresh and not self._incomplete and not self._state.journal:
            # This run's first snapshot could not drop a generation before its files were
            # written; now they are, and nothing is applied any more: the journal can go.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._with_reserves, self._store.journal.restart)
        if not saved and not self._state.journal:
            # Only the compaction failed: every record is in the journal, replayed at start.
            log.warning("final snapshot not written (%s); the journal has it all", self.failing)
            saved = True
        self._store.journal.close()
        return saved
