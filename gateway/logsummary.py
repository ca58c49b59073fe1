"""One log line per kind of fault, then one summary line per window while it repeats.

A fault hit by every message (out of descriptors, disk full) would otherwise write a line per
message: megabytes a second that help nobody and fill the disk the gateway needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

WINDOW_S: Final = 60.0
_MAX_KEYS: Final = 1000


class Summariser:
    """`error(key, message)` logs the first of a kind, then at most one line per window."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._window = window
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (when last logged, suppressed)

    def error(self, key: str, message: str) -> bool:
        return self._emit(logging.ERROR, key, message)

    def warning(self, key: str, message: str) -> bool:
        return self._emit(logging.WARNING, key, message)

    def _emit(self, level: int, key: str, message: str) -> bool:
        """Log (True) or count (False) one occurrence."""
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._window:
            self._seen[key] = (entry[0], entry[1] + 1)
            return False
        if entry is not None and entry[1]:
            message += f" ({entry[1]} more like it in the last {now - entry[0]:.0f} s)"
        if len(self._seen) >= _MAX_KEYS:  # bounded whatever the variety of faults
            self._seen.clear()
        self._seen[key] = (now, 0)
        self._log.log(level, "%s", message)
        return True

    def clear(self, key: str) -> int:
        """Forget `key` (the fault is over); returns how many were suppressed since last logged."""
        entry = self._seen.pop(key, None)
        return 0 if entry is None else entry[1]
