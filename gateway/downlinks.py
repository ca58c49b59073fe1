"""Commands sent to sensors as downlinks, and what became of each one.

Every command gets a record that moves through these states:

    publishing -> queued -> sent -> confirmed
                     \\        \\---> failed | timed_out
                      \\-----------> failed | timed_out
    publishing (at a restart) -> lost

- publishing: recorded, about to be handed to the MQTT client. A record still in this state
  when the gateway starts again was perhaps never published: it becomes `lost` and is never
  published again (a second reset or reboot is worse than none).
- queued: handed to the broker for the network server (TTS `down/queued` keeps it there).
- sent: the network server gave it to a radio gateway (ChirpStack `txack`, TTS `down/sent`).
- confirmed: the device acknowledged the frame (ChirpStack `ack`, TTS `down/ack`, Milesight ACK
  notification) or echoed the setting in an uplink (its reply on the application port). Which
  of the two happened is kept (`acknowledged`, `echoed`).
- failed: the network server or the device refused it (nack, failure event, or the device's
  own "not applied" result); `reason` says which.
- timed_out: no confirmation before its deadline. A later echo of exactly the value sent still
  turns it into confirmed: the sensor has the value, whatever the delay.

Events without the command's own id (ChirpStack and Milesight give none the gateway can set)
belong to the oldest unfinished command of that device: the network servers keep one queue per
device and deliver it in order.

Records survive restarts: the file is replaced atomically (write, fsync, rename) on every
change, which happens only when a command is sent or an event arrives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from gateway.codec.vs121_uplink import decode_uplink
from gateway.downlink_events import Event

log = logging.getLogger("gateway.downlinks")

State = Literal["publishing", "queued", "sent", "confirmed", "failed", "timed_out", "lost"]
PENDING: Final[frozenset[str]] = frozenset({"publishing", "queued", "sent"})
STATES: Final = ("publishing", "queued", "sent", "confirmed", "failed", "timed_out", "lost")
FILE_NAME: Final = "downlinks.json"
FILE_VERSION: Final = 1
RECORDS_KEPT: Final = 200

# The per-sensor "Config Status" word (see the catalog point `config_status`).
STATUS_PENDING: Final = 0x1  # a command is on its way
STATUS_CONFIRMED: Final = 0x2  # the last finished command was confirmed
STATUS_FAILED: Final = 0x4  # the last finished command failed (refused by NS or device)
STATUS_TIMED_OUT: Final = 0x8  # the last finished command timed out or was lost at a restart


@dataclass
class CommandRecord:
    """One downlink the gateway sent (or tried to)."""

    id: str
    sensor_id: str
    commands: list[dict[str, Any]]
    payload: str  # hex
    fport: int
    topic: str
    requester: str
    state: str
    created: float
    deadline: float
    expect: dict[str, Any] | None  # the settings echo that proves the device applied it
    acknowledged: bool = False
    echoed: bool = False
    reason: str = ""
    history: list[tuple[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["history"] = [list(step) for step in self.history]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CommandRecord:
        record = cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
        if record.state not in STATES:
            raise ValueError(f"unknown state {record.state!r}")
        record.history = [(str(s), float(t)) for s, t in doc.get("history", [])]
        return record


def expected_echo(payload: bytes) -> dict[str, Any] | None:
    """What the device's reply carries when it applied `payload`: the downlink decoded as a
    reply, since the VS121 echoes a setting in the downlink's own layout. None when the reply
    cannot be predicted (a layout the guide and the device disagree on)."""
    result = decode_uplink(payload, 85)
    if result["errors"] or not result["data"]:
        return None
    return dict(result["data"])


def _matches(expect: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    for key, want in expect.items():
        got = data.get(key)
        if isinstance(want, list):
            if not isinstance(got, list) or any(item not in got for item in want):
                return False
        elif got != want:
            return False
    return True


def _refuses(refused: Mapping[str, Any], expect: Mapping[str, Any]) -> bool:
    """Whether the device's "not applied" reply names the setting this command carried."""
    request = refused.get("request")
    return isinstance(request, Mapping) and bool(set(request) & set(expect))


