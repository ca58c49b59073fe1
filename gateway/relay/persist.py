"""The alarm rules' durable state: one small JSON file, replaced atomically on every change.

Kept apart from the sensors' journal because it changes rarely (an alarm switching, an operator
writing a threshold or an override) and each change must be on disk before the write that made
it is acknowledged. Per rule: the alarm state and when it last switched (wall-clock time, so the
minimum on/off times carry over a restart), a written threshold together with the configured
threshold it replaced (editing the configuration wins over an old written value), and the relay
command levels 1..15 (16, the automatic one, follows from the alarm).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.store import atomic_write

log = logging.getLogger("gateway.relay")

FILE_NAME = "alarms.json"
VERSION = 1
OPERATOR_LEVELS = 15


@dataclass
class RuleRecord:
    active: bool = False
    changed_at: float | None = None  # unix time of the last switch
    threshold: float | None = None  # written by an operator; None: the configured one
    configured_threshold: float | None = None  # the configured threshold it replaced
    commands: list[bool | None] = field(default_factory=lambda: [None] * OPERATOR_LEVELS)

    def to_json(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "changed_at": self.changed_at,
            "threshold": self.threshold,
            "configured_threshold": self.configured_threshold,
            "commands": self.commands,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RuleRecord:
        """Raises TypeError/ValueError/KeyError if malformed."""
        commands = doc["commands"]
        if not isinstance(commands, list) or len(commands) != OPERATOR_LEVELS:
            raise ValueError("commands is not a list of 15 levels")
        if any(c is not None and not isinstance(c, bool) for c in commands):
            raise TypeError("a command level is neither true, false nor null")
        active = doc["active"]
        if not isinstance(active, bool):
            raise TypeError("active is not a boolean")
        return cls(
            active=active,
            changed_at=_opt_number(doc["changed_at"]),
            threshold=_opt_number(doc["threshold"]),
            configured_threshold=_opt_number(doc["configured_threshold"]),
            commands=list(commands),
        )


def _opt_number(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise TypeError(f"not a number: {v!r}")
    return float(v)


class AlarmStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def load(self) -> dict[str, RuleRecord]:
        """The saved rules; a damaged file is set aside and logged, never fatal."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error(
                "alarm state %s unreadable (%s); rules start from the configuration", self.path, exc
            )
            return {}
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                raise ValueError("not an alarm state file of this version")
            rules = doc["rules"]
            if not isinstance(rules, dict):
                raise TypeError("rules is not an object")
            return {str(k): RuleRecord.from_json(v) for k, v in rules.items()}
        except (ValueError, TypeError, KeyError) as exc:
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            log.error(
                "alarm state %s damaged (%s); kept as %s, rules start from the configuration",
                self.path,
                exc,
                aside.name,
            )
            return {}

    @staticmethod
    def encode(records: Mapping[str, RuleRecord]) -> bytes:
        doc = {"version": VERSION, "rules": {k: r.to_json() for k, r in records.items()}}
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    def save(self, data: bytes) -> None:
        """Blocking: call in a worker thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        atomic_write(self.path, data)
