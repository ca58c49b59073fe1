"""Foreign-device registration against a BBMD in another process (bacpypes3's BBMD)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bacnet_peer.harness import Peer, free_udp_port
from bacnet_peer.rig import Rig

from gateway.settings import BbmdSection

pytestmark = pytest.mark.asyncio

SHORT_TTL = 2  # seconds; the configuration allows 30 at least, tests bypass that for speed


def bbmd_section(port: int, ttl: int) -> BbmdSection:
    # model_construct: a TTL below the configuration's minimum keeps the outage test short.
    return BbmdSection.model_construct(address="127.0.0.1", port=port, ttl=ttl)


async def fdt_entries(client: Peer, bbmd: Peer) -> list[str]:
    return [e["address"] for e in await client.call("rfdt", address=bbmd.address)]


async def test_registration_shows_in_the_bbmd_foreign_device_table(
    tmp_path: Path, client: Peer
) -> None:
    bbmd = await Peer.start("bbmd.py")
    rig = Rig(tmp_path, bbmd=bbmd_section(bbmd.port, 60))
    try:
        assert rig.server.fd_registered is None  # not started: no link yet
        await rig.start()
        assert await rig.fd_change(within=10) is True
        assert rig.server.fd_registered is True
        entries = await client.call("rfdt", address=bbmd.address)
        assert [(e["address"], e["ttl"]) for e in entries] == [(rig.address, 60)]
        # The network port tells a BMS which BBMD and TTL it uses.
        port = await client.call(
            "rpm",
            address=rig.address,
            specs=[["network-port,1", ["bacnetIPMode", "fdBBMDAddress", "fdSubscriptionLifetime"]]],
        )
        values = {prop: entry.get("value") for _, prop, _, entry in port["results"]}
        assert values["bacnetIPMode"] == "foreign"
        assert values["fdSubscriptionLifetime"] == 60
        # Reads still work through the foreign link.
        read = await client.call(
            "read", address=rig.address, object=rig.device, property="objectName"
        )
        assert read["value"] == "VS121 Gateway"
    finally:
        await rig.stop()
        await bbmd.stop()


async def test_reregisters_after_the_bbmd_was_down_longer_than_the_ttl(
    tmp_path: Path, client: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.bacnet")
    bbmd_port = free_udp_port()
    bbmd = await Peer.start("bbmd.py", bbmd_port)
    rig = Rig(tmp_path, bbmd=bbmd_section(bbmd_port, SHORT_TTL))
    try:
        await rig.start()
        assert await rig.fd_change(within=10) is True

        await bbmd.stop()  # the BBMD goes away; renewals go unanswered
        assert await rig.fd_change(within=SHORT_TTL + 10) is False
        assert rig.server.fd_registered is False
        port = await client.call(
            "read", address=rig.address, object="network-port,1", property="reliability"
        )
        assert port["value"] == "renew-fd-registration-failure"
        # Stay down well past the TTL (several renewal attempts fail) before coming back.
        assert rig.fd_changes.empty()
        down_for = 3 * SHORT_TTL
        with pytest.raises(TimeoutError):
            await rig.fd_change(within=down_for)

        bbmd = await Peer.start("bbmd.py", bbmd_port)
        assert await rig.fd_change(within=15) is True
        assert await fdt_entries(client, bbmd) == [rig.address]
        port = await client.call(
            "read", address=rig.address, object="network-port,1", property="reliability"
        )
        assert port["value"] == "no-fault-detected"
    finally:
        await rig.stop()
        await bbmd.stop()

    transitions = [
        r.getMessage()
        for r in caplog.records
        if "registered as a foreign device" in r.getMessage() or "lapsed" in r.getMessage()
    ]
    assert len(transitions) == 3  # registered, lapsed, registered: one line each
