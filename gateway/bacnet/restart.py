"""ReinitializeDevice as a process restart, and the Last_Restart_Reason that tells of it.

A warm or cold start stops the gateway cleanly (state saved, relay outputs in their shutdown
state) and exits with `EXIT_REINITIALIZE`; the supervisor (systemd's unit restarts on that
status) starts it again. The reason is written to the state directory before the exit and read
back, once, by the next start, so the device's Last_Restart_Reason says warmstart or coldstart;
any other start (power, crash, an operator's restart) reads unknown.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gateway.store import atomic_write

log = logging.getLogger("gateway.bacnet")

# Exit status of a reinitialize: EX_TEMPFAIL ("try again"), distinct from errors (1, 2).
EXIT_REINITIALIZE = 75
RESTART_FILE = "bacnet_restart.json"
REASONS = ("coldstart", "warmstart")


def record_restart(state_dir: Path, reason: str) -> None:
    """Remember why the next start happens (written atomically, before the exit)."""
    if reason not in REASONS:
        raise ValueError(f"restart reason {reason!r}: allowed are {', '.join(REASONS)}")
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(state_dir / RESTART_FILE, json.dumps({"reason": reason}).encode())


def take_restart_reason(state_dir: Path) -> str:
    """The reason recorded by the previous run (then forgotten), or "unknown"."""
    path = state_dir / RESTART_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return "unknown"
    except (OSError, ValueError) as exc:
        log.warning("BACnet: %s unreadable (%s); last restart reason unknown", path, exc)
        doc = {}
    try:
        path.unlink()
    except OSError as exc:
        log.warning("BACnet: cannot remove %s: %s", path, exc)
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return reason if reason in REASONS else "unknown"
