"""A message whose handling fails is never acknowledged until its effect is durable.

Real mosquitto and the real MqttSource; the handler is the gateway's own callable, made to fail
the way a resource shortage or a bug makes it fail. Whether the broker still holds a message
is observed the only way that counts: a new connection on the same persistent session gets it
again (or, for an acknowledged one, gets a later marker message first).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import ALL_SUBSCRIPTIONS, Daemon, gateway_config, new_http_port
from paho.mqtt.enums import CallbackAPIVersion

from gateway.mqtt_consumer import MqttConsumer
from gateway.mqtt_settings import MqttSection, MqttSubscription
from gateway.mqtt_source import MqttMessage, MqttSource

TIMEOUT = 10.0


def _section(port: int, client_id: str, topic: str) -> MqttSection:
    return MqttSection(
        enabled=True,
        host="127.0.0.1",
        port=port,
        client_id=client_id,
        status_topic=f"{client_id}/status",
        reconnect_min=0.1,
        reconnect_max=0.5,
        subscriptions=[
            MqttSubscription.model_validate({"name": "p", "topic": topic, "envelope": "vs121p"})
        ],
    )


def _fresh_section(port: int) -> tuple[MqttSection, str]:
    """A section with a client id (so a persistent session) of its own, and its topic."""
    name = f"c-{uuid.uuid4().hex[:8]}"
    topic = f"{name}/up"
    return _section(port, name, topic), topic


def _publish(port: int, topic: str, *payloads: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()


class Link:
    """A source whose `connected()` returns once the broker has answered its subscriptions."""

    def __init__(self, cfg: MqttSection) -> None:
        self._up = asyncio.Event()
        self.source = MqttSource(cfg, on_connected=self._changed)

    def _changed(self, up: bool) -> None:
        if up:
            self._up.set()

    async def connected(self) -> MqttSource:
        await self.source.start()
        await asyncio.wait_for(self._up.wait(), TIMEOUT)
        return self.source


class Handler:
    """Fails `failures` times with `error`, then acknowledges like the gateway does."""

    def __init__(self, error: Exception | None, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0
        self.handled: asyncio.Queue[bytes] = asyncio.Queue()
        self.failed = asyncio.Event()
        self.seq = 0

    def __call__(self, source: MqttSource, msg: MqttMessage) -> None:
        self.calls += 1
        if self.error is not None and self.calls <= self.failures:
            if self.calls >= 2:
                self.failed.set()
            raise self.error
        self.seq += 1
        source.ack(msg)
        self.handled.put_nowait(msg.payload)


def _consumer(
    source: MqttSource, handler: Handler, park: Path, parked: asyncio.Event | None = None
) -> MqttConsumer:
    def on_event(name: str) -> None:
        if parked is not None and name == "parked":
            parked.set()

    return MqttConsumer(
        source,
        handler,
        progress=lambda: 0,
        after_durable=lambda cb: cb(),
        park_dir=park,
        on_event=on_event,
    )


@contextlib.asynccontextmanager
async def _running(source: MqttSource, consumer: MqttConsumer) -> AsyncIterator[None]:
    """The consumer runs for the block; then it is cancelled and the source stopped."""
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.stop()


@pytest.mark.asyncio
async def test_failed_message_is_retried_not_dropped(
    mqtt_broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg, topic = _fresh_section(mqtt_broker.port)
    source = await Link(cfg).connected()
    handler = Handler(OSError(24, "Too many open files"), failures=3)
    async with _running(source, _consumer(source, handler, tmp_path / "parked")):
        await asyncio.to_thread(_publish, mqtt_broker.port, topic, b"one")
        got = await asyncio.wait_for(handler.handled.get(), TIMEOUT)
        assert got == b"one"
        assert handler.calls == 4


@pytest.mark.asyncio
async def test_message_still_failing_stays_with_the_broker(
    mqtt_broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg, topic = _fresh_section(mqtt_broker.port)
    source = await Link(cfg).connected()
    failing = Handler(OSError(28, "No space left on device"), failures=10**6)
    async with _running(source, _consumer(source, failing, tmp_path / "parked")):
        await asyncio.to_thread(_publish, mqtt_broker.port, topic, b"kept")
        await asyncio.wait_for(failing.failed.wait(), TIMEOUT)  # failed twice by now
    # Same session again: the broker still has the message, so it was never acknowledged.
    again = await Link(cfg).connected()
    healthy = Handler(None, 0)
    async with _running(again, _consumer(again, healthy, tmp_path / "parked")):
        assert await asyncio.wait_for(healthy.handled.get(), TIMEOUT) == b"kept"


@pytest.mark.asyncio
async def test_message_failing_by_a_bug_is_parked_then_acknowledged(
    mqtt_broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg, topic = _fresh_section(mqtt_broker.port)
    park = tmp_path / "parked"
    source = await Link(cfg).connected()
    buggy = Handler(ValueError("a bug"), failures=10**6)
    parked_event = asyncio.Event()
    async with _running(source, _consumer(source, buggy, park, parked_event)):
        await asyncio.to_thread(_publish, mqtt_broker.port, topic, b"poison")
        await asyncio.wait_for(parked_event.wait(), TIMEOUT)
    (parked,) = park.glob("*.json")
    doc = json.loads(parked.read_text())
    assert doc["topic"] == topic
    assert base64.b64decode(doc["payload_b64"]) == b"poison"
    assert "a bug" in doc["error"]
    # Parked means acknowledged: on the same session the broker offers a later message, not the
    # parked one. The next start, with the fault fixed, processes the parked one from its file
    # (before anything from the broker) and removes the file.
    again = await Link(cfg).connected()
    healthy = Handler(None, 0)
    async with _running(again, _consumer(again, healthy, park)):
        assert await asyncio.wait_for(healthy.handled.get(), TIMEOUT) == b"poison"
        await asyncio.to_thread(_publish, mqtt_broker.port, topic, b"marker")
        assert await asyncio.wait_for(healthy.handled.get(), TIMEOUT) == b"marker"
        assert healthy.handled.empty()
    assert list(park.glob("*.json")) == []


@pytest.mark.asyncio
async def test_parked_message_failing_again_at_start_stays_parked(
    mqtt_broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, topic = _fresh_section(mqtt_broker.port)
    park = tmp_path / "parked"
    source = await Link(cfg).connected()
    parked_event = asyncio.Event()
    buggy = Handler(ValueError("a bug"), failures=10**6)
    async with _running(source, _consumer(source, buggy, park, parked_event)):
        await asyncio.to_thread(_publish, mqtt_broker.port, topic, b"poison")
        await asyncio.wait_for(parked_event.wait(), TIMEOUT)
    (parked,) = park.glob("*.json")
    (park / "0-torn.json").write_text('{"topic": ')  # a damaged file is skipped, not fatal
    # Still buggy at the next start: tried once, kept, and the broker's messages still flow.
    again = await Link(cfg).connected()
    still = Handler(ValueError("a bug"), failures=1)
    async with _running(again, _consumer(again, still, park)):
        await asyncio.to_thread(_publish, mqtt_broker.port, topic, b"next")
        assert await asyncio.wait_for(still.handled.get(), TIMEOUT) == b"next"
    assert still.calls == 2
    assert parked.exists()
    assert f"parked message {parked.name} still fails" in caplog.text
    assert "parked message 0-torn.json unreadable" in caplog.text


def test_daemon_processes_a_parked_message_at_start(
    mqtt_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The whole path: a file as parking writes it, the real daemon, its real ingest."""
    report = (Path(__file__).parent / "data" / "vs121p" / "line_interval.json").read_bytes()
    park = tmp_path / "state" / "parked"
    park.mkdir(parents=True)
    doc = {
        "topic": "vs121p/foyer",
        "payload_b64": base64.b64encode(report).decode(),
        "received_at": 1_700_000_000.0,
        "error": "ValueError('a bug fixed since')",
    }
    (park / "1700000000000-1-1.json").write_text(json.dumps(doc))
    port = new_http_port()
    cfg = gateway_config(
        tmp_path / "state",
        mqtt_port=mqtt_broker.port,
        http_port=port,
        subscriptions=ALL_SUBSCRIPTIONS,
    )
    daemon = Daemon(tmp_path, cfg, http_port=port)
    daemon.start()
    try:
        daemon.wait_until(
            lambda: daemon.metric("vs121gw_mqtt_message_faults_total", event="replayed") == 1,
            what="parked message replayed",
        )
        assert daemon.values("foyer")["gateway_total_in"] == json.loads(report)["in_counted"]
        daemon.wait_until(lambda: not list(park.glob("*.json")), what="parked file removed")
        assert "parked message 1700000000000-1-1.json processed and removed" in daemon.log_text()
    finally:
        daemon.stop()