class DownlinkTracker:
    """The records of the commands sent, their state changes and their file."""

    def __init__(
        self,
        state_dir: Path,
        *,
        on_change: Callable[[CommandRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = state_dir / FILE_NAME
        self._on_change = on_change
        self._clock = clock
        self._records: dict[str, CommandRecord] = {}
        self.routes: dict[str, dict[str, Any]] = {}

    # -- persistence ------------------------------------------------------------------------

    def load(self) -> list[CommandRecord]:
        """Read the file; returns the records found unfinished. A record caught while being
        published is reported lost, never published again."""
        try:
            doc = json.loads(self._path.read_bytes())
            records = [CommandRecord.from_json(r) for r in doc["records"]]
            routes = doc.get("routes", {})
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "downlink records in %s unreadable (%s); starting without them", self._path, exc
            )
            return []
        self._records = {r.id: r for r in records}
        self.routes = {str(k): dict(v) for k, v in routes.items() if isinstance(v, dict)}
        unfinished = []
        for record in records:
            if record.state == "publishing":
                self._move(record, "lost", "the gateway stopped while publishing it; not resent")
            elif record.state in PENDING:
                unfinished.append(record)
        if unfinished:
            log.info("%d downlink command(s) still awaiting confirmation", len(unfinished))
        self.save()
        return unfinished

    def save(self) -> None:
        records = sorted(self._records.values(), key=lambda r: r.created)[-RECORDS_KEPT:]
        self._records = {r.id: r for r in records}
        doc = {
            "version": FILE_VERSION,
            "records": [r.to_json() for r in records],
            "routes": self.routes,
        }
        tmp = self._path.with_suffix(".tmp")
        data = json.dumps(doc, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        with contextlib.suppress(OSError):  # the rename itself is durable once the dir is synced
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # -- lifecycle of one command -----------------------------------------------------------

    def new(
        self,
        *,
        sensor_id: str,
        commands: list[dict[str, Any]],
        payload: bytes,
        fport: int,
        topic: str,
        requester: str,
        timeout: float,
    ) -> CommandRecord:
        """Record a command about to be published (durable before it goes out)."""
        now = self._clock()
        record = CommandRecord(
            id=uuid.uuid4().hex[:16],
            sensor_id=sensor_id,
            commands=commands,
            payload=payload.hex(),
            fport=fport,
            topic=topic,
            requester=requester,
            state="publishing",
            created=now,
            deadline=now + timeout,
            expect=expected_echo(payload),
            history=[("publishing", now)],
        )
        self._records[record.id] = record
        self.save()
        return record

    def published(self, record: CommandRecord) -> None:
        self._move(record, "queued")
        self.save()

    def failed(self, record: CommandRecord, reason: str) -> None:
        self._move(record, "failed", reason)
        self.save()

    def on_event(self, sensor_id: str, event: Event) -> CommandRecord | None:
        """Apply a network-server event; returns the record it concerned, if any."""
        record = self._target(sensor_id, event.command_id)
        if record is None or event.kind == "ignored":
            return None
        if event.kind == "queued":
            return record  # already queued as far as the gateway is concerned
        if event.kind == "sent":
            if record.state in ("publishing", "queued"):
                self._move(record, "sent")
        elif event.kind == "ack":
            record.acknowledged = True
            self._move(record, "confirmed", f"acknowledged ({event.source})")
        else:
            self._move(record, "failed", event.reason or event.kind)
        self.save()
        return record

    def on_uplink(self, sensor_id: str, data: Mapping[str, Any]) -> list[CommandRecord]:
        """Look for settings echoes (or refusals) of this sensor's commands in an uplink."""
        done: list[CommandRecord] = []
        refused = data.get("device_response_result")
        for record in self.records(sensor_id):
            expect = record.expect
            if expect is None or record.echoed or record.state in ("failed", "lost"):
                continue
            if record.state == "confirmed":
                # Acknowledged earlier; the echo now shows the device applied it too.
                if _matches(expect, data):
                    record.echoed = True
                    log.info(
                        "sensor %s: command %s applied (the device echoed the setting)",
                        sensor_id,
                        record.id,
                    )
                    done.append(record)
                continue
            if isinstance(refused, Mapping) and _refuses(refused, expect):
                self._move(record, "failed", f"the device refused it ({refused.get('result')})")
                done.append(record)
                continue
            if _matches(expect, data):
                record.echoed = True
                self._move(record, "confirmed", "the device echoed the setting")
                done.append(record)
        if done:
            self.save()
        return done

    def expire(self, now: float | None = None) -> list[CommandRecord]:
        now = self._clock() if now is None else now
        late = [r for r in self._records.values() if r.state in PENDING and r.deadline <= now]
        for record in late:
            self._move(record, "timed_out", "no confirmation before the deadline")
        if late:
            self.save()
        return late

    # -- queries ----------------------------------------------------------------------------

    def get(self, command_id: str) -> CommandRecord | None:
        return self._records.get(command_id)

    def records(self, sensor_id: str | None = None) -> list[CommandRecord]:
        out = [r for r in self._records.values() if sensor_id in (None, r.sensor_id)]
        return sorted(out, key=lambda r: r.created)

    def status_word(self, sensor_id: str) -> int:
        records = self.records(sensor_id)
        word = STATUS_PENDING if any(r.state in PENDING for r in records) else 0
        finished = [r for r in records if r.state not in PENDING]
        if finished:
            last = finished[-1].state
            word |= {
                "confirmed": STATUS_CONFIRMED,
                "failed": STATUS_FAILED,
            }.get(last, STATUS_TIMED_OUT)
        return word

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for record in self._records.values():
            out[record.state] += 1
        return out

    # -- internals --------------------------------------------------------------------------

    def _open(self, sensor_id: str, *, with_timed_out: bool = False) -> Iterable[CommandRecord]:
        states = PENDING | {"timed_out"} if with_timed_out else PENDING
        return (r for r in self.records(sensor_id) if r.state in states)

    def _target(self, sensor_id: str, command_id: str | None) -> CommandRecord | None:
        if command_id is not None:
            record = self._records.get(command_id)
            if record is not None and record.sensor_id == sensor_id and record.state in PENDING:
                return record
            return None
        return next(iter(self._open(sensor_id)), None)

    def _move(self, record: CommandRecord, state: State, reason: str = "") -> None:
        if record.state == state:
            return
        now = self._clock()
        record.state = state
        record.history.append((state, now))
        if reason:
            record.reason = reason
        level = logging.WARNING if state in ("failed", "timed_out", "lost") else logging.INFO
        log.log(
            level,
            "sensor %s: command %s (%s, asked by %s) %s%s",
            record.sensor_id,
            record.id,
            ",".join(str(c.get("command")) for c in record.commands),
            record.requester,
            state.replace("_", " "),
            f": {reason}" if reason else "",
        )
        if self._on_change is not None:
            self._on_change(record)
