"""MQTT source: paho-mqtt's own network thread, bridged into the asyncio event loop.

paho runs `loop_start()` in its thread and reconnects by itself with capped exponential backoff.
Its callbacks hand every message to the event loop with `call_soon_threadsafe`, into a bounded
`asyncio.Queue` that the gateway drains with `get()`.

Nothing the broker hands over is lost to a crash: subscriptions use QoS 1 with a persistent
session (stable client id; MQTT 3.1.1 clean_session=False, MQTT 5 clean_start=False with a
session expiry), and messages are acknowledged manually with `ack()`, which the gateway calls
only once the message's effect is on disk. A message not acknowledged before a crash or a
disconnect stays in the broker's session and is delivered again on the next connection.

The retained status topic says "online" while connected; a clean `stop()` writes "offline", and
the broker writes it for us (the will) when the connection dies without a goodbye.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.errors import ConfigError
from gateway.mqtt_settings import MqttSection, MqttSubscription

__all__ = [
    "METRIC_CONNECTED",
    "METRIC_CONNECT_FAILED",
    "METRIC_DISCONNECTED",
    "METRIC_OVERFLOW",
    "METRIC_RECEIVED",
    "OFFLINE",
    "ONLINE",
    "MqttMessage",
    "MqttSource",
]

log = logging.getLogger(__name__)

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"

# Names passed to metrics_hook(name, amount); all are counters.
METRIC_RECEIVED: Final = "received"
METRIC_OVERFLOW: Final = "overflow"
METRIC_CONNECTED: Final = "connected"
METRIC_DISCONNECTED: Final = "disconnected"
METRIC_CONNECT_FAILED: Final = "connect_failed"

# MQTT 5: how long the broker keeps our session (and queues QoS 1 messages) while we are away.
SESSION_EXPIRY_S: Final = 24 * 3600
# Default bound on how long stop() waits for the broker to take the "offline" status.
STOP_TIMEOUT_S: Final = 5.0
_RECEIVE_MAXIMUM_LIMIT: Final = 65535
# Connection numbers, unique in the process, so a message from one source or connection can
# never pass for one of another (see MqttSource.ack).
_CONNECTIONS: Final = itertools.count(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttMessage:
    """One message as delivered by the broker.

    `subscription` is the first configured subscription whose filter matches the topic (None if
    none does, e.g. a leftover subscription of the persistent session). `received_at` is wall
    clock time (unix seconds). `connection` numbers the connection that delivered the message:
    an acknowledgement is only meaningful on that connection (see `MqttSource.ack`).
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    subscription: MqttSubscription | None
    received_at: float
    dup: bool = False
    connection: int = 0
    arrived: float | None = None  # time.monotonic() at arrival, for the acknowledgement's delay


