"""Worker-thread jobs hold BACnet requests back while they run, for a bounded time.

(Why: see gateway/threadgate.py; the latency it buys is measured by
bench/bench_bacnet_floor.py, HTTP ack under two back-to-back pollers.)
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from bacnet_peer.harness import Peer
from bacnet_peer.rig import Rig
from test_bacnet_fastread import apdu, request, rig_objects, rp_body

from gateway import threadgate
from gateway.bacnet.fastread import raw_identifier


class Heard:
    """What a listener was told, with an event for each "carry on"."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.held = asyncio.Event()
        self.released = asyncio.Event()

    def __call__(self, holding: bool) -> None:
        self.calls.append(holding)
        (self.held if holding else self.released).set()


@pytest.mark.asyncio
async def test_listeners_hear_a_job_start_and_end() -> None:
    threadgate.install(asyncio.get_running_loop(), max_hold_s=30)
    heard = Heard()
    threadgate.listen(heard)
    gate = threading.Event()
    job = asyncio.ensure_future(asyncio.to_thread(gate.wait))
    await asyncio.wait_for(heard.held.wait(), 5)
    assert heard.calls == [True]
    # A second job while the first runs changes nothing.
    await asyncio.to_thread(lambda: None)
    assert heard.calls == [True]
    gate.set()
    await job
    await asyncio.wait_for(heard.released.wait(), 5)
    assert heard.calls == [True, False]


@pytest.mark.asyncio
async def test_a_long_job_holds_listeners_back_only_so_long() -> None:
    threadgate.install(asyncio.get_running_loop(), max_hold_s=0.05)
    heard = Heard()
    threadgate.listen(heard)
    gate = threading.Event()
    job = asyncio.ensure_future(asyncio.to_thread(gate.wait))
    try:
        await asyncio.wait_for(heard.released.wait(), 5)
        assert not job.done()
        assert heard.calls == [True, False]
    finally:
        gate.set()
        await job
    assert heard.calls == [True, False]  # no second "carry on"


@pytest.mark.asyncio
async def test_bacnet_requests_wait_while_a_worker_thread_runs(
    tmp_path: Path, client: Peer
) -> None:
    threadgate.install(asyncio.get_running_loop(), max_hold_s=30)
    rig = Rig(tmp_path)
    await rig.start()
    try:
        read = request(12, rp_body(raw_identifier(rig_objects(rig)[0]), 85))
        gate = threading.Event()
        heard = Heard()
        threadgate.listen(heard)
        job = asyncio.ensure_future(asyncio.to_thread(gate.wait))
        await asyncio.wait_for(heard.held.wait(), 5)  # the BACnet link was told as well
        held = await client.call(
            "exchange", host="127.0.0.1", port=rig.port, packets=[read], wait=0.5
        )
        assert held == [None]
        gate.set()
        await job
        answered = await client.call("exchange", host="127.0.0.1", port=rig.port, packets=[read])
        assert apdu(answered[0])[0] == 0x30
    finally:
        await rig.stop()
