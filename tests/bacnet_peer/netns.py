"""Network namespaces joined by veth pairs, for tests that need a real subnet and broadcast address.

Every namespace and interface lives inside namespaces made here: each veth pair is created
directly inside its two namespaces and never appears among the host's interfaces, so a broadcast
cannot leave. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); `NetnsUnavailableError` says why when
the machine cannot do it. Peers run inside a namespace through `Peer.start(..., wrap=ns.wrap)`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from itertools import count

IP_TIMEOUT_S = 10.0
_serial = count(1)


class NetnsUnavailableError(Exception):
    """`ip netns` is missing or not permitted here."""


def ip(*args: str) -> str:
    """Run one `ip` command; its stdout. Raises NetnsUnavailableError with ip's own message."""
    try:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise NetnsUnavailableError(f"cannot run ip: {exc}") from exc
    if done.returncode != 0:
        raise NetnsUnavailableError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Namespace:
    name: str

    @property
    def wrap(self) -> tuple[str, ...]:
        """The command prefix that runs a program inside this namespace."""
        return ("ip", "netns", "exec", self.name)


@dataclass
class Lab:
    """Namespaces made for one test; `delete()` removes them, and their veth pairs with them."""

    prefix: str = field(default_factory=lambda: f"vs121t-{os.getpid()}-{next(_serial)}")
    spaces: list[Namespace] = field(default_factory=list)

    def namespace(self, role: str) -> Namespace:
        """A new namespace with its loopback up."""
        ns = Namespace(f"{self.prefix}-{role}")
        ip("netns", "add", ns.name)
        self.spaces.append(ns)
        ip("-n", ns.name, "link", "set", "lo", "up")
        return ns

    def wire(self, ifname: str, a: Namespace, a_addr: str, b: Namespace, b_addr: str) -> None:
        """A veth pair named `ifname` at both ends, `a_addr` and `b_addr` given with their prefix
        length (e.g. 10.200.0.1/24); each end gets its subnet's broadcast address."""
        peer = ("peer", "name", ifname, "netns", b.name)
        ip("link", "add", ifname, "netns", a.name, "type", "veth", *peer)
        for ns, addr in ((a, a_addr), (b, b_addr)):
            ip("-n", ns.name, "addr", "add", addr, "brd", "+", "dev", ifname)
            ip("-n", ns.name, "link", "set", ifname, "up")

    def route(self, ns: Namespace, network: str, via: str) -> None:
        ip("-n", ns.name, "route", "add", network, "via", via)

    def forward(self, ns: Namespace) -> None:
        """Let `ns` route between its interfaces (the setting is per namespace)."""
        done = subprocess.run(
            [*ns.wrap, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise NetnsUnavailableError(f"ip_forward in {ns.name}: {done.stderr.strip()}")

    def delete(self) -> list[str]:
        """Remove every namespace made here; the errors, if any (the caller decides)."""
        errors = []
        while self.spaces:
            ns = self.spaces.pop()
            try:
                ip("netns", "delete", ns.name)
            except NetnsUnavailableError as exc:
                errors.append(str(exc))
        return errors
