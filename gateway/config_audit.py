"""Warnings about a valid configuration that is unsafe: secrets in the file, open endpoints.

`check-config` prints them and the daemon logs them at start. They never stop the gateway: a
site may have good reasons (a firewall in front, a dedicated network), but it should decide so
knowingly.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gateway.settings import ENV_PREFIX, Settings

# Secrets that also have a `<name>_file` form (read from a file such as a systemd credential).
_FILE_FORMS = {("http", "password"), ("mqtt", "password")}
_SECRET_WORDS = ("password", "secret", "token")


def plaintext_secrets(path: Path) -> list[str]:
    """One warning per secret written into the configuration file itself."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []  # load_settings reports these
    warnings = []
    for keys in _secret_keys(doc, ()):
        dotted = ".".join(keys)
        env = ENV_PREFIX + "__".join(k.upper() for k in keys)
        if keys in _FILE_FORMS:
            how = f"{dotted}_file = <path of a file holding it> or the environment ({env}_FILE)"
        else:
            how = f"the environment ({env}, e.g. from a systemd EnvironmentFile readable by root)"
        warnings.append(f"{dotted}: the secret is written in {path.name} in plain text; use {how}")
    return warnings


def _secret_keys(doc: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for key, value in doc.items():
        if isinstance(value, Mapping):
            yield from _secret_keys(value, (*prefix, key))
        elif (
            isinstance(value, str)
            and any(word in key.lower() for word in _SECRET_WORDS)
            and not key.endswith("_file")
        ):
            yield (*prefix, key)


def open_endpoints(settings: Settings, *, bacnet: bool = True) -> list[str]:
    """One warning per endpoint that accepts reports or actions from a network, not only from
    this machine, without a password."""
    warnings = []
    http = settings.http
    if http.enabled and not _loopback(http.host) and http.username is None:
        warnings.append(
            f"http.host = {http.host!r} without http.username: anyone who can reach port "
            f"{http.port} can push VS121-P reports and read /api/sensors; set http.username and "
            "a password (resets always need one)"
        )
    elif http.enabled and not _loopback(http.host) and http.tls_cert_file is None:
        warnings.append(
            f"http.host = {http.host!r} without TLS: the basic-auth password crosses the "
            "network in clear; set http.tls_cert_file and http.tls_key_file, or keep it on a "
            "trusted network"
        )
    tcp = settings.modbus.tcp
    if tcp.enabled and not _loopback(tcp.host):
        warnings.append(
            f"modbus.tcp.host = {tcp.host!r}: Modbus has no authentication; anyone who can reach "
            f"port {tcp.port} can write the writable points (reset counts, alarm thresholds, "
            "relay override); limit it with a firewall or a dedicated network"
        )
    bac = settings.bacnet
    if bacnet and bac.enabled and bac.password is None and not _loopback(bac.address.split("/")[0]):
        warnings.append(
            f"bacnet.address = {bac.address!r} without bacnet.password: any BACnet "
            "client on the network can silence or restart the gateway's device "
            "(DeviceCommunicationControl, ReinitializeDevice)"
        )
    return warnings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or a wildcard: reachable from elsewhere as far as we know