class MqttSource:
    """Receives MQTT messages into the event loop; see the module docstring for the guarantees.

    `on_connected(bool)` runs in the event loop on each transition; "connected" means the broker
    has answered our subscriptions, so messages published from then on reach us.
    `metrics_hook(name, amount)` runs in the event loop with the METRIC_* names; `on_ack(seconds)`
    gets each acknowledgement's delay since the message arrived, in the thread that acks.
    Use from one event loop; `ack` and `publish` may be called from any thread.
    """

    def __init__(
        self,
        cfg: MqttSection,
        *,
        on_connected: Callable[[bool], None] | None = None,
        metrics_hook: Callable[[str, int], None] | None = None,
        on_ack: Callable[[float], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._on_connected = on_connected
        self._metrics = metrics_hook
        self._on_ack = on_ack
        self._queue: asyncio.Queue[MqttMessage] = asyncio.Queue(maxsize=cfg.queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        # Serialises starting, reconnecting on purpose and stopping the network thread.
        self._net_lock = threading.Lock()
        # Guards `_link`, the number of the live connection, which `ack` checks (any thread),
        # and `_outstanding`, messages of that connection handed out by get() and not yet acked.
        self._ack_lock = threading.Lock()
        self._link: int | None = None
        self._outstanding = 0
        # Owned by paho's thread.
        self._session_up = False
        self._last_failure: str | None = None
        self._suback_mid: int | None = None
        self._quiet = False  # set while we disconnect on purpose
        # Owned by the event loop.
        self._connected = False
        self._loop_link: int | None = None
        self._burst = 0
        self._unacked_drops = 0
        self._recovery: asyncio.Task[None] | None = None
        self._puback_waiters: dict[int, asyncio.Future[None]] = {}
        self._stopping = False

    # -- public API ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def depth(self) -> int:
        """Messages waiting in the queue for `get()`."""
        return self._queue.qsize()

    async def get(self) -> MqttMessage:
        msg = await self._queue.get()
        if msg.qos:
            with self._ack_lock:
                if msg.connection == self._link:
                    self._outstanding += 1
        return msg

    async def start(self) -> None:
        """Start connecting in the background and return at once.

        Never waits for the broker and never fails because it is down: paho keeps retrying with
        capped backoff. Raises ConfigError if the password file or TLS files cannot be loaded.
        """
        if self._client is not None:
            raise RuntimeError("MqttSource is already started")
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        # Reading the password file and the TLS files is disk I/O: keep it off the loop.
        await asyncio.to_thread(self._launch)

    async def stop(self, status_wait: float = STOP_TIMEOUT_S) -> None:
        """Say "offline" (waiting at most `status_wait` s for the broker to take it), disconnect.

        Messages not yet acknowledged stay in the broker's session for the next start.
        """
        if self._client is None:
            return
        self._stopping = True
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        await asyncio.to_thread(self._shutdown, status_wait)

    def ack(self, msg: MqttMessage) -> None:
        """Acknowledge `msg` to the broker, which then forgets it. Call once its effect is durable.

        Call it for messages the gateway rejects as well, or the broker offers them again after
        every reconnect. Thread-safe. An ack for a message from an earlier connection is not sent:
        on a new session the same packet id may name a different, unprocessed message; on a
        resumed session the broker delivers the message again anyway, and that copy is acked.
        """
        with self._ack_lock:
            client = self._client
            live = client is not None and msg.connection == self._link
            sent = bool(msg.qos and live and client is not None)
            if sent and client is not None:
                client.ack(msg.mid, msg.qos)
                self._outstanding = max(0, self._outstanding - 1)
            idle = self._outstanding == 0
        if sent and self._on_ack is not None and msg.arrived is not None:
            self._on_ack(time.monotonic() - msg.arrived)
        if msg.qos and not live:
            log.debug("MQTT ack for mid %d not sent: its connection is gone", msg.mid)
        # Whatever the message, the last ack of a backlog is when dropped ones can be fetched.
        if idle and self._unacked_drops:
            self._to_loop(self._maybe_recover)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a message for the broker (downlinks). Thread-safe.

        While disconnected paho keeps QoS 1/2 messages and sends them after reconnecting;
        QoS 0 messages are dropped. Raises ValueError for a topic with wildcards.
        """
        client = self._client
        if client is None:
            raise RuntimeError("MqttSource is not started")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("MQTT publish on %s queued while disconnected (%s)", topic, info.rc)

    # -- network thread lifecycle (worker threads) --------------------------------------------

    def _launch(self) -> None:
        client = self._build(self._cfg.read_password())
        with self._net_lock:
            self._client = client
            self._connect(client)

    def _build(self, password: str | None) -> mqtt.Client:
        cfg = self._cfg
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            # MQTT 5 takes clean_start at connect time instead.
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        # An exception escaping a callback would end paho's thread, and with it reconnection.
        client.suppress_exceptions = True
        # paho annotates the delays as int but computes with floats.
        client.reconnect_delay_set(cast(int, cfg.reconnect_min), cast(int, cfg.reconnect_max))
        client.will_set(cfg.status_topic, OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            self._set_tls(client)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _set_tls(self, client: mqtt.Client) -> None:
        tls = self._cfg.tls
        assert tls is not None
        try:
            client.tls_set(
                ca_certs=None if tls.ca_file is None else str(tls.ca_file),
                certfile=None if tls.cert_file is None else str(tls.cert_file),
                keyfile=None if tls.key_file is None else str(tls.key_file),
                cert_reqs=ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            files = ", ".join(
                f"{name}={str(path)!r}"
                for name, path in (
                    ("ca_file", tls.ca_file),
                    ("cert_file", tls.cert_file),
                    ("key_file", tls.key_file),
                )
                if path is not None
            )
            raise ConfigError(f"mqtt.tls: cannot load {files or 'system CAs'}: {exc}") from None
        if not tls.verify:
            client.tls_insecure_set(True)
            log.warning(
                "MQTT TLS certificate verification is off (mqtt.tls.verify = false): "
                "the broker at %s is not authenticated",
                self._cfg.host,
            )

    def _connect(self, client: mqtt.Client) -> None:
        cfg = self._cfg
        properties = None
        if cfg.protocol == "5":
            # paho leaves Properties.__init__ unannotated.
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            # Asks the broker to keep no more unacknowledged QoS 1/2 messages out to us than
            # the queue holds. mosquitto 2.0.11 honours it until acks stream back, then can
            # overshoot it several times over, so overflow handling is still needed.
            properties.ReceiveMaximum = min(cfg.queue_size, _RECEIVE_MAXIMUM_LIMIT)
        client.connect_async(
            cfg.host, cfg.port, cfg.keepalive, clean_start=False, properties=properties
        )
        client.loop_start()

    def _shutdown(self, timeout: float) -> None:
        with self._net_lock:
            client = self._client
            if client is None:
                return
            if client.is_connected():
                info = client.publish(self._cfg.status_topic, OFFLINE, qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as exc:
                    log.debug("MQTT offline status not confirmed: %s", exc)
            self._halt(client)
            with self._ack_lock:
                self._client = None

    def _reconnect(self) -> None:
        with self._net_lock:
            client = self._client
            if client is None or self._stopping:
                return
            self._halt(client)
            self._connect(client)

    def _halt(self, client: mqtt.Client) -> None:
        self._quiet = True
        try:
            client.disconnect()
            client.loop_stop()
        finally:
            self._quiet = False

    # -- paho callbacks (paho's thread) -------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._note_failure(f"refused the connection: {reason_code}")
            return
        link = next(_CONNECTIONS)
        with self._ack_lock:
            self._link = link
            self._outstanding = 0
        self._session_up = True
        self._last_failure = None
        log.info(
            "MQTT connected to %s:%d (%s session)",
            self._cfg.host,
            self._cfg.port,
            "resumed" if flags.session_present else "new",
        )
        self._to_loop(self._link_up, link)
        # Subscribe on every connection: a broker that lost our session (restart without
        # persistence) would otherwise send nothing; on a resumed session it is harmless.
        if self._cfg.subscriptions:
            _, self._suback_mid = client.subscribe(self._subscribe_list())
        else:
            self._ready(client)

    def _subscribe_list(self) -> list[tuple[str, Any]]:
        qos = self._cfg.qos
        if self._cfg.protocol == "5":
            # Retained messages only for a subscription the broker did not already have, so a
            # resumed session does not replay them on every reconnect.
            option = SubscribeOptions(
                qos=qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            )
            return [(sub.topic, option) for sub in self._cfg.subscriptions]
        return [(sub.topic, qos) for sub in self._cfg.subscriptions]

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._suback_mid:
            return
        self._suback_mid = None
        for sub, code in zip(self._cfg.subscriptions, reason_codes, strict=False):
            if code.is_failure:
                log.error("MQTT broker refused subscription %r (%s): %s", sub.name, sub.topic, code)
        self._ready(client)

    def _ready(self, client: mqtt.Client) -> None:
        client.publish(self._cfg.status_topic, ONLINE, qos=1, retain=True)
        self._to_loop(self._set_connected, True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError` block, so the error is at hand.
        exc = sys.exception()
        self._note_failure(f"cannot be reached: {exc}" if exc else "cannot be reached")

    def _note_failure(self, reason: str) -> None:
        # One warning per kind of failure, not one per retry.
        cfg = self._cfg
        if reason != self._last_failure:
            self._last_failure = reason
            log.warning(
                "MQTT broker %s:%d %s; retrying (backoff up to %g s)",
                cfg.host,
                cfg.port,
                reason,
                cfg.reconnect_max,
            )
        else:
            log.debug("MQTT broker %s:%d %s; retrying", cfg.host, cfg.port, reason)
        self._to_loop(self._count, METRIC_CONNECT_FAILED, 1)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._ack_lock:
            self._link = None
        self._suback_mid = None
        if not self._session_up:
            return
        self._session_up = False
        if self._quiet:
            log.info("MQTT disconnected from %s:%d", self._cfg.host, self._cfg.port)
        else:
            if flags.is_disconnect_packet_from_server:
                reason = f"broker sent DISCONNECT ({reason_code})"
            elif reason_code == ReasonCode(PacketTypes.DISCONNECT, "Keep alive timeout"):
                reason = "keep-alive timeout"
            else:
                reason = "network connection closed"
            log.warning("MQTT connection lost: %s; retrying", reason)
        self._to_loop(self._set_connected, False)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._to_loop(self._puback, mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # Nobody can route it; acknowledged so the broker does not offer it forever.
            log.warning("MQTT dropped a message whose topic is not valid UTF-8")
            if message.qos:
                client.ack(message.mid, message.qos)
            return
        item = MqttMessage(
            topic=topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            mid=message.mid,
            dup=bool(message.dup),
            subscription=self._match(topic),
            received_at=time.time(),
            connection=self._link or 0,
            arrived=time.monotonic(),
        )
        self._to_loop(self._enqueue, item)

    def subscription_for(self, topic: str) -> MqttSubscription | None:
        """The first configured subscription whose filter matches `topic`, if any."""
        return self._match(topic)

    def _match(self, topic: str) -> MqttSubscription | None:
        for sub in self._cfg.subscriptions:
            if mqtt.topic_matches_sub(sub.topic, topic):
                return sub
        return None

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
            loop.call_soon_threadsafe(callback, *args)

    # -- event loop side ---------------------------------------------------------------------

    def _count(self, name: str, amount: int) -> None:
        if self._metrics is not None:
            self._metrics(name, amount)

    def _link_up(self, link: int) -> None:
        # A new connection: the broker resends whatever we dropped unacknowledged before.
        self._loop_link = link
        self._unacked_drops = 0

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        self._count(METRIC_CONNECTED if up else METRIC_DISCONNECTED, 1)
        if self._on_connected is not None:
            self._on_connected(up)

    def _enqueue(self, item: MqttMessage) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._overflow(item)
            return
        if self._burst:
            log.info("MQTT queue has room again; %d messages were dropped", self._burst)
            self._burst = 0
        self._count(METRIC_RECEIVED, 1)

    def _overflow(self, item: MqttMessage) -> None:
        # The dropped message is deliberately not acknowledged: the persistent session keeps it
        # and the broker delivers it again on the next connection (we force one once the queue
        # has drained, see _maybe_recover). With QoS 1 and manual acks the broker's in-flight
        # window (mosquitto max_inflight_messages, 20 by default; with MQTT 5 our Receive
        # Maximum, the queue size) already caps unacknowledged messages, so this is rare: it
        # takes QoS 0 traffic (lost for good), a broker window larger than the queue, or a
        # broker overshooting its window (mosquitto 2.0.11 does while acks stream back).
        self._count(METRIC_OVERFLOW, 1)
        if self._burst == 0:
            log.warning(
                "MQTT queue full (%d messages): dropping new messages without acknowledging "
                "them, so the broker delivers QoS 1 ones again after a reconnect",
                self._queue.maxsize,
            )
        self._burst += 1
        if item.qos > 0 and item.connection == self._loop_link:
            self._unacked_drops += 1

    def _maybe_recover(self) -> None:
        # A dropped, unacknowledged message holds a slot of the broker's in-flight window until
        # we reconnect; enough of them and delivery stops. So once the backlog is processed and
        # acknowledged, reconnect on purpose and let the broker resend them.
        if self._recovery is None and self._loop is not None and self._recovery_due():
            self._recovery = self._loop.create_task(self._recover())

    def _recovery_due(self) -> bool:
        with self._ack_lock:
            busy = self._outstanding > 0
            # The link, not `connected`: redeliveries arrive before the SUBACK that sets it.
            live = self._link is not None
        return (
            live
            and not busy
            and self._unacked_drops > 0
            and self._queue.empty()
            and not self._stopping
        )

    async def _recover(self) -> None:
        try:
            # Our latest acks let the broker send more; it sends them before it answers a later
            # packet of ours. So after one round trip we know whether the queue is really idle,
            # and the reconnect leaves no message half-way (which would only come twice).
            if not await self._round_trip() or not self._recovery_due():
                return
            log.info(
                "MQTT reconnecting so the broker delivers %d dropped messages again",
                self._unacked_drops,
            )
            self._unacked_drops = 0
            await asyncio.to_thread(self._reconnect)
        finally:
            self._recovery = None

    async def _round_trip(self) -> bool:
        """Publish the status again (it is "online" already) and await the broker's PUBACK."""
        client = self._client
        if client is None or self._loop is None:
            return False
        info = client.publish(self._cfg.status_topic, ONLINE, qos=1, retain=True)
        # Registered before we yield, so the PUBACK (handled in this loop) cannot overtake it.
        answered = self._puback_waiters[info.mid] = self._loop.create_future()
        try:
            await asyncio.wait_for(answered, STOP_TIMEOUT_S)
        except TimeoutError:
            return False
        finally:
            self._puback_waiters.pop(info.mid, None)
        return True

    def _puback(self, mid: int) -> None:
        waiter = self._puback_waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
