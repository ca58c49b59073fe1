"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.broker import BrokerError, MosquittoBroker

# `rig` and `client` for the BACnet server tests.
pytest_plugins = ["bacnet_peer.fixtures"]


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One mosquitto on 127.0.0.1 for the whole run; tests may `restart()` it, never stop it."""
    try:
        broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
