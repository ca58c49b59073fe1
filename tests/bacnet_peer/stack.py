"""bacnet-stack's demo tools (bacrp, bacrpm, bacserv, ...), when built on this machine.

Not part of the project: set BACNET_STACK_BIN to the directory holding them, or build
bacnet-stack beside the repository (bacnet-stack/bin). Tests that need them skip without them.
"""

from __future__ import annotations

import asyncio
import os
from asyncio.subprocess import PIPE
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> Path | None:
    given = os.environ.get("BACNET_STACK_BIN")
    bases = [Path(given)] if given else [ROOT.parent / "bacnet-stack" / "bin"]
    if not given:
        bases.append(ROOT.parent.parent / "bacnet-stack" / "bin")
    for base in bases:
        path = base / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


async def run_client(name: str, port: int, *args: str, within: float = 20.0) -> str:
    """Run a client tool on its own loopback port; its stdout (raises on failure). Async, as
    the server under test runs in the same event loop."""
    path = tool(name)
    assert path is not None
    env = {
        **os.environ,
        "BACNET_IFACE": "lo",
        "BACNET_IP_PORT": str(port),
        "BACNET_IP_BROADCAST_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(str(path), *args, env=env, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), within)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)}: {out.decode().strip()} {err.decode()}")
    return out.decode()
