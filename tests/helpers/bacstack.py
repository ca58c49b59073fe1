"""Runs bacnet-stack's command-line tools (the C reference BACnet stack) against a server.

The tools are found in $BACNET_STACK_BIN or on PATH; tests that need them skip when they are
absent (nothing in CI builds bacnet-stack). Each tool binds its own UDP port on loopback and
broadcasts to 127.255.255.255 on the server's port, never further.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest


def tool(name: str) -> Path | None:
    """The path of a bacnet-stack tool, or None."""
    folder = os.environ.get("BACNET_STACK_BIN")
    if folder:
        candidate = Path(folder) / name
        return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None
    found = shutil.which(name)
    return Path(found) if found else None


def require(name: str) -> Path:
    path = tool(name)
    if path is None:
        pytest.skip(f"bacnet-stack's {name} not found (set BACNET_STACK_BIN)")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run(name: str, *args: str, server_port: int, within: float = 60.0) -> Result:
    """Run tool `name` with `args`, talking to a server on 127.0.0.1:`server_port`."""
    path = require(name)
    env = {
        **os.environ,
        "BACNET_IFACE": "lo",
        "BACNET_IP_PORT": str(_free_port()),
        "BACNET_IP_BROADCAST_PORT": str(server_port),
    }
    proc = await asyncio.create_subprocess_exec(
        str(path),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
