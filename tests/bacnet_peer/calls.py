"""Short forms of the test peer's calls that many BACnet tests make against a Rig."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bacnet_peer.harness import Peer, PeerError
from bacnet_peer.rig import Rig


async def read(client: Peer, rig: Rig, obj: str, prop: str, index: int | None = None) -> Any:
    """ReadProperty of `obj`'s `prop` (one array element with `index`): the value."""
    answer = await client.call("read", address=rig.address, object=obj, property=prop, index=index)
    return answer["value"]


async def failure(client: Peer, op: str, **kwargs: Any) -> tuple[str | None, str | None]:
    """The (error class, error code) a call that must fail is answered with."""
    with pytest.raises(PeerError) as err:
        await client.call(op, **kwargs)
    return err.value.error_class, err.value.code


def cov_for(obj: str, process: int | None = None) -> Callable[[dict[str, Any]], bool]:
    """Matches a COV notification about `obj` (for `process` only, when given)."""

    def match(event: dict[str, Any]) -> bool:
        return (
            event.get("event") == "cov"
            and event["object"] == obj
            and (process is None or event["process"] == process)
        )

    return match
