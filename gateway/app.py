"""The daemon: one asyncio loop hosting every source, the state, and every sink."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable
from typing import Any

from gateway import __version__
from gateway.bacnet import BacnetServer
from gateway.codec.vs121_downlink import DOWNLINK_FPORT, ResetCumulativeCount
from gateway.daily import DayClock
from gateway.envelopes import downlink_message
from gateway.errors import EncodeError
from gateway.http_source import HttpServer
from gateway.ingest import Ingest, IngestResult, Result
from gateway.metrics import GatewayMetrics, default_metrics, relay_metrics
from gateway.modbus import ModbusServer
from gateway.mqtt_settings import MqttSubscription
from gateway.mqtt_source import MqttMessage, MqttSource
from gateway.relay import RelayService
from gateway.sdnotify import Notifier, watchdog_loop
from gateway.settings import Settings
from gateway.simulator_source import SimulatorSource
from gateway.state import GatewayState
from gateway.store import Committer, StateStore

log = logging.getLogger("gateway")

TICK_S = 1.0


def _version_number() -> int:
    parts = [int(p) for p in __version__.split(".")[:3] if p.isdigit()]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major * 10000 + minor * 100 + patch


class Gateway:
    """Owns the components; `run` until `stop` is set, then shuts down cleanly."""

    def __init__(self, settings: Settings, *, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.metrics: GatewayMetrics = default_metrics()
        self.notifier = notifier or Notifier.from_env()
        self.state = GatewayState(
            [
                (s.spec(), float(s.stale_seconds), float(s.report_interval))
                for s in settings.sensors
            ],
            day_clock=DayClock.parse(settings.daily.timezone, settings.daily.reset_time),
        )
        self.store = StateStore(settings.gateway.state_dir)
        self.committer = Committer(self.state, self.store, on_write=self._on_write)
        self.ingest = Ingest(settings.sensors, self.state, count=self._count)
        self.mqtt: MqttSource | None = None
        self.http: HttpServer | None = None
        self.modbus: ModbusServer | None = None
        self.bacnet: BacnetServer | None = None
        self.relay = RelayService(
            settings.alarms,
            self.state,
            state_dir=settings.gateway.state_dir,
            metrics=relay_metrics(self.metrics.registry) if settings.alarms else None,
        )
        self._last_sub: dict[str, MqttSubscription] = {}
        self._started = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop_alive = time.monotonic()
        self.ready = asyncio.Event()
        self.mqtt_up = asyncio.Event()  # set while connected and subscribed
        self._last_status = ""

    # -- metrics ----------------------------------------------------------------------------

    def _count(self, source: str, result: Result, sensor_id: str | None) -> None:
        m = self.metrics
        m.messages.inc(source=source, outcome=result.value)
        if result in (Result.DECODE_ERROR, Result.PARTIAL) and sensor_id:
            m.decode_errors.inc(sensor=sensor_id)
        elif result is Result.DUPLICATE and sensor_id:
            m.duplicates.inc(sensor=sensor_id)
        elif result is Result.UNKNOWN_DEVICE:
            m.unknown_devices.inc()

    def _on_write(self, seconds: float) -> None:
        self.metrics.state_writes.inc()
        self.metrics.state_write_seconds.observe(seconds)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "vs121-gateway %s starting: %d sensors configured, state in %s",
            __version__,
            len(self.settings.sensors),
            self.settings.gateway.state_dir,
        )
        self.store.prepare()
        self.store.lock()  # before reading: two gateways on one state directory would corrupt it
        restored = self.store.load_into(self.state)
        self.store.journal.open()
        log.info("state restored for %d of %d sensors", restored, len(self.settings.sensors))
        self.metrics.sensors_stale.set_function(self._stale_count)
        self._spawn(self.committer.run(), "committer")
        self._spawn(self._tick_loop(), "tick")
        try:
            self.state.publish_gateway(self.gateway_values())
            await self.relay.start()  # outputs driven to what the rules say, before any sink
            await self._start_sinks()
            await self._start_sources()
            self.ready.set()
            self.notifier.ready(self._status_line())
            self._spawn(watchdog_loop(self.notifier, self._healthy), "watchdog")
            log.info("vs121-gateway ready")
            await stop.wait()
        finally:
            await self._shutdown()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    @staticmethod
    def _task_done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task %s failed: %r", task.get_name(), task.exception())

    async def _start_sinks(self) -> None:
        mb = self.settings.modbus
        points = self.settings.points()
        if self.settings.bacnet.enabled:
            bac = self.settings.bacnet
            if bac.password is None and not ipaddress.ip_interface(bac.address).is_loopback:
                log.warning(
                    "BACnet: no bacnet.password set: anyone on the network may disable "
                    "communication or reinitialize the gateway"
                )
            self.bacnet = BacnetServer(
                self.settings.bacnet,
                points,
                self.state,
                self,
                state_dir=self.settings.gateway.state_dir,
                version=__version__,
                on_fd_change=lambda up: self.metrics.bacnet_fd_registered.set(1 if up else 0),
            )
            await self.bacnet.start()
        if mb.tcp.enabled or mb.rtu.enabled:
            self.modbus = ModbusServer(
                mb,
                points,
                self.state,
                self,
                on_request=lambda transport, outcome: self.metrics.modbus_requests.inc(
                    transport=transport, outcome=outcome
                ),
            )
            await self.modbus.start()

    async def _start_sources(self) -> None:
        cfg = self.settings
        if cfg.http.enabled:
            self.http = HttpServer(
                cfg.http,
                self._http_ingest,
                metrics_text=self.metrics.registry.render,
                healthy=self._healthy,
                reset=self.reset_counts,
                status=self.status_document,
            )
            await self.http.start()
        if cfg.mqtt.enabled:
            self.mqtt = MqttSource(cfg.mqtt, on_connected=self._mqtt_connected)
            await self.mqtt.start()
            self.metrics.queue_depth.set_function(self.mqtt.depth, source="mqtt")
            self._spawn(self._mqtt_consumer(self.mqtt), "mqtt")
        if cfg.simulate.enabled:
            sim = SimulatorSource(cfg, self.ingest, self.committer, self.state)
            self._spawn(sim.run(), "simulator")

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("vs121-gateway stopping")
        if self.http is not None:
            await self.http.stop()
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self.modbus is not None:
            await self.modbus.stop()
        if self.bacnet is not None:
            await self.bacnet.stop()
        await self.relay.stop()  # outputs left in their rules' shutdown state
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Whatever was applied but not yet written goes to disk before we exit.
        await self.committer.close()
        log.info("vs121-gateway stopped; state saved")

    # -- sources ----------------------------------------------------------------------------

    async def _http_ingest(self, body: bytes, peer: str) -> IngestResult:
        result = self.ingest.vs121p("http", body)
        if result.applied:
            await self.committer.durable()
        return result

    async def _mqtt_consumer(self, source: MqttSource) -> None:
        while True:
            msg = await source.get()
            try:
                self._handle_mqtt(source, msg)
            except Exception:
                # A bug must cost one message, not the whole MQTT ingest.
                log.exception("MQTT: message on %s could not be processed", msg.topic[:200])
                source.ack(msg)

    def _handle_mqtt(self, source: MqttSource, msg: MqttMessage) -> None:
        sub = msg.subscription
        if sub is None:
            log.warning("MQTT: message on %s matches no configured subscription", msg.topic)
            source.ack(msg)
            return
        name = f"mqtt:{sub.name}"
        if sub.envelope == "vs121p":
            result = self.ingest.vs121p(name, msg.payload, received_at=msg.received_at)
        else:
            result = self.ingest.uplink(
                name,
                sub.envelope,
                msg.topic,
                msg.payload,
                received_at=msg.received_at,
                raw_topic_pattern=sub.raw_topic_pattern,
            )
        if result.sensor_id is not None and sub.envelope != "vs121p":
            self._last_sub[result.sensor_id] = sub
        if result.applied:
            # Acknowledge only once the effect is on disk: a crash before then means redelivery.
            self.committer.after_durable(lambda: source.ack(msg))
        else:
            source.ack(msg)  # nothing to keep; a redelivery would fail the same way

    def _mqtt_connected(self, connected: bool) -> None:
        self.metrics.mqtt_connected.set(1 if connected else 0)
        if connected:
            self.mqtt_up.set()
        else:
            self.mqtt_up.clear()

    # -- periodic work ----------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        next_at = time.monotonic()
        while True:
            self._loop_alive = time.monotonic()
            self.state.tick()
            self.state.publish_gateway(self.gateway_values())
            status = self._status_line()
            if status != self._last_status:
                self._last_status = status
                self.notifier.status(status)
            next_at += TICK_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def gateway_values(self) -> dict[str, int]:
        uptime = int(time.monotonic() - self._started)
        online = sum(1 for s in self.state.sensors.values() if s.online)
        return {
            "heartbeat": uptime % 65536,
            "uptime": uptime,
            "version": _version_number(),
            "sensors_configured": len(self.settings.sensors),
            "sensors_online": online,
        }

    def _stale_count(self) -> float:
        return float(sum(1 for s in self.state.sensors.values() if not s.online))

    def _healthy(self) -> bool:
        # The watchdog is fed only while the loop really turns.
        return time.monotonic() - self._loop_alive < 5 * TICK_S

    def _status_line(self) -> str:
        online = sum(1 for s in self.state.sensors.values() if s.online)
        mqtt = "" if self.mqtt is None else (", MQTT up" if self.mqtt.connected else ", MQTT down")
        return f"{online}/{len(self.state.sensors)} sensors online{mqtt}"

    def status_document(self) -> dict[str, Any]:
        """What GET /api/sensors shows: every sensor's freshness and current values."""
        return {
            "gateway": dict(self.state.gateway_values),
            "sensors": {
                sid: {
                    "online": s.online,
                    "values": dict(s.values),
                    "points": self.state.point_status(sid),
                }
                for sid, s in self.state.sensors.items()
            },
        }

    # -- commands ---------------------------------------------------------------------------

    async def set_alarm_threshold(self, rule_id: str, threshold: float) -> str:
        """Set an alarm rule's threshold (persisted); see `gateway.commands.AlarmCommands`."""
        return await self.relay.set_alarm_threshold(rule_id, threshold)

    async def command_relay(self, rule_id: str, priority: int, value: bool | None) -> str:
        """Command (or relinquish) an alarm rule's relay at a priority level (persisted)."""
        return await self.relay.command_relay(rule_id, priority, value)

    async def reset_counts(self, sensor_id: str) -> str:
        """Reset the gateway's totals and ask a LoRaWAN sensor to reset its own counter."""
        if sensor_id not in self.state.sensors:
            raise KeyError(sensor_id)
        self.state.reset_totals(sensor_id)
        await self.committer.durable()
        sensor = next(s for s in self.settings.sensors if s.id == sensor_id)
        if sensor.model != "vs121":
            return "totals reset"
        return "totals reset; " + self._send_reset_downlink(sensor_id)

    def _send_reset_downlink(self, sensor_id: str) -> str:
        sub = self._last_sub.get(sensor_id)
        up = self.ingest.last_uplink.get(sensor_id)
        if self.mqtt is None or sub is None or up is None:
            self.metrics.downlinks.inc(sensor=sensor_id, outcome="unaddressable")
            log.warning(
                "sensor %s: reset downlink not sent: no uplink received yet to learn its route",
                sensor_id,
            )
            return "downlink not sent (no uplink seen yet)"
        payload = ResetCumulativeCount().encode()
        try:
            topic, body = downlink_message(
                sub.envelope,
                up.dev_eui,
                DOWNLINK_FPORT,
                payload,
                app=sub.chirpstack_application or sub.tts_application or up.application_id,
                tenant=sub.tts_tenant or up.tenant_id,
                device_id=up.device_id,
                topic_template=sub.downlink_topic,
            )
        except EncodeError as exc:
            self.metrics.downlinks.inc(sensor=sensor_id, outcome="error")
            log.warning("sensor %s: reset downlink not sent: %s", sensor_id, exc)
            return f"downlink not sent ({exc})"
        self.mqtt.publish(topic, body, qos=1)
        self.metrics.downlinks.inc(sensor=sensor_id, outcome="sent")
        log.info("sensor %s: reset downlink %s queued on %s", sensor_id, payload.hex(), topic)
        return f"downlink {payload.hex()} sent on {topic}"
