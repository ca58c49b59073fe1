"""MqttSource and its settings, against real mosquitto brokers on 127.0.0.1.

Most tests share the session broker (`mqtt_broker`); those that need other broker options
(a password file, a TLS listener) start their own with `LocalBroker` below. Every test uses its
own client ids and topics, so they do not see each other's sessions or messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from helpers.broker import MosquittoBroker, free_port
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.mqtt_settings import MqttSection, MqttSubscription, MqttTls
from gateway.mqtt_source import (
    METRIC_OVERFLOW,
    METRIC_RECEIVED,
    OFFLINE,
    ONLINE,
    MqttMessage,
    MqttSource,
)

TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- test doubles -----------------------------------------------------------------------------


class Peer:
    """A plain paho client on the other side: publishes, and queues what it receives."""

    def __init__(self, host: str, port: int, auth: tuple[str, str] | None = None) -> None:
        self._host, self._port = host, port
        self._loop = asyncio.get_running_loop()
        self.received: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self._acks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._connected: asyncio.Future[ReasonCode] = self._loop.create_future()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("peer"))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        if auth is not None:
            self.client.username_pw_set(*auth)

    async def connect(self) -> None:
        await asyncio.to_thread(self.client.connect, self._host, self._port)
        self.client.loop_start()
        code = await asyncio.wait_for(self._connected, TIMEOUT)
        assert not code.is_failure, f"peer refused: {code}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    async def subscribe(self, topic: str) -> None:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        # The SUBACK is handled in this loop (see _on_subscribe), so it cannot overtake this.
        future = self._acks[mid] = self._loop.create_future()
        codes = await asyncio.wait_for(future, TIMEOUT)
        assert not any(code.is_failure for code in codes)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish and return once the broker has taken the message."""
        info = self.client.publish(topic, payload, qos=qos)
        await asyncio.to_thread(info.wait_for_publish, TIMEOUT)
        assert info.is_published()

    async def next(self) -> mqtt.MQTTMessage:
        return await asyncio.wait_for(self.received.get(), TIMEOUT)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._set_connected, reason_code)

    def _set_connected(self, code: ReasonCode) -> None:
        if not self._connected.done():
            self._connected.set_result(code)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._subscribed, mid, reason_codes)

    def _subscribed(self, mid: int, reason_codes: list[ReasonCode]) -> None:
        self._acks.pop(mid).set_result(reason_codes)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.received.put_nowait, message)


