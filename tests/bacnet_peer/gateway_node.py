"""The gateway's BACnet server in a process of its own, e.g. inside a network namespace.

`python gateway_node.py --port N --address 10.201.0.2/24 --broadcast 10.201.0.255
--bbmd 10.200.0.1:47808 --state-dir DIR` serves one VS121 sensor's points (no data yet) as the
gateway does, registered as a foreign device with that BBMD. It prints {"event": "ready"} once
it serves, {"event": "fd", "registered": true|false} on each registration change, and runs until
terminated (SIGTERM) or until stdin closes. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from gateway.bacnet import BacnetServer
from gateway.commands import CommandRefusedError
from gateway.settings import BacnetSection, BbmdSection
from gateway.state import GatewayState
from objects.catalog import Model
from objects.pointmap import SensorSpec, resolve

SENSOR = SensorSpec(id="lobby", name="Lobby", number=1, model=Model.VS121, region_count=4)
STALE_AFTER_S = 30.0
INTERVAL_S = 10.0


class NoCommands:
    async def reset_counts(self, sensor_id: str) -> str:
        raise CommandRefusedError(f"{sensor_id}: this test node carries out no commands")


def emit(doc: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", required=True, help="interface with prefix length")
    parser.add_argument("--broadcast", required=True)
    parser.add_argument("--instance", type=int, default=121000)
    parser.add_argument("--bbmd", required=True, help="host:port")
    parser.add_argument("--ttl", type=int, default=60)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="gateway_node %(levelname)s %(message)s"
    )

    bbmd_host, bbmd_port = args.bbmd.rsplit(":", 1)
    cfg = BacnetSection(
        address=args.address,
        port=args.port,
        broadcast=args.broadcast,
        device_instance=args.instance,
        bbmd=BbmdSection(address=bbmd_host, port=int(bbmd_port), ttl=args.ttl),
    )
    state = GatewayState([(SENSOR, STALE_AFTER_S, INTERVAL_S)])
    server = BacnetServer(
        cfg,
        resolve([SENSOR]),
        state,
        NoCommands(),
        state_dir=args.state_dir,
        version="test",
        on_fd_change=lambda registered: emit({"event": "fd", "registered": registered}),
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def stdin_closed() -> None:
        while await reader.readline():
            pass  # no commands: anything written is ignored
        stop.set()

    watcher = asyncio.ensure_future(stdin_closed())
    await server.start()
    emit({"event": "ready", "port": args.port})
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
