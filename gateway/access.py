"""Allow-lists: which peers may write over BACnet (and manage the device), and which may connect
over Modbus TCP.

An empty list allows everyone (the previous behaviour). A refused peer is counted every time and
logged once per address (a BMS retrying every second must not flood the log).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

log = logging.getLogger("gateway.access")

_LOGGED_MAX: Final = 1000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(key: str, values: Sequence[str]) -> list[Network]:
    """Networks ("10.1.2.0/24") or single addresses ("10.1.2.3"); ValueError naming the key."""
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{key}: {value!r} is not an IP address or network (e.g. 192.168.1.20 or "
                "192.168.1.0/24)"
            ) from None
    return out


class AllowList:
    def __init__(
        self,
        networks: Sequence[str],
        *,
        what: str,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._networks = parse_networks(what, networks)
        self._what = what
        self._on_refused = on_refused
        self._logged: set[str] = set()
        self.refused = 0

    @property
    def open(self) -> bool:
        return not self._networks

    def permits(self, host: str | None) -> bool:
        if not self._networks:
            return True
        try:
            ip = ipaddress.ip_address(host or "")
        except ValueError:
            ip = None
        if ip is not None:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if any(ip in net for net in self._networks):
                return True
        self.refused += 1
        if self._on_refused is not None:
            self._on_refused()
        shown = host or "an unknown address"
        if shown not in self._logged:
            if len(self._logged) >= _LOGGED_MAX:
                self._logged.clear()
            self._logged.add(shown)
            log.warning("%s: refused %s (not in the allow-list)", self._what, shown)
        return False


def admit_connection(allow: AllowList | None, transport: asyncio.BaseTransport) -> bool:
    """For a listener's `connection_made`: False (and the connection reset) if not allowed."""
    if allow is None or allow.open:
        return True
    peer: Any = transport.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else None
    if allow.permits(host):
        return True
    transport.abort()  # type: ignore[attr-defined]  # every stream transport has abort()
    return False


def bacnet_source_host(address: Any) -> str | None:
    """The IP address of a BACnet/IP source address (None for any other kind)."""
    pair = getattr(address, "addrTuple", None)
    if isinstance(pair, tuple) and pair:
        return str(pair[0])
    return None