class Probe:
    """Collects the source's callbacks so tests can await them."""

    def __init__(self) -> None:
        self.transitions: asyncio.Queue[bool] = asyncio.Queue()
        self.counts: Counter[str] = Counter()
        self._changed = asyncio.Event()

    def on_connected(self, up: bool) -> None:
        self.transitions.put_nowait(up)

    def metrics(self, name: str, amount: int) -> None:
        self.counts[name] += amount
        self._changed.set()

    async def transition(self) -> bool:
        return await asyncio.wait_for(self.transitions.get(), TIMEOUT)

    async def count_reaches(self, name: str, amount: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.counts[name] < amount:
                self._changed.clear()
                await self._changed.wait()


def section(
    host: str, port: int, *, subscriptions: list[MqttSubscription], **kw: Any
) -> MqttSection:
    kw.setdefault("client_id", unique("gw"))
    kw.setdefault("status_topic", f"{unique('status')}/status")
    return MqttSection(
        enabled=True,
        host=host,
        port=port,
        reconnect_min=0.1,
        reconnect_max=0.5,
        subscriptions=subscriptions,
        **kw,
    )


def sub(name: str, topic: str, envelope: str = "vs121p", **kw: Any) -> MqttSubscription:
    return MqttSubscription.model_validate(
        {"name": name, "topic": topic, "envelope": envelope, **kw}
    )


@contextlib.asynccontextmanager
async def running(cfg: MqttSection, probe: Probe | None = None) -> AsyncIterator[MqttSource]:
    """A started source that has connected and subscribed; stopped on exit."""
    probe = probe or Probe()
    source = MqttSource(cfg, on_connected=probe.on_connected, metrics_hook=probe.metrics)
    await source.start()
    try:
        assert await probe.transition() is True
        assert source.connected
        yield source
    finally:
        await source.stop()


@contextlib.asynccontextmanager
async def peer_of(host: str, port: int, auth: tuple[str, str] | None = None) -> AsyncIterator[Peer]:
    peer = Peer(host, port, auth)
    await peer.connect()
    try:
        yield peer
    finally:
        peer.close()


async def next_message(source: MqttSource) -> MqttMessage:
    return await asyncio.wait_for(source.get(), TIMEOUT)


async def take_all(source: MqttSource, payloads: set[bytes]) -> None:
    """Take and acknowledge messages, as the gateway does, until every one of `payloads` came."""
    seen: set[bytes] = set()
    while seen != payloads:
        msg = await next_message(source)
        seen.add(msg.payload)
        source.ack(msg)


class LocalBroker:
    """A mosquitto of our own, for options the shared broker does not have (TLS, passwords).

    Ready when it logs "running"; its log is drained in the background so it never blocks.
    """

    def __init__(self, workdir: Path, *config: str) -> None:
        self.host, self.port = HOST, free_port()
        self._conf = workdir / f"mosquitto-{self.port}.conf"
        # `user root`: otherwise mosquitto, started as root, switches user and cannot read files
        # in pytest's private temporary directory.
        self._conf.write_text(
            "\n".join(["user root", "log_dest stderr", "persistence false", *config, ""])
        )
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.log: list[str] = []

    async def __aenter__(self) -> LocalBroker:
        executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._process = await asyncio.create_subprocess_exec(
            executable,
            "-c",
            str(self._conf),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self._process.stderr is not None
        stderr = self._process.stderr
        async with asyncio.timeout(TIMEOUT):
            while not any(" running" in line for line in self.log):
                line = await stderr.readline()
                assert line, f"mosquitto exited: {self.log}"
                self.log.append(line.decode(errors="replace"))
        self._drain = asyncio.create_task(self._keep_reading(stderr))
        return self

    async def _keep_reading(self, stderr: asyncio.StreamReader) -> None:
        while line := await stderr.readline():
            self.log.append(line.decode(errors="replace"))

    async def __aexit__(self, *exc: object) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()
        await asyncio.wait_for(self._process.wait(), TIMEOUT)
        if self._drain is not None:
            await self._drain


# -- delivery ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_messages_arrive_with_their_subscription(mqtt_broker: MosquittoBroker) -> None:
    root = unique("t")
    subs = [
        sub("cs", f"{root}/application/+/device/+/event/up", "chirpstack"),
        sub("raw", f"{root}/raw/+/up", "raw", raw_topic_pattern=f"{root}/raw/{{dev_eui}}/up"),
    ]
    probe = Probe()
    cfg = section(mqtt_broker.host, mqtt_broker.port, subscriptions=subs)
    async with running(cfg, probe) as source, peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
        await peer.publish(f"{root}/application/7/device/24e1/event/up", b'{"fCnt": 1}')
        await peer.publish(f"{root}/raw/24e124538c123456/up", b"\x04\xc9\x03")

        first, second = await next_message(source), await next_message(source)

        assert first.subscription is not None
        assert first.subscription.name == "cs"
        assert (first.topic, first.payload, first.qos) == (
            f"{root}/application/7/device/24e1/event/up",
            b'{"fCnt": 1}',
            1,
        )
        assert second.subscription is not None
        assert second.subscription.name == "raw"
        assert second.payload == b"\x04\xc9\x03"
        assert not first.retain
        assert not first.dup
        assert source.depth() == 0
        assert probe.counts[METRIC_RECEIVED] == 2
        source.ack(first)
        source.ack(second)


@pytest.mark.asyncio
async def test_resubscribes_after_the_broker_restarts(mqtt_broker: MosquittoBroker) -> None:
    topic = f"{unique('t')}/up"
    probe = Probe()
    cfg = section(mqtt_broker.host, mqtt_broker.port, subscriptions=[sub("s", topic)])
    async with running(cfg, probe) as source:
        # The shared broker has no persistence: the restart forgets our session and
        # subscription, so only a fresh SUBSCRIBE brings messages again.
        await asyncio.to_thread(mqtt_broker.restart)
        assert await probe.transition() is False
        assert await probe.transition() is True

        async with peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
            await peer.publish(topic, b"after restart")
            msg = await next_message(source)

        assert msg.payload == b"after restart"
        source.ack(msg)


@pytest.mark.asyncio
async def test_publish_sends_downlinks(mqtt_broker: MosquittoBroker) -> None:
    down = f"{unique('t')}/down"
    cfg = section(mqtt_broker.host, mqtt_broker.port, subscriptions=[])
    async with running(cfg) as source, peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
        await peer.subscribe(down)
        source.publish(down, b'{"fPort": 85}')
        got = await peer.next()
    assert (got.topic, got.payload, got.qos) == (down, b'{"fPort": 85}', 1)


# -- acknowledgement and persistent sessions --------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_unacked_message_is_redelivered_and_acked_one_is_not(
    mqtt_broker: MosquittoBroker, protocol: str
) -> None:
    topic = f"{unique('t')}/up"
    cfg = section(
        mqtt_broker.host, mqtt_broker.port, subscriptions=[sub("s", topic)], protocol=protocol
    )
    async with peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
        # A clean stop() (with DISCONNECT) without an ack: the session keeps the message.
        async with running(cfg) as source:
            await peer.publish(topic, b"count 1")
            first = await next_message(source)
            assert first.payload == b"count 1"

        async with running(cfg) as source:
            again = await next_message(source)
            assert again.payload == b"count 1"
            assert again.dup
            source.ack(again)

        async with running(cfg) as source:
            # Redeliveries come straight after CONNACK, so had the broker kept "count 1" it
            # would arrive before a message published only now.
            await peer.publish(topic, b"marker")
            assert (await next_message(source)).payload == b"marker"


@pytest.mark.asyncio
async def test_ack_from_an_earlier_connection_is_not_sent(mqtt_broker: MosquittoBroker) -> None:
    topic = f"{unique('t')}/up"
    probe = Probe()
    cfg = section(mqtt_broker.host, mqtt_broker.port, subscriptions=[sub("s", topic)])
    async with running(cfg, probe) as source:
        async with peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
            await peer.publish(topic, b"before")
        before = await next_message(source)
        # The restarted broker has forgotten the session, and numbers packets from 1 again.
        await asyncio.to_thread(mqtt_broker.restart)
        assert await probe.transition() is False
        assert await probe.transition() is True
        async with peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
            await peer.publish(topic, b"after")
        after = await next_message(source)
        assert after.mid == before.mid  # the same packet id, on the new connection

        source.ack(before)  # too late: sent now, it would acknowledge "after" instead

    async with running(cfg) as source:
        assert (await next_message(source)).payload == b"after"


# A gateway process that prints what it receives, never acks, and is killed with SIGKILL.
CHILD = """
import asyncio, sys
from gateway.mqtt_settings import MqttSection
from gateway.mqtt_source import MqttSource

async def main() -> None:
    cfg = MqttSection.model_validate_json(sys.argv[1])
    say = lambda up: print("connected" if up else "down", flush=True)
    source = MqttSource(cfg, on_connected=say)
    await source.start()
    while True:
        msg = await source.get()
        print("got", msg.payload.decode(), flush=True)

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_killed_process_leaves_offline_will_and_unacked_message(
    mqtt_broker: MosquittoBroker,
) -> None:
    topic = f"{unique('t')}/up"
    # Keepalive 1 s: the broker declares the killed client gone after 1.5 s of silence.
    cfg = section(mqtt_broker.host, mqtt_broker.port, subscriptions=[sub("s", topic)], keepalive=1)
    async with peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
        await peer.subscribe(cfg.status_topic)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            cfg.model_dump_json(),
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), TIMEOUT)
            assert line == b"connected\n"
            assert (await peer.next()).payload == ONLINE

            await peer.publish(topic, b"count 7")
            assert await asyncio.wait_for(child.stdout.readline(), TIMEOUT) == b"got count 7\n"
        finally:
            child.kill()  # SIGKILL: no DISCONNECT, no offline status of its own
            await child.wait()

        assert (await peer.next()).payload == OFFLINE

    # The next process with the same client id gets the message the dead one never acked.
    async with running(cfg) as source:
        msg = await next_message(source)
        assert msg.payload == b"count 7"
        source.ack(msg)


@pytest.mark.asyncio
async def test_start_with_the_broker_down_returns_and_retries_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    probe = Probe()
    cfg = section(HOST, free_port(), subscriptions=[])  # nothing listens there
    source = MqttSource(cfg, on_connected=probe.on_connected, metrics_hook=probe.metrics)
    await source.start()
    try:
        await probe.count_reaches("connect_failed", 3)
        assert not source.connected
    finally:
        await asyncio.wait_for(source.stop(), TIMEOUT)
    failures = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(failures) == 1  # one line for the outage, not one per attempt
    assert "Connection refused" in failures[0].getMessage()
    assert failures[0].exc_info is None


# -- status topic -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_is_online_while_running_and_offline_after_stop(
    mqtt_broker: MosquittoBroker,
) -> None:
    cfg = section(mqtt_broker.host, mqtt_broker.port, subscriptions=[])
    async with peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
        await peer.subscribe(cfg.status_topic)
        async with running(cfg):
            assert (await peer.next()).payload == ONLINE
        assert (await peer.next()).payload == OFFLINE

    # Both are retained: a late subscriber learns the current status at once.
    async with peer_of(mqtt_broker.host, mqtt_broker.port) as late:
        await late.subscribe(cfg.status_topic)
        status = await late.next()
    assert (status.payload, status.retain) == (OFFLINE, True)


# -- overflow ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_overflow_is_counted_and_dropped_messages_come_back(
    mqtt_broker: MosquittoBroker,
) -> None:
    topic = f"{unique('t')}/up"
    probe = Probe()
    # MQTT 3.1.1: mosquitto keeps up to 20 unacknowledged messages in flight to us
    # (max_inflight_messages), twice what this queue holds.
    cfg = section(
        mqtt_broker.host, mqtt_broker.port, subscriptions=[sub("s", topic)], queue_size=10
    )
    sent = {f"m{i}".encode() for i in range(30)}
    async with running(cfg, probe) as source, peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
        for payload in sorted(sent):
            await peer.publish(topic, payload)
        await probe.count_reaches(METRIC_OVERFLOW, 10)
        assert source.depth() == 10

        # Drain as the gateway does. Once the backlog is processed and acknowledged the source
        # reconnects, and the broker delivers the ones it dropped (never acknowledged) again.
        await take_all(source, sent)
        assert await probe.transition() is False  # the deliberate reconnect
        assert await probe.transition() is True

    # More than ten when mosquitto overshoots its in-flight window while acks stream back
    # (seen with 2.0.11); those come again after the reconnect too.
    assert probe.counts[METRIC_OVERFLOW] >= 10


@pytest.mark.asyncio
async def test_mqtt5_receive_maximum_holds_the_backlog_at_the_broker(
    mqtt_broker: MosquittoBroker,
) -> None:
    topic = f"{unique('t')}/up"
    probe = Probe()
    cfg = section(
        mqtt_broker.host,
        mqtt_broker.port,
        subscriptions=[sub("s", topic)],
        queue_size=10,
        protocol="5",
    )
    sent = {f"m{i:02}".encode() for i in range(30)}
    async with peer_of(mqtt_broker.host, mqtt_broker.port) as peer:
        async with running(cfg, probe) as source:
            for payload in sorted(sent):
                await peer.publish(topic, payload)
            await probe.count_reaches(METRIC_RECEIVED, 10)
            assert source.depth() == 10
        # stop() waits for the broker to answer its "offline", so anything the broker had sent
        # before that has been counted: with Receive Maximum 10 it sent no more than fit.
        assert probe.counts[METRIC_OVERFLOW] == 0

        # The session (clean_start false, expiry set) kept all thirty for the next start.
        async with running(cfg) as source:
            await take_all(source, sent)


# -- credentials ------------------------------------------------------------------------------


def test_password_never_shows_in_repr_str_or_json() -> None:
    cfg = MqttSection(username="gw", password="hunter2-secret")
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), repr(cfg.password)):
        assert "hunter2" not in text
    assert cfg.read_password() == "hunter2-secret"


def test_password_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "mqtt-password"
    path.write_text("s3cret pass\r\n")
    cfg = MqttSection(username="gw", password_file=path)
    assert cfg.read_password() == "s3cret pass"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"username": "gw", "password": "a", "password_file": "/x"}, "not both"),
        ({"password": "a"}, "needs a username"),
        ({"reconnect_min": 10, "reconnect_max": 5}, "reconnect_max"),
        ({"status_topic": "gw/+/status"}, "wildcards"),
        ({"queue_size": 5}, "greater than or equal to 10"),
    ],
)
def test_section_rejects_bad_combinations(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MqttSection.model_validate(settings)


@pytest.mark.parametrize("topic", ["a/+/b", "#", "a/#", "+", "/milesight/uplink", "a/b c/d"])
def test_subscription_accepts_sound_filters(topic: str) -> None:
    assert sub("s", topic).topic == topic


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("", "must not be empty"),
        ("a/#/b", "'#' is allowed only as the last level"),
        ("a/b#", "mixes text with a wildcard"),
        ("a+/b", "mixes text with a wildcard"),
        ("a//b", "empty level"),
        ("a/b/", "empty level"),
        ("a/\0", "NUL"),
    ],
)
def test_subscription_rejects_unsound_filters(topic: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        sub("s", topic)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"envelope": "raw"}, "needs raw_topic_pattern"),
        ({"envelope": "raw", "raw_topic_pattern": "s/{dev_eui}"}, "not matched by the filter"),
        ({"envelope": "raw", "raw_topic_pattern": "s/x{dev_eui}/up"}, "whole {dev_eui} level"),
        ({"envelope": "tts", "raw_topic_pattern": "s/{dev_eui}/up"}, "only to envelope 'raw'"),
        ({"envelope": "vs121p", "downlink_topic": "d/{dev_eui}"}, "only to envelopes"),
        ({"envelope": "chirpstack", "downlink_topic": "d/{eui}"}, "unknown placeholder eui"),
        ({"envelope": "milesight", "tts_tenant": "t"}, "applies only to envelope 'tts'"),
        ({"envelope": "milesight", "downlink_topic": "d/+/x"}, "wildcards"),
        ({"envelope": "milesight", "downlink_topic": "d/{app}"}, "can only use the device EUI"),
        ({"envelope": "milesight", "downlink_topic": "d//{dev_eui}"}, "empty level"),
    ],
)
def test_subscription_options_must_fit_the_envelope(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        MqttSubscription.model_validate({"name": "s", "topic": "s/+/up", **fields})


def test_subscription_options_for_their_envelope_are_kept() -> None:
    raw = sub("r", "s/+/up", "raw", raw_topic_pattern="s/{dev_eui}/up")
    milesight = sub("m", "ms/up", "milesight", downlink_topic="ms/down/{dev_eui}")
    tts = sub("t", "v3/+/devices/+/up", "tts", tts_application="app", tts_tenant="ten")
    assert raw.raw_topic_pattern == "s/{dev_eui}/up"
    assert milesight.downlink_topic == "ms/down/{dev_eui}"
    assert (tts.tts_application, tts.tts_tenant) == ("app", "ten")


@pytest.mark.parametrize(
    ("envelope", "template"),
    [
        # As Milesight documents its downlink topic: its own wildcard, a trailing slash.
        ("milesight", "/eg/downlink/$deveui/"),
        ("milesight", "/eg/downlink/{DEV_EUI}/"),
        ("milesight", "site/down/{dev_eui}"),
        ("chirpstack", "application/{app}/device/{dev_eui}/command/down"),
        ("chirpstack", "cs/{DEV_EUI}/down"),
        ("tts", "v3/{app}@{tenant}/devices/{device_id}/down/replace"),
    ],
)
def test_downlink_topics_as_the_network_servers_document_them(envelope: str, template: str) -> None:
    assert sub("d", "x/#", envelope, downlink_topic=template).downlink_topic == template


def test_milesight_subscription_topics_as_documented() -> None:
    documented = sub("m", "/eg/uplink/$deveui/", "milesight")
    assert documented.topic == "/eg/uplink/+/"
    assert sub("m", "/eg/uplink/", "milesight").topic == "/eg/uplink/"
    with pytest.raises(ValidationError, match="empty level"):
        sub("c", "application/+/device/+/event/up/", "chirpstack")


def test_check_config_accepts_milesight_topics_as_documented(tmp_path: Path) -> None:
    from gateway.cli import main

    cfg = tmp_path / "ms.toml"
    cfg.write_text(
        "[mqtt]\nenabled = true\n"
        '[[mqtt.subscriptions]]\nname = "ms"\ntopic = "/eg/uplink/$deveui/"\n'
        'envelope = "milesight"\ndownlink_topic = "/eg/downlink/$deveui/"\n'
        '[[sensors]]\nid = "a"\nname = "A"\nnumber = 1\nmodel = "vs121"\n'
        'dev_eui = "24E124527F418093"\n'
    )
    assert main(["check-config", str(cfg)]) == 0


def test_subscription_names_are_unique() -> None:
    with pytest.raises(ValidationError, match="used twice"):
        MqttSection(subscriptions=[sub("s", "a/#"), sub("s", "b/#")])


@pytest.mark.asyncio
async def test_missing_password_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    cfg = MqttSection(username="gw", password_file=missing, port=free_port())
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        await MqttSource(cfg).start()


def passwd_file(tmp_path: Path, user: str, password: str) -> Path:
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd is missing (it comes with mosquitto)")
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True)
    return path


@pytest.mark.asyncio
async def test_password_file_authenticates_and_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = passwd_file(tmp_path, "gw", "pa55-word")
    secret = tmp_path / "secret"
    secret.write_text("pa55-word\n")
    conf = ["allow_anonymous false", f"password_file {users}"]
    caplog.set_level(logging.DEBUG, logger="gateway")
    port = free_port()
    async with LocalBroker(tmp_path, *conf, f"listener {port} {HOST}") as broker:
        topic = f"{unique('t')}/up"
        cfg = section(
            HOST, port, subscriptions=[sub("s", topic)], username="gw", password_file=secret
        )
        async with running(cfg) as source, peer_of(HOST, port, ("gw", "pa55-word")) as peer:
            await peer.publish(topic, b"authenticated")
            assert (await next_message(source)).payload == b"authenticated"
    assert any(cfg.client_id in line and "u'gw'" in line for line in broker.log)
    assert "pa55-word" not in caplog.text


@pytest.mark.asyncio
async def test_wrong_password_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = passwd_file(tmp_path, "gw", "right")
    port = free_port()
    conf = ["allow_anonymous false", f"password_file {users}", f"listener {port} {HOST}"]
    caplog.set_level(logging.INFO, logger="gateway")
    probe = Probe()
    async with LocalBroker(tmp_path, *conf):
        cfg = section(HOST, port, subscriptions=[], username="gw", password="wrong-one")
        source = MqttSource(cfg, on_connected=probe.on_connected, metrics_hook=probe.metrics)
        await source.start()
        try:
            await probe.count_reaches("connect_failed", 3)
            assert not source.connected
        finally:
            await source.stop()
    refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refusals) == 1
    assert "Not authorized" in refusals[0].getMessage()
    assert "wrong-one" not in caplog.text
    assert probe.transitions.empty()


# -- TLS --------------------------------------------------------------------------------------


def test_tls_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(ValidationError, match=re.escape(str(missing))):
        MqttTls(ca_file=missing)


def test_tls_needs_cert_and_key_together(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        MqttTls(cert_file=cert)


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 (and one from an unrelated CA)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", "2"]
    for ca in ("ca", "other-ca"):
        files = ["-keyout", f"{ca}.key", "-out", f"{ca}.pem"]
        run("req", "-x509", *ec, *days, *files, "-subj", f"/CN={ca}")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    signed_by_ca = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "san.ext"]
    run("x509", "-req", *days, *signed_by_ca, "-in", "server.csr", "-out", "server.pem")
    return {
        "ca": tmp_path / "ca.pem",
        "other-ca": tmp_path / "other-ca.pem",
        "server": tmp_path / "server.pem",
        "server-key": tmp_path / "server.key",
    }


@pytest.mark.asyncio
async def test_tls_connects_verifies_and_warns_when_verification_is_off(
    tmp_path: Path, certificates: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    conf = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        f"certfile {certificates['server']}",
        f"keyfile {certificates['server-key']}",
    ]
    caplog.set_level(logging.INFO, logger="gateway")
    async with LocalBroker(tmp_path, *conf):
        good = section(HOST, port, subscriptions=[], tls=MqttTls(ca_file=certificates["ca"]))
        async with running(good) as source:
            assert source.connected

        # The wrong CA: never connected, and the reason is in the log.
        probe = Probe()
        wrong = section(HOST, port, subscriptions=[], tls=MqttTls(ca_file=certificates["other-ca"]))
        source = MqttSource(wrong, on_connected=probe.on_connected, metrics_hook=probe.metrics)
        await source.start()
        try:
            await probe.count_reaches("connect_failed", 2)
        finally:
            await source.stop()
        assert probe.transitions.empty()
        assert "certificate verify failed" in caplog.text

        insecure = section(HOST, port, subscriptions=[], tls=MqttTls(verify=False))
        async with running(insecure) as source:
            assert source.connected
    warnings = [r for r in caplog.records if "verification is off" in r.getMessage()]
    assert len(warnings) == 1


def test_config_is_json_round_trippable_for_child_processes() -> None:
    cfg = section(HOST, 1883, subscriptions=[sub("s", "a/+/up")])
    assert MqttSection.model_validate_json(cfg.model_dump_json()) == cfg
    assert json.loads(cfg.model_dump_json())["subscriptions"][0]["name"] == "s"
