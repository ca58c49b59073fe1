"""The local control token: what lets `vs121-gateway reset-counts` act without an HTTP password.

At start the daemon writes a fresh random token to `<state_dir>/control-token`, readable only by
its own user (mode 0600). A caller that presents it has read the gateway's state directory, i.e.
is the gateway's user or root: that is the local authentication. Any other caller needs the
configured HTTP basic auth; without one, totals cannot be reset over HTTP at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

HEADER = "X-VS121GW-Control-Token"
FILE_NAME = "control-token"


def create(state_dir: Path) -> str:
    """A new token, written atomically with mode 0600 (the old one stops working)."""
    token = secrets.token_urlsafe(32)
    path = state_dir / FILE_NAME
    tmp = path.with_name(f".{FILE_NAME}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


def read(state_dir: Path) -> str | None:
    """The running gateway's token, or None when this user cannot read it."""
    try:
        return (state_dir / FILE_NAME).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
