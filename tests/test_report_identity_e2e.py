"""Report identity through the real daemon: zone names, unreadable times, the DST hour, MAC frames.

VS121-P reports go in over HTTP POST and over a real mosquitto; totals come back from
`/api/sensors` and `/metrics`.
"""

from __future__ import annotations

import copy
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import CHIRPSTACK_SUBSCRIPTION, VS121P_SUBSCRIPTION, Daemon, start_daemon
from helpers.publisher import Publisher

REPORT: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "vs121p" / "line_interval.json").read_text(encoding="utf-8")
)
MAC_ONLY = Path(__file__).parent / "data" / "ns" / "chirpstack-real-2023-hpr285-macOnly-fport0.json"
HALL = "24e124538c000001"

SERIALS = ("p-zone-mqtt", "p-zone-http", "p-unread", "p-untimed", "p-dst")


def sensors() -> str:
    text = (
        '[[sensors]]\nid = "hall"\nname = "Hall"\nnumber = 1\nmodel = "vs121"\n'
        f'dev_eui = "{HALL}"\nregion_count = 1\nreport_interval = 600\n'
    )
    for number, serial in enumerate(SERIALS, start=2):
        text += (
            f'[[sensors]]\nid = "{serial}"\nname = "{serial}"\nnumber = {number}\n'
            f'model = "vs121-p"\nserial = "{serial}"\nregion_count = 1\nreport_interval = 3600\n'
        )
    return text


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, mqtt_broker: MosquittoBroker
) -> Iterator[Daemon]:
    daemon = start_daemon(
        tmp_path_factory.mktemp("identity"),
        broker_port=mqtt_broker.port,
        subscriptions=CHIRPSTACK_SUBSCRIPTION + VS121P_SUBSCRIPTION,
        sensors=sensors(),
    )
    yield daemon
    if daemon.running():
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def publish(mqtt_broker: MosquittoBroker) -> Iterator[Callable[[str, bytes], None]]:
    publisher = Publisher(mqtt_broker.port, "identity-publisher")
    yield publisher.publish
    publisher.close()


def report(serial: str, **time_info: object) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(REPORT)
    doc["device_info"]["device_sn"] = serial
    for key, value in time_info.items():
        if value is None:
            doc["time_info"].pop(key, None)
        else:
            doc["time_info"][key] = value
    return doc


def post(daemon: Daemon, doc: dict[str, Any]) -> int:
    url = f"http://127.0.0.1:{daemon.http_port}/vs121p"
    request = urllib.request.Request(url, data=json.dumps(doc).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def total_in(daemon: Daemon, sensor: str) -> int:
    return int(daemon.values(sensor).get("gateway_total_in", 0))


def test_zone_name_after_offset_over_mqtt_counts_once(gateway: Daemon, publish: Any) -> None:
    body = json.dumps(report("p-zone-mqtt", timezone="UTC-0:00 WET/GMT")).encode()
    for _ in range(3):
        publish("vs121p/p-zone-mqtt", body)
    outcome = {"source": "mqtt:vs121p"}
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_messages_total", **outcome, outcome="duplicate") == 2,
        what="three deliveries",
    )
    assert total_in(gateway, "p-zone-mqtt") == 10
    assert gateway.metric("vs121gw_decode_errors_total", sensor="p-zone-mqtt") == 0


@pytest.mark.parametrize(
    "zone", ["UTC+8:00 China Standard Time", "(UTC-08:00) United States - Pacific"]
)
def test_zone_names_over_http_count_once(gateway: Daemon, zone: str) -> None:
    before = total_in(gateway, "p-zone-http")
    doc = report("p-zone-http", timezone=zone)
    for _ in range(3):
        assert post(gateway, doc) == 200
    assert total_in(gateway, "p-zone-http") == before + 10
    assert gateway.metric("vs121gw_decode_errors_total", sensor="p-zone-http") == 0


def test_unreadable_time_is_keyed_on_its_content(gateway: Daemon) -> None:
    doc = report("p-unread", timezone="Asia/Shanghai")
    for _ in range(3):
        assert post(gateway, doc) == 200
    assert total_in(gateway, "p-unread") == 10
    # The next period (another time text) with the same counts is a new report.
    later = report(
        "p-unread",
        timezone="Asia/Shanghai",
        start_time="2022/12/20 19:15:52",
        end_time="2022/12/20 20:15:52",
    )
    for _ in range(2):
        assert post(gateway, later) == 200
    assert total_in(gateway, "p-unread") == 20


def test_report_without_time_adds_no_line_counts(gateway: Daemon) -> None:
    doc = report("p-untimed", start_time=None, end_time=None)
    for _ in range(3):
        assert post(gateway, doc) == 200
    values = gateway.values("p-untimed")
    assert values.get("gateway_total_in", 0) == 0
    assert values["people_total_in"] == 10  # the sensor's own total is only shown, so it stays
    assert gateway.metric("vs121gw_lines_refused_total", sensor="p-untimed") == 3
    log = gateway.log_text()
    assert "sensor p-untimed (http): report has no readable time" in log
    assert "line counts (people_in, people_out) are not added" in log


def test_autumn_hour_twice_counts_both(gateway: Daemon) -> None:
    # Same local time and zone string; the first in summer time, the second an hour later
    # in standard time. Each delivered twice.
    summer = report("p-dst", dst_status=True)
    winter = report("p-dst", dst_status=False)
    winter["in_counted"] = 7
    for doc in (summer, summer, winter, winter):
        assert post(gateway, doc) == 200
    assert total_in(gateway, "p-dst") == 17


def test_mac_only_uplink_is_quiet_counted_and_no_sign_of_life(
    gateway: Daemon, publish: Any
) -> None:
    doc = json.loads(MAC_ONLY.read_text(encoding="utf-8"))
    doc["deviceInfo"]["devEui"] = HALL
    doc["deviceInfo"]["applicationId"] = "a"
    topic = f"application/a/device/{HALL}/event/up"
    publish(topic, json.dumps(doc).encode())
    # Without fPort and data at all (protobuf JSON leaves out zero values): the same.
    bare = {k: v for k, v in doc.items() if k not in ("fPort", "data")}
    bare["fCnt"] = doc["fCnt"] + 1
    bare["deduplicationId"] = "mac-only-2"
    publish(topic, json.dumps(bare).encode())
    gateway.wait_until(
        lambda: gateway.metric("vs121gw_mac_only_total", sensor="hall") == 2,
        what="MAC-only count",
    )
    source = {"source": "mqtt:chirpstack"}
    assert gateway.metric("vs121gw_messages_total", **source, outcome="mac_only") == 2
    assert gateway.metric("vs121gw_messages_total", **source, outcome="decode_error") == 0
    assert gateway.metric("vs121gw_decode_errors_total", sensor="hall") == 0
    hall = gateway.status()["sensors"]["hall"]
    assert hall["online"] is False  # no counts arrived: nothing to show as fresh
    assert "WARNING" not in "\n".join(
        line for line in gateway.log_text().splitlines() if "hall" in line
    )
