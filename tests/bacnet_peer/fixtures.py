"""The BACnet fixtures most server tests share: a default rig and a client in another process.

A test module that needs a different rig (more sensors, alarm rules) defines its own `rig`,
which takes precedence over this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bacnet_peer.harness import Peer
from bacnet_peer.rig import Rig


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    await r.start()
    yield r
    await r.stop()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[Peer]:
    peer = await Peer.start("client.py")
    yield peer
    await peer.stop()
