"""Modbus TCP cannot be locked out: idle, slowloris and vanished (half-open) peers give way.

Each test fills the whole connection table with one kind of misbehaving client and then shows
that a new client connects and reads within seconds. The half-open peers live in a network
namespace of their own, joined to this one by a veth pair whose far end is then taken down, so
their packets are dropped without FIN or RST, as when a PLC loses power or a link breaks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from helpers.broker import free_port
from helpers.wait import async_wait_until
from pymodbus.client import AsyncModbusTcpClient
from test_modbus_helpers import (
    GATEWAY_VALUES,
    HOST,
    FakeCommands,
    all_points,
    feed,
    make_state,
    modbus_config,
)

from gateway.modbus import ModbusServer

SLOTS = 16
READ_HEARTBEAT = struct.pack(">HHHBBHH", 7, 0, 6, 1, 3, 0, 1)
WITHIN_S = 5.0  # "within seconds": a newcomer's connect-and-read deadline


ServerFactory = Callable[..., Awaitable[ModbusServer]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    made: list[ModbusServer] = []

    async def make(host: str = HOST, **tcp: object) -> ModbusServer:
        state = make_state()
        feed(state)
        cfg = modbus_config(
            tcp_port=free_port(), tcp_options={"host": host, "max_connections": SLOTS, **tcp}
        )
        server = ModbusServer(cfg, all_points(), state, FakeCommands())
        await server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        await server.stop()


async def newcomer_reads(host: str, port: int) -> None:
    """A fresh pymodbus client connects and reads the heartbeat, all within WITHIN_S."""
    client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
    try:
        async with asyncio.timeout(WITHIN_S):
            assert await client.connect()
            result = await client.read_holding_registers(0, count=1, device_id=1)
        assert not result.isError()
        assert result.registers == [GATEWAY_VALUES["heartbeat"]]
    finally:
        client.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(100), WITHIN_S) == b""
    except ConnectionResetError:
        return True


@pytest.mark.asyncio
async def test_idle_connections_give_way_to_a_newcomer(serve: ServerFactory) -> None:
    server = await serve(idle_timeout_s=0)  # no idle timeout: the slot must come from eviction
    port = server.tcp_port or 0
    idle = [await asyncio.open_connection(HOST, port) for _ in range(SLOTS)]
    try:
        await async_wait_until(lambda: server.tcp_connections == SLOTS, WITHIN_S, "a full table")
        # The first idle client polls once, so it is no longer the one idle longest.
        reader, writer = idle[0]
        writer.write(READ_HEARTBEAT)
        assert len(await asyncio.wait_for(reader.readexactly(11), 2)) == 11
        await newcomer_reads(HOST, port)
        assert await closed_by_server(idle[1][0])  # the longest idle gave its slot
        writer.write(READ_HEARTBEAT)  # the polling client kept its own
        assert len(await asyncio.wait_for(reader.readexactly(11), 2)) == 11
        assert server.tcp_connections <= SLOTS
    finally:
        for _, w in idle:
            w.close()


@pytest.mark.asyncio
async def test_slowloris_connections_are_closed_after_the_idle_timeout(
    serve: ServerFactory,
) -> None:
    server = await serve(idle_timeout_s=0.5, max_connections=SLOTS + 1)
    port = server.tcp_port or 0
    slow = [await asyncio.open_connection(HOST, port) for _ in range(SLOTS)]
    # A header announcing a long PDU, then one byte at a time: never a complete request.
    header = struct.pack(">HHHB", 1, 0, 200, 1)
    stop = asyncio.Event()

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for byte in header + bytes(190):
            if stop.is_set():
                return
            try:
                writer.write(bytes((byte,)))
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.05)  # a slowloris sender's pace: the scenario, not a wait

    tasks = [asyncio.create_task(trickle(w)) for _, w in slow]
    try:
        await newcomer_reads(HOST, port)
        for reader, _ in slow:
            assert await closed_by_server(reader)
        await async_wait_until(lambda: server.tcp_connections == 0, 2, "every slow sender closed")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for _, w in slow:
            w.close()


# -- half-open peers, in a network namespace ----------------------------------------------------

_PEER_SCRIPT = """
import socket, sys
socks = [socket.create_connection((sys.argv[1], int(sys.argv[2]))) for _ in range(int(sys.argv[3]))]
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass(frozen=True)
class Netns:
    name: str
    host_ip: str  # our end of the veth pair, in this namespace
    peer_ip: str
    peer_dev: str

    def run(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 to create a network namespace")
    tag = f"{os.getpid() % 100000}"
    name, host_dev, peer_dev = f"vs121gw-mb-{tag}", f"mbw{tag}h", f"mbw{tag}p"
    subnet = f"10.213.{os.getpid() % 250}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", host_dev, "type", "veth", "peer", "name", peer_dev)
        _ip("link", "set", peer_dev, "netns", name)
        _ip("addr", "add", f"{subnet}.1/30", "dev", host_dev)
        _ip("link", "set", host_dev, "up")
        _ip("-n", name, "addr", "add", f"{subnet}.2/30", "dev", peer_dev)
        _ip("-n", name, "link", "set", peer_dev, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Netns(name, f"{subnet}.1", f"{subnet}.2", peer_dev)
    finally:
        subprocess.run(["ip", "link", "del", host_dev], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.mark.asyncio
async def test_half_open_peers_are_dropped_by_keepalive(serve: ServerFactory, netns: Netns) -> None:
    # Idle timeout off: only the per-socket keepalive can find the vanished peers.
    server = await serve(
        host=netns.host_ip,
        idle_timeout_s=0,
        keepalive_idle_s=1,
        keepalive_interval_s=1,
        keepalive_count=2,
    )
    port = server.tcp_port or 0
    peers = await asyncio.create_subprocess_exec(
        *netns.run(sys.executable, "-c", _PEER_SCRIPT, netns.host_ip, str(port), str(SLOTS)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert peers.stdout is not None
        line = await asyncio.wait_for(peers.stdout.readline(), 10)
        assert line.strip() == b"ready"
        await async_wait_until(lambda: server.tcp_connections == SLOTS, 5, "the peers' connections")
        # The peers vanish: their link goes down, nothing reaches them and nothing comes back.
        _ip("-n", netns.name, "link", "set", netns.peer_dev, "down")
        await newcomer_reads(netns.host_ip, port)  # a slot at once, taken from the idle longest
        await async_wait_until(
            lambda: server.tcp_connections == 0, 15, "keepalive to close the half-open peers"
        )
    finally:
        peers.kill()
        await peers.wait()
