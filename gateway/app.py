"""The daemon: one asyncio loop hosting every source, the state, and every sink."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import time
from collections.abc import Awaitable
from typing import Any

from gateway import __version__, control_token, fdlimit
from gateway.bacnet import BacnetServer
from gateway.bacnet.restart import EXIT_REINITIALIZE, record_restart
from gateway.command_service import CommandService
from gateway.commands import REQUESTER, DeliveryRefusedError
from gateway.config_audit import open_endpoints
from gateway.daily import DayClock
from gateway.device_points import text_values
from gateway.diskspace import free_bytes, mib
from gateway.downlink_events import parse_event
from gateway.envelopes import Uplink
from gateway.errors import EncodeError, EnvelopeError
from gateway.http_source import HttpServer
from gateway.ingest import Ingest, IngestResult, Result
from gateway.metrics import (
    GatewayMetrics,
    ack_seconds,
    default_metrics,
    mqtt_metrics,
    refused_connections,
    relay_metrics,
    state_volume_metrics,
)
from gateway.modbus import ModbusServer
from gateway.mqtt_consumer import MqttConsumer
from gateway.mqtt_settings import MqttSubscription
from gateway.mqtt_source import METRIC_OVERFLOW, MqttMessage, MqttSource
from gateway.relay import RelayService
from gateway.sdnotify import Notifier, watchdog_loop
from gateway.settings import Settings
from gateway.simulator_source import SIM_SOURCE, SimulatorSource
from gateway.state import GatewayState
from gateway.store import Committer, StateStore
from gateway.web import WebUi

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
        self._mqtt_metrics = mqtt_metrics(self.metrics.registry)
        self.refused = refused_connections(self.metrics.registry)
        self.acks = ack_seconds(self.metrics.registry)
        self.notifier = notifier or Notifier.from_env()
        self.state = GatewayState(
            [
                (s.spec(), float(s.stale_seconds), float(s.report_interval))
                for s in settings.sensors
            ],
            day_clock=DayClock.parse(settings.daily.timezone, settings.daily.reset_time),
        )
        self.store = StateStore(settings.gateway.state_dir)
        self.committer = Committer(
            self.state,
            self.store,
            snapshot_interval=settings.gateway.snapshot_interval,
            on_write=self._on_write,
        )
        self.web = WebUi(self)  # the commissioning page: sees every message ingested
        self.ingest = Ingest(
            settings.sensors,
            self.state,
            count=self._count,
            lines_refused=lambda sensor: self.metrics.line_counts_refused.inc(sensor=sensor),
            observe=self.web.messages.observe,
        )
        self.commands = CommandService(
            settings.sensors,
            settings.downlinks,
            self.state,
            settings.gateway.state_dir,
            self.metrics,
        )
        self.ingest.on_uplink = self._uplink_decoded
        self.ingest.on_serial = self._serial_reported
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
        self._subs_by_source = {f"mqtt:{s.name}": s for s in settings.mqtt.subscriptions}
        self._started = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop_alive = time.monotonic()
        self.ready = asyncio.Event()
        self.mqtt_up = asyncio.Event()  # set while connected and subscribed
        self._last_status = ""
        self._stop: asyncio.Event | None = None
        # Set by a BACnet ReinitializeDevice: `run` returns, and the process exits with it.
        self.exit_status = 0
        self._control_token: str | None = None
        self._fd_limit = 1024

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
        elif result is Result.MAC_ONLY and sensor_id:
            m.mac_only.inc(sensor=sensor_id)

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
        self._fd_limit = fdlimit.raise_soft_limit()
        fdlimit.install()
        fdlimit.quiet_loop_errors(asyncio.get_running_loop())
        self._stop = stop
        self.store.prepare()
        self.store.lock()  # before reading: two gateways on one state directory would corrupt it
        restored = self.store.load_into(self.state)
        self.store.journal.open()
        self.commands.start(self.settings.mqtt.subscriptions)
        log.info("state restored for %d of %d sensors", restored, len(self.settings.sensors))
        self._prepare_state_volume()
        self._control_token = control_token.create(self.settings.gateway.state_dir)
        for warning in open_endpoints(self.settings, bacnet=False):  # BACnet warns itself
            log.warning("configuration: %s", warning)
        self.state.subscribe(self.web.observe_state)
        self.metrics.sensors_stale.set_function(self._stale_count)
        self._spawn(self.committer.run(), "committer")
        self._spawn(self._tick_loop(), "tick")
        try:
            self.state.publish_gateway(self.gateway_values())
            await self.relay.start()  # outputs driven to what the rules say, before any sink
            if stop.is_set():
                return  # stopped while starting: no sink or source to open only to close it
            await self._start_sinks()
            await self._start_sources()
            # What start-up built (points, objects, state: 100,000+ objects at site scale) lives
            # as long as the process; frozen, the collector stops walking it on every full
            # collection, which paused the loop for hundreds of milliseconds.
            gc.collect()
            gc.freeze()
            gc.enable()  # `vs121-gateway run` starts with it off (see gateway.cli)
            self.ready.set()
            self.notifier.ready(self._status_line())
            self._spawn(watchdog_loop(self.notifier, self._healthy), "watchdog")
            log.info("vs121-gateway ready")
            await stop.wait()
        finally:
            await self._shutdown()

    def _prepare_state_volume(self) -> None:
        directory = self.settings.gateway.state_dir
        space = self.committer.space
        space.size_for(sum(p.stat().st_size for p in self.store.sensor_dir.glob("*.json")))
        space.ensure()
        log.info(
            "state volume: %s free, %s held in reserve",
            mib(free_bytes(directory)),
            mib(space.held),
        )
        self.metrics.registry.gauge(
            "vs121gw_open_descriptors", "File descriptors the process has open."
        ).set_function(lambda: float(fdlimit.open_descriptors()))
        self.metrics.registry.gauge(
            "vs121gw_descriptor_limit", "The process's soft limit on open file descriptors."
        ).set_function(lambda: float(self._fd_limit))
        state_volume_metrics(
            self.metrics.registry,
            free=lambda: float(free_bytes(directory)),
            failing=lambda: 0.0 if self.committer.failing is None else 1.0,
        )

    def problem(self) -> str | None:
        """Why the gateway is degraded (it runs, but cannot do its job fully), or None."""
        return self.committer.failing

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
                on_refused=lambda: self.refused.inc(listener="bacnet", reason="not_allowed"),
                on_reinitialize=self._reinitialize,
            )
            await self.bacnet.start()
            for sensor_id, facts in self.commands.facts.items():
                self.bacnet.set_texts(sensor_id, text_values(facts))
        if mb.tcp.enabled or mb.rtu.enabled:
            self.modbus = ModbusServer(
                mb,
                points,
                self.state,
                self,
                on_request=lambda transport, outcome: self.metrics.modbus_requests.inc(
                    transport=transport, outcome=outcome
                ),
                on_refused=lambda: self.refused.inc(listener="modbus_tcp", reason="not_allowed"),
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
                routes=self.web.install,
                control_token=self._control_token,
                send=self.send_command,
                commands=self.commands.records,
                on_refused=lambda: self.refused.inc(listener="http", reason="limit"),
                problem=self.problem,
                on_ack=lambda seconds: self.acks.observe(seconds, source="http"),
            )
            self.http.max_connections = fdlimit.connection_budget(
                self._fd_limit, cfg.http.max_connections, what="http.max_connections"
            )
            await self.http.start()
            log.info("commissioning page: %s", self.http.url)
            self.web.warn_if_exposed()
        if cfg.mqtt.enabled:
            self.mqtt = MqttSource(
                cfg.mqtt,
                on_connected=self._mqtt_connected,
                metrics_hook=self._mqtt_event,
                on_ack=lambda seconds: self.acks.observe(seconds, source="mqtt"),
            )
            self.commands.mqtt = self.mqtt
            await self.mqtt.start()
            self.metrics.queue_depth.set_function(self.mqtt.depth, source="mqtt")
            self._spawn(self._mqtt_consumer(self.mqtt), "mqtt")
        if cfg.simulate.enabled:
            sim = SimulatorSource(cfg, self.ingest, self.committer, self.state)
            if self.mqtt is None:  # the demo: the simulator plays the network server too
                self.commands.simulator = sim.deliver
                sim.on_event = self.commands.event
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
        if await self.committer.close():
            log.info("vs121-gateway stopped; state saved")
        else:
            # Unacknowledged messages stay with their sources and come again at the next start.
            log.error(
                "vs121-gateway stopped; final state NOT saved (%s); unacknowledged messages "
                "will be delivered again",
                self.committer.failing,
            )
        self.web.close()

    def _reinitialize(self, state: str) -> None:
        """A BACnet warm or cold start (password checked): stop cleanly and exit with
        EXIT_REINITIALIZE so the supervisor starts a fresh process. Counts, thresholds and
        subscriptions are the gateway's data, not volatile memory: both starts keep them."""
        reason = "coldstart" if state == "coldstart" else "warmstart"
        try:
            record_restart(self.settings.gateway.state_dir, reason)
        except OSError as exc:
            log.error("BACnet reinitialize: cannot record the restart reason: %s", exc)
        log.warning(
            "BACnet reinitialize (%s): stopping; exit status %d asks the supervisor to restart",
            reason,
            EXIT_REINITIALIZE,
        )
        self.exit_status = EXIT_REINITIALIZE
        if self._stop is not None:
            self._stop.set()

    # -- sources ----------------------------------------------------------------------------

    async def _http_ingest(self, body: bytes, peer: str) -> IngestResult:
        result = self.ingest.vs121p("http", body)
        if result.applied:
            await self.committer.durable()
        return result

    async def _mqtt_consumer(self, source: MqttSource) -> None:
        # A message that raised is acknowledged only once its effect is durable (see there).
        consumer = MqttConsumer(
            source,
            self._handle_mqtt,
            progress=lambda: self.state.seq,
            after_durable=self.committer.after_durable,
            park_dir=self.settings.gateway.state_dir / "parked",
            on_event=self._mqtt_retry_event,
        )
        await consumer.run()

    def _handle_mqtt(self, source: MqttSource, msg: MqttMessage) -> None:
        sub = msg.subscription
        if sub is None:
            log.warning("MQTT: message on %s matches no configured subscription", msg.topic)
            source.ack(msg)
            return
        name = f"mqtt:{sub.name}"
        if self._downlink_event(sub, msg):
            source.ack(msg)
            return
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
        if result.applied:
            # Acknowledge only once the effect is on disk: a crash before then means redelivery.
            self.committer.after_durable(lambda: source.ack(msg))
        else:
            source.ack(msg)  # nothing to keep; a redelivery would fail the same way

    def _downlink_event(self, sub: MqttSubscription, msg: MqttMessage) -> bool:
        """Hand a network server's downlink event to the commands; False if it is none."""
        if self.commands.is_own_downlink(sub, msg.topic):
            return True  # our own command, heard through a wide filter
        try:
            event = parse_event(sub.envelope, msg.topic, msg.payload)
        except EnvelopeError as exc:
            self._count(f"mqtt:{sub.name}", Result.ENVELOPE_ERROR, None)
            log.warning("mqtt:%s: %s", sub.name, exc)
            return True
        if event is None:
            return False
        self.commands.event(event)
        return True

    def _uplink_decoded(
        self, source: str, sensor_id: str, up: Uplink, data: dict[str, Any]
    ) -> None:
        sub = self._subs_by_source.get(source)
        if sub is not None or source == SIM_SOURCE:
            self.commands.uplink_seen(sensor_id, up, sub, data)
            if self.bacnet is not None:
                self.bacnet.set_texts(
                    sensor_id, text_values(self.commands.facts.get(sensor_id, {}))
                )

    def _serial_reported(self, sensor_id: str, serial: str) -> None:
        if self.bacnet is not None:
            self.bacnet.set_texts(sensor_id, {"serial_number": serial})

    def _mqtt_event(self, name: str, amount: int) -> None:
        if name == METRIC_OVERFLOW:
            self.metrics.queue_overflow.inc(amount, source="mqtt")
        else:
            self._mqtt_metrics.events.inc(amount, event=name)

    def _mqtt_retry_event(self, name: str) -> None:
        self._mqtt_metrics.faults.inc(event=name)

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
            self.commands.tick()
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
        problem = self.problem()
        degraded = "" if problem is None else f"degraded: {problem}; "
        return f"{degraded}{online}/{len(self.state.sensors)} sensors online{mqtt}"

    def status_document(self) -> dict[str, Any]:
        """What GET /api/sensors shows: every sensor's freshness and current values."""
        return {
            "gateway": dict(self.state.gateway_values),
            "sensors": {
                sid: {
                    "online": s.online,
                    "values": dict(s.values),
                    "device": dict(self.commands.facts.get(sid, {})),
                    "points": self.state.point_status(sid),
                }
                for sid, s in self.state.sensors.items()
            },
            "commands": self.commands.records()[-50:],
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
        return "totals reset; " + await self._send_reset_downlink(sensor_id)

    async def _send_reset_downlink(self, sensor_id: str) -> str:
        command = [{"command": "reset_cumulative_count"}]
        try:
            record = await self.commands.send(sensor_id, command, requester=REQUESTER.get())
        except (DeliveryRefusedError, EncodeError) as exc:
            return f"downlink not sent ({exc})"
        return f"downlink {record['payload']} sent on {record['topic']} as command {record['id']}"

    async def send_command(
        self, sensor_id: str, commands: list[dict[str, Any]], *, requester: str
    ) -> dict[str, Any]:
        """Send guide commands to a sensor; see `gateway.commands.DownlinkCommands`."""
        return await self.commands.send(sensor_id, commands, requester=requester)
