"""A BBMD in its own process (bacpypes3's BBMD link layer), for foreign-device tests.

`python bbmd.py --port N` binds 127.0.0.1/8 on that port (`--address 10.200.0.1/24` binds another
interface, prefix length required), accepts foreign-device registrations, prints
{"event": "ready"} and runs until terminated. Its foreign device table can be read by any
client with Read-Foreign-Device-Table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from bacpypes3.app import Application
from bacpypes3.basetypes import IPMode
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject


async def sockets_bound(app: Any) -> None:
    """bacpypes3 binds its UDP sockets in background tasks: a peer that says "ready" before
    they are bound loses the first datagrams sent to it (seen under CPU load)."""
    tasks: list[Any] = []
    for link in app.link_layers.values():
        tasks.extend(getattr(link.server, "_transport_tasks", ()))  # bacpypes3 0.0.110
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks), 10.0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", type=int, default=598)
    parser.add_argument("--address", default="127.0.0.1/8")
    args = parser.parse_args()
    address = f"{args.address}:{args.port}"
    device = DeviceObject(
        objectIdentifier=("device", args.instance), objectName="test bbmd", vendorIdentifier=999
    )
    port = NetworkPortObject(address, objectIdentifier=("network-port", 1), objectName="port")
    port.bacnetIPMode = IPMode.bbmd
    port.bbmdAcceptFDRegistrations = True
    port.bbmdForeignDeviceTable = []
    # No peers: an entry for itself would lose its port (bacpypes3) and send to 47808.
    port.bbmdBroadcastDistributionTable = []
    app = Application.from_object_list([device, port])
    await sockets_bound(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sys.stdout.write(json.dumps({"event": "ready", "port": args.port}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    app.close()


if __name__ == "__main__":
    asyncio.run(main())
