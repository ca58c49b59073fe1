"""Interoperability: a BACnet stack written by others reads the gateway, and Wireshark's
dissector finds nothing malformed in what the gateway sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from bacnet_peer.harness import HERE, Peer, free_udp_port
from bacnet_peer.rig import DEVICE_INSTANCE, Rig

pytestmark = pytest.mark.asyncio


def node_peer_installed() -> None:
    """The independent client is @bacnet-js/client (npm); install it from the lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the independent BACnet client")
    if not (HERE / "node_modules" / "@bacnet-js" / "client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)],
            check=True,
            capture_output=True,
            timeout=300,
        )


async def test_an_independent_client_reads_and_subscribes(rig: Rig) -> None:
    node_peer_installed()
    people = rig.server.object_for("lobby", "people_count_all")
    assert people is not None
    rig.report("lobby", {"people_count_all": 4})
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "node_client.js"),
        str(free_udp_port()),
        rig.address,
        str(DEVICE_INSTANCE),
        str(people.point.instance),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    result = json.loads(out)
    assert "error" not in result, result
    assert result["deviceName"] == "VS121 Gateway"
    assert result["presentValue"] == 4
    # object-name, units (95 no-units), reliability (0 no-fault-detected)
    assert result["rpm"] == [[77, "Lobby People Count"], [117, 95], [103, 0]]
    assert result["cov"]["object"] == people.point.instance
    assert {p: v[0] for p, v in result["cov"]["values"]}[85] == 4


WARNING = 0x00600000  # Wireshark's expert-info severity for warnings; errors are higher
# Not BACnet: the gateway drops them, tshark still shows the frames. Different lengths tell the
# start marker (sent repeatedly until capture has begun) from the end marker.
START_MARKER = b"\x00"
END_MARKER = b"\x00\x00\x00"


class Capture:
    """Live tshark on the loopback interface for one UDP port, decoding it as BACnet/IP.

    Synchronised with markers rather than timing: capture has begun once a marker sent after
    start-up is printed, and every packet is in once a marker sent at the end is printed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.frames: list[dict[str, str]] = []

    async def __aenter__(self) -> Capture:
        fields = [
            "frame.number",
            "udp.srcport",
            "udp.length",
            "bacapp.type",
            "_ws.malformed",
            "_ws.expert.severity",
        ]
        args = [
            "tshark",
            "-l",
            "-n",
            "-i",
            "lo",
            "-f",
            f"udp port {self.port}",
            "-d",
            f"udp.port=={self.port},bvlc",
            "-T",
            "fields",
            "-E",
            "separator=|",
        ]
        for field in fields:
            args += ["-e", field]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        self._names = fields
        await self._marker(START_MARKER)
        self.frames.clear()
        return self

    async def _marker(self, marker: bytes) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            async with asyncio.timeout(20):
                while True:
                    sock.sendto(marker, ("127.0.0.1", self.port))
                    try:
                        line = await asyncio.wait_for(self.proc.stdout.readline(), 0.2)
                    except TimeoutError:
                        continue  # not capturing yet: send another marker
                    frame = dict(
                        zip(self._names, line.decode().rstrip("\n").split("|"), strict=True)
                    )
                    if frame.get("udp.length") == str(8 + len(marker)):
                        return
                    self.frames.append(frame)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if exc == (None, None, None):
            await self._marker(END_MARKER)
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 10)

    def sent_by(self, port: int) -> list[dict[str, str]]:
        return [f for f in self.frames if f.get("udp.srcport") == str(port)]


def bad(frame: dict[str, str]) -> bool:
    severities = [int(v) for v in frame.get("_ws.expert.severity", "").split(",") if v]
    return bool(frame.get("_ws.malformed")) or any(v >= WARNING for v in severities)


async def test_what_the_gateway_sends_decodes_cleanly(rig: Rig, tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark (Debian package tshark) is needed to check the wire encoding")
    client = await Peer.start("client.py")
    people = rig.object_id("lobby", "people_count_all")
    reset = rig.object_id("lobby", "reset_counts")
    try:
        async with Capture(rig.port) as capture:
            await client.call("whois", address=rig.address, seconds=0.3)
            objects = await client.call(
                "read", address=rig.address, object=rig.device, property="objectList"
            )
            # Everything, in a few long, segmented ReadPropertyMultiple answers (one answer for
            # every object would pass the client's maximum number of segments).
            specs = [[o, ["all"]] for o in objects["value"]]
            for start in range(0, len(specs), 40):
                await client.call("rpm", address=rig.address, specs=specs[start : start + 40])
            await client.call("subscribe", address=rig.address, object=people, process=1)
            await client.call(
                "subscribe",
                address=rig.address,
                object=people,
                process=2,
                property="presentValue",
                increment=1.0,
                confirmed=True,
            )
            rig.report("lobby", {"people_count_all": 3})
            await client.next_event(
                lambda e: e.get("process") == 2 and e["values"]["presentValue"] == 3.0
            )
            await client.answer(
                "subscribe", address=rig.address, object=people, process=3, property="objectName"
            )
            await client.answer(
                "write",
                address=rig.address,
                object=people,
                property="presentValue",
                value=1.0,
                type="real",
            )
            await client.call(
                "write",
                address=rig.address,
                object=reset,
                property="presentValue",
                value=1,
                type="enumerated",
            )
            await client.call(
                "read", address=rig.address, object=rig.device, property="activeCovSubscriptions"
            )
            await client.call("whohas", address=rig.address, name="Lobby People Count", seconds=0.3)
    finally:
        await client.stop()

    sent = capture.sent_by(rig.port)
    kinds = [f["bacapp.type"] for f in sent]
    assert len(sent) >= 25
    assert kinds.count("3") >= 5  # complex acks, the segmented one among them
    assert "5" in kinds  # the two errors asked for
    assert "1" in kinds  # unconfirmed COV notifications
    assert "0" in kinds  # confirmed ones
    assert [f for f in sent if bad(f)] == []
