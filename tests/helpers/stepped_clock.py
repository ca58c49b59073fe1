"""Runs `vs121-gateway` with a wall clock that a test can step: the real `time.time` plus an offset.

The offset is read from the file named by STEPPED_CLOCK_FILE whenever the process gets SIGUSR1,
so a test steps the clock of one running daemon, as an NTP correction would, without touching
the machine's clock. The monotonic clock is left alone, as a real step leaves it.

    python tests/helpers/stepped_clock.py run --config gateway.toml
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

_real_time = time.time
_offset = 0.0
_file = Path(os.environ["STEPPED_CLOCK_FILE"])


def _stepped_time() -> float:
    return _real_time() + _offset


def _reload(_signum: int, _frame: FrameType | None) -> None:
    global _offset  # noqa: PLW0603  the one clock of this process
    _offset = float(_file.read_text().strip() or 0)


if __name__ == "__main__":
    _reload(0, None)
    signal.signal(signal.SIGUSR1, _reload)
    # Before the gateway is imported, so every `time.time` it binds is this one.
    time.time = _stepped_time
    from gateway.cli import main

    sys.argv = ["vs121-gateway", *sys.argv[1:]]
    sys.exit(main())
