"""`vs121-gateway simulate`: publish realistic sensor traffic to an MQTT broker.

Each configured sensor gets a simulated room. VS121 sensors publish LoRaWAN uplinks wrapped in the
chosen network server's envelope; VS121-P sensors publish chapter-8 JSON. With `gap_every`, a
LoRaWAN sensor now and then goes silent for a few intervals and then retransmits the missed
line-crossing periods as history records (0x20ce), as a real VS121 does after an outage.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.settings import SensorSection
from gateway.sim_network_server import SimulatedNetworkServer
from gateway.simulate import SimulatedSpace


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def uplink_body(envelope: str, dev_eui: str, fcnt: int, payload: bytes, now: float) -> bytes:
    """A network-server uplink message carrying `payload` (fPort 85)."""
    data = base64.b64encode(payload).decode()
    doc: dict[str, object]
    if envelope == "chirpstack":
        doc = {
            "deduplicationId": secrets.token_hex(16),
            "time": _rfc3339(now),
            "deviceInfo": {"applicationId": "sim", "devEui": dev_eui, "deviceName": dev_eui},
            "fCnt": fcnt,
            "fPort": 85,
            "data": data,
        }
    elif envelope == "tts":
        doc = {
            "end_device_ids": {
                "device_id": f"vs121-{dev_eui}",
                "application_ids": {"application_id": "sim"},
                "dev_eui": dev_eui.upper(),
            },
            "received_at": _rfc3339(now),
            "uplink_message": {
                "session_key_id": "c2ltLXNlc3Npb24=",
                "f_port": 85,
                "f_cnt": fcnt,
                "frm_payload": data,
            },
        }
    elif envelope == "milesight":
        doc = {"devEUI": dev_eui, "fPort": 85, "fCnt": fcnt, "data": data, "time": _rfc3339(now)}
    elif envelope == "raw":
        return payload.hex().encode()
    else:
        raise ValueError(f"no uplink format for envelope {envelope!r}")
    return json.dumps(doc, separators=(",", ":")).encode()


def uplink_topic(envelope: str, dev_eui: str) -> str:
    return {
        "chirpstack": f"application/sim/device/{dev_eui}/event/up",
        "tts": f"v3/sim@sim/devices/vs121-{dev_eui}/up",
        "milesight": f"milesight/uplink/{dev_eui}",
        "raw": f"sensors/{dev_eui}/up",
    }[envelope]


def _answer_downlinks(
    client: mqtt.Client, server: SimulatedNetworkServer, plan: TrafficPlan, qos: int
) -> None:
    for downlink in server.pending():
        for topic, body in server.events(downlink):
            client.publish(topic, body, qos=qos).wait_for_publish(10)
        eui = downlink.dev_eui or _tts_eui(plan, downlink.device_topic)
        if eui is not None:
            plan.echoes[eui] = plan.echoes.get(eui, b"") + downlink.payload


def _tts_eui(plan: TrafficPlan, device_topic: str) -> str | None:
    """The EUI of the simulated device a TTS topic names (its device id is vs121-<eui>)."""
    device_id = device_topic.rsplit("/", 1)[-1]
    for sim in plan.sims:
        if sim.sensor.dev_eui and device_id == f"vs121-{sim.sensor.dev_eui}":
            return sim.sensor.dev_eui
    return None


def vs121p_topic(serial: str) -> str:
    return f"vs121p/{serial}"


@dataclass
class SimulatedSensor:
    """One sensor's simulated room plus what it has sent, so tests can check totals."""

    sensor: SensorSection
    space: SimulatedSpace
    fcnt: int = 0
    published_in: int = 0
    published_out: int = 0
    silent_for: int = 0
    missed: list[tuple[int, int, int]] = field(default_factory=list)  # (time, in, out)


