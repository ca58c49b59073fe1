"""ReinitializeDevice restarts the real gateway process (with the password rules kept).

The daemon runs as `vs121-gateway run` in a child process; a bacpypes3 client in another process
sends the requests. A warm or cold start ends the process with EXIT_REINITIALIZE, which the
systemd unit restarts on; here the test plays the supervisor and starts it again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bacnet_peer.harness import Peer, PeerError, free_udp_port
from helpers.daemon import Daemon, new_http_port

from gateway.bacnet.restart import EXIT_REINITIALIZE

pytestmark = pytest.mark.asyncio

INSTANCE = 121077
PASSWORD = "s3cret"


def config(state_dir: Path, *, bacnet_port: int, http_port: int) -> str:
    return f"""
[gateway]
state_dir = "{state_dir}"
log_level = "info"

[bacnet]
address = "127.0.0.1/8"
broadcast = "127.255.255.255"
port = {bacnet_port}
device_instance = {INSTANCE}
password = "{PASSWORD}"

[modbus.tcp]
enabled = false

[http]
host = "127.0.0.1"
port = {http_port}

[[sensors]]
id = "hall"
name = "Hall"
number = 1
model = "vs121"
dev_eui = "24e124538c000001"
region_count = 2
report_interval = 60
"""


async def restart_reason(client: Peer, address: str) -> str:
    answer = await client.call(
        "read", address=address, object=f"device,{INSTANCE}", property="lastRestartReason"
    )
    reason: str = answer["value"]
    return reason


async def test_warm_and_cold_start_restart_the_process(tmp_path: Path, client: Peer) -> None:
    port = free_udp_port()
    address = f"127.0.0.1:{port}"
    daemon = Daemon(
        tmp_path,
        config(tmp_path / "state", bacnet_port=port, http_port=new_http_port()),
        http_port=0,
    )
    await asyncio.to_thread(daemon.start)
    try:
        assert await restart_reason(client, address) == "unknown"
        # Wrong or missing password: refused, and the gateway keeps running.
        for password in ("wrong", None):
            with pytest.raises(PeerError) as err:
                await client.call("reinit", address=address, state="warmstart", password=password)
            assert (err.value.error_class, err.value.code) == ("security", "password-failure")
        assert daemon.running()

        await client.call("reinit", address=address, state="warmstart", password=PASSWORD)
        assert await asyncio.to_thread(daemon.wait_exit) == EXIT_REINITIALIZE
        assert "BACnet reinitialize (warmstart): stopping" in daemon.log_text()
        assert "state saved" in daemon.log_text()  # a clean stop, not a crash

        await asyncio.to_thread(daemon.start)  # what the supervisor does on that status
        assert await restart_reason(client, address) == "warmstart"
        await client.call("reinit", address=address, state="coldstart", password=PASSWORD)
        assert await asyncio.to_thread(daemon.wait_exit) == EXIT_REINITIALIZE

        await asyncio.to_thread(daemon.start)
        assert await restart_reason(client, address) == "coldstart"
        # An ordinary stop and start is not a reinitialize.
        assert await asyncio.to_thread(daemon.stop) == 0
        await asyncio.to_thread(daemon.start)
        assert await restart_reason(client, address) == "unknown"
    finally:
        if daemon.running():
            await asyncio.to_thread(daemon.stop)
