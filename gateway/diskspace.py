"""Room on the state volume: a reserve file the gateway gives back to get itself out of a full disk.

When the journal has filled the volume, the snapshot that would empty it needs room first, and
without room the gateway could never acknowledge anything again, not even after a restart. So a
file of zeros, sized after the snapshots, is kept in the state directory. A snapshot that finds
the volume full deletes it and tries again; once the journal is emptied the file is laid down
again. Room left is logged and exported as a metric.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

log = logging.getLogger("gateway.store")

RESERVE_NAME: Final = "space-reserve"
MIN_RESERVE: Final = 1 << 20
MAX_RESERVE: Final = 64 << 20
FULL: Final = (errno.ENOSPC, errno.EDQUOT)

T = TypeVar("T")


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer could still use on the volume of `directory`."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class SpaceReserve:
    def __init__(self, directory: Path) -> None:
        self.path = directory / RESERVE_NAME
        self._directory = directory
        self.size = MIN_RESERVE
        self._warned = False

    def size_for(self, snapshot_bytes: int) -> None:
        """Keep room for twice the snapshots (each is written beside its previous version)."""
        self.size = min(MAX_RESERVE, max(MIN_RESERVE, 2 * snapshot_bytes))

    @property
    def held(self) -> int:
        try:
            return self.path.stat().st_blocks * 512
        except OSError:
            return 0

    def ensure(self) -> bool:
        """Lay the reserve down (or grow it); False, with one warning, if there is no room."""
        if self.held >= self.size:
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "state volume: cannot keep %s in reserve (%s); %s free. A full volume may "
                    "stop acknowledgements until room is made",
                    mib(self.size),
                    exc.strerror or exc,
                    mib(free_bytes(self._directory)),
                )
            return False
        if self._warned:
            self._warned = False
            log.info("state volume: %s in reserve again", mib(self.size))
        return True

    def release(self) -> bool:
        """Give the reserve back to the volume; False if there was none."""
        if not self.path.exists():
            return False
        try:
            self.path.unlink()
        except OSError:
            return False
        log.warning(
            "state volume full: reserve of %s released so the state can be written; %s free now",
            mib(self.size),
            mib(free_bytes(self._directory)),
        )
        return True

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`; if the volume is full, again with the reserve released."""
        try:
            return fn(*args)
        except OSError as exc:
            if not is_full(exc) or not self.release():
                raise
        return fn(*args)