class TrafficPlan:
    """Produces (topic, body) messages, one interval of every sensor per `round`."""

    def __init__(
        self, sensors: list[SensorSection], envelope: str, *, gap_every: int = 0, seed: int = 7
    ) -> None:
        self.envelope = envelope
        self.gap_every = gap_every
        self.sims = [
            SimulatedSensor(s, SimulatedSpace(regions=max(1, s.region_count), seed=seed + s.number))
            for s in sensors
        ]
        self.rounds = 0
        # Downlinks a simulated sensor received: echoed in its next uplink, as a VS121 does.
        self.echoes: dict[str, bytes] = {}

    def round(self, now: float) -> Iterator[tuple[str, bytes]]:
        self.rounds += 1
        for sim in self.sims:
            sim.space.step()
            sim.published_in += sim.space.period_in
            sim.published_out += sim.space.period_out
            if sim.sensor.model == "vs121":
                yield from self._lorawan(sim, now)
            else:
                yield from self._poe(sim, now)

    def _lorawan(self, sim: SimulatedSensor, now: float) -> Iterator[tuple[str, bytes]]:
        eui = sim.sensor.dev_eui or ""
        ts = int(now)
        if self.gap_every and self.rounds % self.gap_every == 0 and sim.silent_for == 0:
            sim.silent_for = 2  # this and the next interval are "lost" on the air
        if sim.silent_for > 0:
            sim.silent_for -= 1
            sim.missed.append((ts, sim.space.period_in, sim.space.period_out))
            return
        payloads = [
            sim.space.uplink_occupancy(ts) + sim.space.uplink_line() + self.echoes.pop(eui, b""),
            sim.space.uplink_counting(),
        ]
        if sim.missed:
            history = b"".join(
                b"\x20\xce"
                + t.to_bytes(4, "little")
                + b"\x02"
                + n_in.to_bytes(2, "little")
                + n_out.to_bytes(2, "little")
                for t, n_in, n_out in sim.missed
            )
            sim.missed.clear()
            payloads.append(history)
        for payload in payloads:
            sim.fcnt += 1
            body = uplink_body(self.envelope, eui, sim.fcnt, payload, now)
            yield uplink_topic(self.envelope, eui), body

    @staticmethod
    def _poe(sim: SimulatedSensor, now: float) -> Iterator[tuple[str, bytes]]:
        serial = sim.sensor.serial or ""
        topic = vs121p_topic(serial)
        for report in (
            sim.space.report_region_counting(serial, now, 60),
            sim.space.report_line_crossing(serial, now, 60),
            sim.space.report_dwell(serial, now, 60),
            sim.space.report_flow(serial, now, 60),
        ):
            yield topic, json.dumps(report, separators=(",", ":")).encode()


def publish(
    plan: TrafficPlan,
    host: str,
    port: int,
    *,
    rounds: int,
    interval: float,
    qos: int = 1,
    network_server: SimulatedNetworkServer | None = None,
) -> int:
    """Publish `rounds` rounds at `interval` seconds apart; returns messages published. With a
    `network_server`, downlinks are answered and echoed (see `gateway.sim_network_server`)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"vs121-sim-{secrets.token_hex(3)}")
    connected = threading.Event()

    def on_connect(c: mqtt.Client, *_a: object, **_k: object) -> None:
        if network_server is not None:
            c.subscribe(network_server.filter, qos=1)
        connected.set()

    client.on_connect = on_connect
    if network_server is not None:
        ns = network_server
        client.on_message = lambda _c, _u, m: ns.take(m.topic, bytes(m.payload))
    client.connect(host, port, keepalive=30)
    client.loop_start()
    sent = 0
    try:
        if not connected.wait(10):
            raise ConnectionError(f"no MQTT connection to {host}:{port}")
        # Sensor times are whole seconds: keep simulated intervals at least a second apart.
        start = time.time()
        for i in range(rounds):
            now = start + i * max(interval, 1.0)
            if network_server is not None:
                _answer_downlinks(client, network_server, plan, qos)
            for topic, body in plan.round(now):
                client.publish(topic, body, qos=qos).wait_for_publish(10)
                sent += 1
            if interval > 0 and i + 1 < rounds:
                time.sleep(interval)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent
