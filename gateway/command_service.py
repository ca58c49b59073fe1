"""Sending guide commands to sensors through their network server, and following them up.

The gateway's side of `gateway.downlinks`: it refuses at once what cannot be delivered, learns
each sensor's route from its uplinks (kept across restarts), publishes the downlink, feeds the
network servers' events and the sensors' echoes to the tracker, and keeps the sensors'
"Config Status" points and the device facts current.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.codec.vs121_downlink import (
    DOWNLINK_FPORT,
    Command,
    command_from_json,
    encode_commands,
)
from gateway.commands import DeliveryRefusedError
from gateway.device_points import device_facts
from gateway.downlink_events import CORRELATION_PREFIX, Event
from gateway.downlinks import PENDING, STATES, CommandRecord, DownlinkTracker
from gateway.envelopes import MILESIGHT_EUI_WILDCARD, Uplink, downlink_message
from gateway.errors import EncodeError
from gateway.metrics import GatewayMetrics
from gateway.mqtt_settings import MqttSubscription
from gateway.mqtt_source import MqttSource
from gateway.settings import DownlinkSection, SensorSection
from gateway.state import GatewayState

log = logging.getLogger("gateway.commands")

FACTS_KEY = "facts"


class CommandService:
    """Owned by the application; `mqtt` is set once the MQTT source exists."""

    def __init__(
        self,
        sensors: Sequence[SensorSection],
        cfg: DownlinkSection,
        state: GatewayState,
        state_dir: Path,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sensors = {s.id: s for s in sensors}
        self._by_eui = {s.dev_eui: s.id for s in sensors if s.dev_eui}
        self._cfg = cfg
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self.tracker = DownlinkTracker(state_dir, on_change=self._changed, clock=clock)
        self.mqtt: MqttSource | None = None
        # The demo's simulated network server (see SimulatorSource.deliver), used without MQTT.
        self.simulator: Callable[[str, bytes], None] | None = None
        self._subs: dict[str, MqttSubscription] = {}
        self._by_device_id: dict[str, str] = {}
        self.facts: dict[str, dict[str, str]] = {}
        self._own_topics: dict[str, re.Pattern[str]] = {}
        gauge = metrics.registry.gauge(
            "vs121gw_downlink_commands",
            "Downlink commands kept in the record, by state.",
            ("state",),
        )
        for name in STATES:
            gauge.set_function(self._counter_of(name), state=name)

    def _counter_of(self, state: str) -> Callable[[], float]:
        return lambda: float(self.tracker.counts()[state])

    def start(self, subscriptions: Sequence[MqttSubscription]) -> None:
        """Load the records (unfinished ones keep waiting; half-published ones are lost)."""
        self._subs = {s.name: s for s in subscriptions}
        self.tracker.load()
        for sensor_id, route in self.tracker.routes.items():
            facts = route.get(FACTS_KEY)
            if isinstance(facts, dict):
                self.facts[sensor_id] = {str(k): str(v) for k, v in facts.items()}
            if route.get("device_id"):
                self._by_device_id[str(route["device_id"])] = sensor_id
        for sensor_id in self._sensors:
            self._publish_status(sensor_id)

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self, sensor_id: str, commands: Sequence[Mapping[str, Any]], *, requester: str
    ) -> dict[str, Any]:
        sensor = self._sensors[sensor_id]  # KeyError: unknown sensor
        try:
            return self._send(sensor, commands, requester)
        except DeliveryRefusedError as exc:
            self._metrics.downlinks.inc(sensor=sensor_id, outcome="refused")
            log.warning(
                "sensor %s: command %s asked by %s refused: %s",
                sensor_id,
                _names(commands),
                requester,
                exc,
            )
            raise
        except EncodeError as exc:
            log.warning(
                "sensor %s: command asked by %s is not valid: %s", sensor_id, requester, exc
            )
            raise

    def _send(
        self, sensor: SensorSection, commands: Sequence[Mapping[str, Any]], requester: str
    ) -> dict[str, Any]:
        if sensor.model != "vs121":
            raise DeliveryRefusedError(
                f"not supported for this model ({sensor.model}): the VS121-P takes its settings "
                "from its web interface or Milesight DeviceHub, not from this gateway"
            )
        if not commands:
            raise EncodeError("no command given")
        parsed = [command_from_json(c) for c in commands]
        payload = encode_commands(parsed)
        if self.mqtt is None and self.simulator is not None:
            return self._send_simulated(sensor, parsed, payload, requester)
        if self.mqtt is None:
            raise DeliveryRefusedError("MQTT is not enabled: no network server to send through")
        if not self.mqtt.connected:
            raise DeliveryRefusedError("the MQTT broker is not connected")
        route = self.tracker.routes.get(sensor.id)
        sub = None if route is None else self._subs.get(str(route.get("subscription")))
        if route is None or sub is None:
            raise DeliveryRefusedError(
                "no uplink received from it yet, so its network server and route are unknown"
            )
        if self._cfg.refuse_offline and not self._state.sensors[sensor.id].online:
            raise DeliveryRefusedError(
                "the sensor is offline (stale): a class A device only listens after an uplink"
            )
        topic, body = self._address(sub, route, payload, None)
        record = self._track(sensor, parsed, payload, topic, requester)
        if sub.envelope == "tts":  # its events carry our id back
            topic, body = self._address(sub, route, payload, CORRELATION_PREFIX + record.id)
        _log_asked(sensor, record, requester, topic)
        try:
            self.mqtt.publish(topic, body, qos=1)
        except (RuntimeError, ValueError) as exc:
            self.tracker.failed(record, f"could not publish: {exc}")
        else:
            self.tracker.published(record)
        return record.to_json()

    def _send_simulated(
        self, sensor: SensorSection, parsed: list[Command], payload: bytes, requester: str
    ) -> dict[str, Any]:
        assert self.simulator is not None
        assert sensor.dev_eui is not None  # a vs121 always has one
        # The topic a ChirpStack server would take it on, recorded for the demo's user to see.
        topic, _ = downlink_message(
            "chirpstack", sensor.dev_eui, DOWNLINK_FPORT, payload, app="demo"
        )
        record = self._track(sensor, parsed, payload, topic, requester)
        _log_asked(sensor, record, requester, topic, " (simulated network server)")
        self.simulator(sensor.id, payload)
        self.tracker.published(record)
        return record.to_json()

    def _track(
        self,
        sensor: SensorSection,
        parsed: list[Command],
        payload: bytes,
        topic: str,
        requester: str,
    ) -> CommandRecord:
        return self.tracker.new(
            sensor_id=sensor.id,
            commands=[c.to_json() for c in parsed],
            payload=payload,
            fport=DOWNLINK_FPORT,
            topic=topic,
            requester=requester,
            timeout=self._cfg.timeout or 2.0 * sensor.report_interval + 60.0,
        )

    def _address(
        self,
        sub: MqttSubscription,
        route: Mapping[str, Any],
        payload: bytes,
        correlation_id: str | None,
    ) -> tuple[str, bytes]:
        try:
            return downlink_message(
                sub.envelope,
                str(route["dev_eui"]),
                DOWNLINK_FPORT,
                payload,
                app=sub.chirpstack_application or sub.tts_application or route.get("app"),
                tenant=sub.tts_tenant or route.get("tenant"),
                device_id=route.get("device_id"),
                topic_template=sub.downlink_topic,
                confirmed=self._cfg.confirmed,
                correlation_id=correlation_id,
            )
        except EncodeError as exc:
            raise DeliveryRefusedError(f"cannot address its downlink: {exc}") from None

    # -- what comes back --------------------------------------------------------------------

    def uplink_seen(
        self, sensor_id: str, up: Uplink, sub: MqttSubscription | None, data: Mapping[str, Any]
    ) -> None:
        """An uplink from the sensor: remember its route (`sub` None: the demo's simulator,
        no route), look for echoes, keep its facts."""
        if sub is None:
            self.facts[sensor_id] = {**self.facts.get(sensor_id, {}), **device_facts(up, data)}
            self.tracker.on_uplink(sensor_id, data)
            return
        route: dict[str, Any] = {
            "subscription": sub.name,
            "dev_eui": up.dev_eui,
            "app": up.application_id,
            "tenant": up.tenant_id,
            "device_id": up.device_id,
        }
        facts = {**self.facts.get(sensor_id, {}), **device_facts(up, data)}
        if facts:
            route[FACTS_KEY] = facts
            self.facts[sensor_id] = facts
        if up.device_id:
            self._by_device_id[up.device_id] = sensor_id
        changed = self.tracker.routes.get(sensor_id) != route
        self.tracker.routes[sensor_id] = route
        if not self.tracker.on_uplink(sensor_id, data) and changed:
            self.tracker.save()

    def event(self, event: Event) -> None:
        """A network-server downlink event."""
        sensor_id = None
        if event.dev_eui is not None:
            sensor_id = self._by_eui.get(event.dev_eui)
        if sensor_id is None and event.device_id is not None:
            sensor_id = self._by_device_id.get(event.device_id)
        if sensor_id is None:
            log.debug("downlink event %s for a device not configured here", event.kind)
            return
        self.tracker.on_event(sensor_id, event)

    def is_own_downlink(self, sub: MqttSubscription, topic: str) -> bool:
        """Whether `topic` is where this gateway publishes downlinks: a filter wide enough to
        cover them (Milesight's `/eg/#`, say) must not read the gateway's own commands back as
        uplinks."""
        if sub.downlink_topic is None:
            return False
        pattern = self._own_topics.get(sub.name)
        if pattern is None:
            template = sub.downlink_topic.replace(MILESIGHT_EUI_WILDCARD, "{DEV_EUI}")
            parts = re.split(r"\{[A-Za-z_]+\}", template)
            pattern = re.compile("[^/]+".join(re.escape(part) for part in parts))
            self._own_topics[sub.name] = pattern
        return pattern.fullmatch(topic) is not None

    def tick(self) -> None:
        self.tracker.expire()

    # -- views ------------------------------------------------------------------------------

    def records(self, sensor_id: str | None = None) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.tracker.records(sensor_id)]

    def pending(self, sensor_id: str) -> bool:
        return any(r.state in PENDING for r in self.tracker.records(sensor_id))

    def _changed(self, record: CommandRecord) -> None:
        self._metrics.downlinks.inc(sensor=record.sensor_id, outcome=record.state)
        self._publish_status(record.sensor_id)

    def _publish_status(self, sensor_id: str) -> None:
        if sensor_id in self._state.sensors and self._sensors[sensor_id].model == "vs121":
            word = self.tracker.status_word(sensor_id)
            self._state.set_kept_values(sensor_id, {"config_status": word})


def _log_asked(
    sensor: SensorSection, record: CommandRecord, requester: str, topic: str, how: str = ""
) -> None:
    log.info(
        "sensor %s: command %s (%s) asked by %s: downlink %s on %s%s",
        sensor.id,
        record.id,
        _names(record.commands),
        requester,
        record.payload,
        topic,
        how,
    )


def _names(commands: Sequence[Mapping[str, Any]]) -> str:
    return ",".join(str(c.get("command")) for c in commands) or "-"
