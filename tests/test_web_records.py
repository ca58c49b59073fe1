"""What the commissioning page keeps in memory: messages per sensor (as the real `Ingest` sees
them), the fault log, and the chart drawn from the trend."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from gateway.ingest import Ingest
from gateway.settings import Settings, load_settings
from gateway.state import GatewayState
from gateway.web import chart
from gateway.web.records import (
    MESSAGES_KEPT,
    FaultLog,
    MessageLog,
    Sample,
    SampleRing,
    Trend,
    raw_text,
)

HALL = "24e124538c000001"
CONFIG = f"""
[gateway]
state_dir = "state"

[[sensors]]
id = "hall"
name = "Hall"
number = 1
model = "vs121"
dev_eui = "{HALL}"
region_count = 4

[[sensors]]
id = "foyer"
name = "Foyer"
number = 2
model = "vs121-p"
serial = "369362028335"
"""


def _setup(tmp_path: Path) -> tuple[Settings, GatewayState, Ingest, MessageLog]:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG)
    settings = load_settings(path)
    state = GatewayState(
        [(s.spec(), float(s.stale_seconds), float(s.report_interval)) for s in settings.sensors]
    )
    log = MessageLog()
    return settings, state, Ingest(settings.sensors, state, observe=log.observe), log


def _chirpstack(fcnt: int, payload: bytes) -> bytes:
    body = {
        "deduplicationId": f"d-{fcnt}",
        "deviceInfo": {"devEui": HALL, "applicationId": "a"},
        "fCnt": fcnt,
        "fPort": 85,
        "data": base64.b64encode(payload).decode(),
    }
    return json.dumps(body).encode()


TOPIC = f"application/a/device/{HALL}/event/up"


def test_each_message_is_kept_with_its_outcome_and_reason(tmp_path: Path) -> None:
    _, _, ingest, log = _setup(tmp_path)
    good = _chirpstack(1, bytes.fromhex("04c9030800a106cd05"))
    ingest.uplink("mqtt:cs", "chirpstack", TOPIC, good)
    ingest.uplink("mqtt:cs", "chirpstack", TOPIC, good)  # redelivered
    ingest.uplink("mqtt:cs", "chirpstack", TOPIC, _chirpstack(2, bytes.fromhex("04c9030877")))
    ingest.uplink("mqtt:cs", "chirpstack", TOPIC, b"{not json")
    newest, duplicate, first = log.for_sensor("hall")
    assert first.outcome == "applied"
    assert first.envelope is not None
    assert first.envelope["payload"] == "04 c9 03 08 00 a1 06 cd 05"
    assert first.envelope["fcnt"] == 1
    assert first.decoded is not None
    assert json.loads(first.decoded)["data"]["people_count_all"] == 3
    assert duplicate.outcome == "duplicate"
    assert newest.outcome in ("error", "partial")
    assert "cut short" in newest.reason
    # Not parseable at all: no sensor can be named, so it is kept apart with its reason.
    (unmatched,) = log.unmatched
    assert unmatched.outcome == "error"
    assert unmatched.result == "envelope_error"
    assert unmatched.raw == "{not json"


def test_the_ring_is_bounded(tmp_path: Path) -> None:
    _, _, ingest, log = _setup(tmp_path)
    for n in range(MESSAGES_KEPT + 15):
        ingest.uplink("mqtt:cs", "chirpstack", TOPIC, _chirpstack(n, bytes([0x04, 0xC9, n, 0x08])))
    kept = log.for_sensor("hall")
    assert len(kept) == MESSAGES_KEPT
    assert json.loads(kept[0].raw)["fCnt"] == MESSAGES_KEPT + 14  # newest first


def test_a_vs121p_snapshot_is_never_kept(tmp_path: Path) -> None:
    _, _, ingest, log = _setup(tmp_path)
    image = "data:image/jpeg;base64," + "QUJD" * 500
    report = {
        "device_info": {"device_sn": "369362028335"},
        "current_total": 4,
        "snapshot": image,
    }
    ingest.vs121p("http", json.dumps(report).encode())
    (record,) = log.for_sensor("foyer")
    assert record.outcome in ("applied", "partial")  # a minimal report; its count is used
    assert "QUJD" not in record.raw
    assert "snapshot" not in record.raw
    assert '"current_total": 4' in record.raw


def test_raw_bodies_too_large_to_parse_are_cut_and_never_show_an_image() -> None:
    big = json.dumps({"snapshot": "QUJD" * 40000}).encode()
    text, kind = raw_text(big)
    assert "QUJD" not in text
    assert kind == "text"
    binary, kind = raw_text(bytes(range(256)) * 20)
    assert kind == "hex"
    assert len(binary) < 2100


def test_fault_log_keeps_warnings_newest_first_and_bounded() -> None:
    faults = FaultLog(kept=3)
    logger = logging.getLogger("gateway.test-web-faults")
    logger.addHandler(faults)
    try:
        logger.info("not a fault")
        for n in range(5):
            logger.warning("sensor %s: silent\nfor %d s", "hall", n)
    finally:
        logger.removeHandler(faults)
    assert [f.message for f in faults.entries] == [
        "sensor hall: silent for 4 s",
        "sensor hall: silent for 3 s",
        "sensor hall: silent for 2 s",
    ]


def test_chart_draws_the_trend(tmp_path: Path) -> None:
    _, state, ingest, _ = _setup(tmp_path)
    trend = Trend(state)
    state.subscribe(trend.on_change)
    for n, people in enumerate((3, 5, 2), start=1):
        body = {
            "deduplicationId": f"o-{n}",
            "deviceInfo": {"devEui": HALL},
            "fCnt": n,
            "fPort": 85,
            "object": {"people_count_all": people, "people_in": n, "people_out": 1},
        }
        ingest.uplink("mqtt:cs", "chirpstack", TOPIC, json.dumps(body).encode())
    samples = trend.samples("hall")
    assert [s.people for s in samples] == [3, 5, 2]
    svg = str(chart.render(samples))
    assert svg.startswith("<svg")
    assert "polyline" in svg
    assert 'class="bar in"' in svg
    assert "highest count 5" in svg


def test_sample_ring_keeps_the_newest_in_order_with_unknown_values() -> None:
    ring = SampleRing(3)
    for i in range(5):
        ring.append(Sample(float(i), None if i == 3 else float(i), 10.0 * i, None))
    kept = ring.since(0.0)
    assert [s.at for s in kept] == [2.0, 3.0, 4.0]  # the oldest two made room
    assert [s.people for s in kept] == [2.0, None, 4.0]
    assert [s.total_in for s in kept] == [20.0, 30.0, 40.0]
    assert all(s.total_out is None for s in kept)
    assert [s.at for s in ring.since(3.5)] == [4.0]
    assert SampleRing(3).since(0.0) == []
