"""SIGTERM and SIGINT caught from the first moment of `vs121-gateway run`.

Importing the gateway (BACnet, Modbus, HTTP libraries) takes a second or more, and the event
loop installs its own signal handlers only after that. A stop request in between (systemd
stopping a unit that has just started, an operator's Ctrl-C) would otherwise kill the process
by the signal, without the shutdown sequence. Until the loop takes over, a signal is only
recorded here; the runner then starts the shutdown at once.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

_received: list[int] = []
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _record(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)


def install_if_run(module_name: str, argv: Sequence[str]) -> None:
    """Record stop signals when this process is the `run` command (not when imported as a
    library, e.g. by tests)."""
    program = module_name == "__main__" or Path(argv[0]).name == "vs121-gateway"
    if program and list(argv[1:2]) == ["run"]:
        for signum in SIGNALS:
            signal.signal(signum, _record)


def pending() -> int | None:
    """The first stop signal received before the event loop took over, if any."""
    return _received[0] if _received else None
