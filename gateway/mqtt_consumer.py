"""Drains the MQTT source and never acknowledges a message whose effect is not durable.

A message is handled by `handle(msg)`, which acknowledges it itself (at once when there is
nothing to keep, after the journal write otherwise). When handling raises:
- if the state changed before the fault (the journal holds the message's record), the message is
  acknowledged once that record is on disk, like any other applied message;
- otherwise the message had no effect and is *not* acknowledged. It is tried again after a
  growing delay. A resource fault (OSError: out of descriptors, disk full) is retried for as long
  as it lasts; any other fault is a bug that would fail forever, so after `BUG_ATTEMPTS` tries the
  message is parked: written to ``<state_dir>/parked/`` (atomically, with its topic and payload)
  and only then acknowledged. If even parking fails it stays unacknowledged and is retried.

At start, before the first message from the broker, every parked message is tried once more (the
fault may have been fixed by an upgrade since): one that goes through is deleted once its effect
is durable, one that fails again stays parked, with one log line.

Faults are logged once per kind and then summarised, so a fault on every message cannot flood
the log.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from gateway import fdlimit
from gateway.logsummary import Summariser
from gateway.mqtt_source import MqttMessage, MqttSource
from gateway.store import atomic_write

log = logging.getLogger("gateway.mqtt")

BUG_ATTEMPTS: Final = 3
RETRY_FIRST_S: Final = 0.2
RETRY_MAX_S: Final = 10.0
_PARKED_NAMES: Final = itertools.count(1)

# Hooks: (event) with event in "retried", "parked", "failed", "replayed".
EventHook = Callable[[str], None]


class MqttConsumer:
    def __init__(
        self,
        source: MqttSource,
        handle: Callable[[MqttSource, MqttMessage], None],
        *,
        progress: Callable[[], int],
        after_durable: Callable[[Callable[[], None]], None],
        park_dir: Path,
        on_event: EventHook | None = None,
    ) -> None:
        self._source = source
        self._handle = handle
        self._progress = progress
        self._after_durable = after_durable
        self._park_dir = park_dir
        self._on_event = on_event
        self._retries: set[asyncio.Task[None]] = set()
        self._log = Summariser(log)

    @property
    def retrying(self) -> int:
        """Messages held unacknowledged, waiting to be tried again."""
        return len(self._retries)

    async def run(self) -> None:
        await self.replay_parked()
        try:
            while True:
                msg = await self._source.get()
                failed = self._attempt(msg)
                if failed is not None:
                    task = asyncio.create_task(self._retry(msg, failed))
                    self._retries.add(task)
                    task.add_done_callback(self._retries.discard)
        finally:
            for task in list(self._retries):
                task.cancel()  # unacknowledged: the broker delivers them again next time

    async def replay_parked(self) -> None:
        """Try each parked message once more, oldest first (see the module docstring)."""
        paths = await asyncio.to_thread(_parked_files, self._park_dir)
        for path in paths:
            msg = await asyncio.to_thread(self._parked_message, path)
            if msg is None:
                continue
            before = self._progress()
            try:
                self._handle(self._source, msg)
            except Exception as exc:  # still failing: it stays parked
                if self._progress() == before:
                    log.error("MQTT: parked message %s still fails (%r); kept", path.name, exc)
                    continue
            self._after_durable(functools.partial(_forget_parked, path))
            self._event("replayed")

    def _parked_message(self, path: Path) -> MqttMessage | None:
        try:
            doc = json.loads(path.read_bytes())
            topic = str(doc["topic"])
            payload = base64.b64decode(doc["payload_b64"], validate=True)
            received_at = float(doc["received_at"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("MQTT: parked message %s unreadable (%s); kept", path.name, exc)
            return None
        # QoS 0: there is nothing to acknowledge to the broker any more.
        return MqttMessage(
            topic=topic,
            payload=payload,
            qos=0,
            retain=False,
            mid=0,
            subscription=self._source.subscription_for(topic),
            received_at=received_at,
        )

    def _attempt(self, msg: MqttMessage) -> Exception | None:
        """Handle once; the fault if the message had no effect and is left unacknowledged."""
        before = self._progress()
        try:
            self._handle(self._source, msg)
        except Exception as exc:  # any fault: decide below whether the message took effect
            if self._progress() != before:
                # Its record is in the journal: acknowledge once that is on disk.
                self._after_durable(lambda: self._source.ack(msg))
                self._log.error(
                    f"applied:{type(exc).__name__}",
                    f"MQTT: message on {msg.topic[:200]} applied, but a sink failed: {exc!r}",
                )
                return None
            self._fault(msg, exc)
            return exc
        return None

    def _fault(self, msg: MqttMessage, exc: Exception) -> None:
        kind = "resource" if isinstance(exc, OSError) else "bug"
        self._event("failed")
        self._log.error(
            f"{kind}:{type(exc).__name__}:{getattr(exc, 'errno', '')}",
            f"MQTT: message on {msg.topic[:200]} could not be processed ({exc!r}); "
            "not acknowledged, will retry",
        )

    async def _retry(self, msg: MqttMessage, first: Exception) -> None:
        delay = RETRY_FIRST_S
        bugs = 0 if isinstance(first, OSError) else 1
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            self._event("retried")
            exc = self._attempt(msg)
            if exc is None:
                return
            if not isinstance(exc, OSError):
                bugs += 1  # a resource fault is retried for as long as it lasts
                if bugs >= BUG_ATTEMPTS and await self._park(msg, exc):
                    return

    async def _park(self, msg: MqttMessage, exc: Exception) -> bool:
        doc = {
            "topic": msg.topic,
            "payload_b64": base64.b64encode(msg.payload).decode(),
            "received_at": msg.received_at,
            "error": repr(exc)[:500],
        }
        name = f"{int(time.time() * 1000)}-{os.getpid()}-{next(_PARKED_NAMES)}.json"
        path = self._park_dir / name
        try:
            await asyncio.to_thread(_write_parked, path, json.dumps(doc).encode())
        except OSError as err:
            self._log.error(
                "park", f"MQTT: cannot park message on {msg.topic[:200]} ({err}); will retry"
            )
            return False
        self._source.ack(msg)
        self._event("parked")
        log.error(
            "MQTT: message on %s failed %d times (%r); parked as %s and acknowledged",
            msg.topic[:200],
            BUG_ATTEMPTS,
            exc,
            path,
        )
        return True

    def _event(self, name: str) -> None:
        if self._on_event is not None:
            self._on_event(name)


def _parked_files(directory: Path) -> list[Path]:
    try:
        return sorted(directory.glob("*.json"))  # names start with the time they were parked
    except OSError:
        return []


def _forget_parked(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        log.error("MQTT: parked message %s processed, but not removed (%s)", path.name, exc)
        return
    log.info("MQTT: parked message %s processed and removed", path.name)


def _write_parked(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fdlimit.RESERVED.run(atomic_write, path, data)  # a new file: the descriptor reserve helps
