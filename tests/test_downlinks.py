"""The command records: their states, what confirms or fails them, and their file."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.downlink_events import Event
from gateway.downlinks import (
    STATUS_CONFIRMED,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_TIMED_OUT,
    DownlinkTracker,
    expected_echo,
)

EUI = "24e124538c000001"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(tmp_path: Path, clock: Clock) -> DownlinkTracker:
    return DownlinkTracker(tmp_path, clock=clock)


def send(t: DownlinkTracker, payload: str = "ff03b004", timeout: float = 60.0) -> str:
    record = t.new(
        sensor_id="hall",
        commands=[{"command": "reporting_interval", "seconds": 1200}],
        payload=bytes.fromhex(payload),
        fport=85,
        topic="t",
        requester="cli",
        timeout=timeout,
    )
    return record.id


def state(t: DownlinkTracker, command_id: str) -> str:
    record = t.get(command_id)
    assert record is not None
    return record.state


def test_the_echo_a_command_expects_is_its_own_layout_read_as_a_reply() -> None:
    assert expected_echo(bytes.fromhex("ff03b004")) == {"from_now_on_report_interval": 1200}
    assert expected_echo(bytes.fromhex("f93d01")) == {"line_detect_report_enable": "enable"}


def test_events_of_a_device_go_to_its_oldest_unfinished_command(tmp_path: Path) -> None:
    clock = Clock()
    t = tracker(tmp_path, clock)
    first, second = send(t), send(t, "ff035802")
    for command_id in (first, second):
        record = t.get(command_id)
        assert record is not None
        t.published(record)
    t.on_event("hall", Event("sent", "chirpstack", dev_eui=EUI))
    t.on_event("hall", Event("ack", "chirpstack", dev_eui=EUI))
    assert (state(t, first), state(t, second)) == ("confirmed", "queued")
    t.on_event("hall", Event("nack", "chirpstack", dev_eui=EUI, reason="not acknowledged"))
    assert state(t, second) == "failed"
    assert t.status_word("hall") == STATUS_FAILED


def test_an_echo_confirms_only_the_value_sent(tmp_path: Path) -> None:
    t = tracker(tmp_path, Clock())
    command_id = send(t)
    record = t.get(command_id)
    assert record is not None
    t.published(record)
    assert t.status_word("hall") == STATUS_PENDING
    t.on_uplink("hall", {"from_now_on_report_interval": 600})  # an older setting
    assert state(t, command_id) == "queued"
    t.on_uplink("hall", {"from_now_on_report_interval": 1200, "people_count_all": 3})
    assert state(t, command_id) == "confirmed"
    assert t.status_word("hall") == STATUS_CONFIRMED


def test_the_device_refusing_a_setting_fails_the_command(tmp_path: Path) -> None:
    t = tracker(tmp_path, Clock())
    command_id = send(t, "f93d01")
    refusal = {
        "device_response_result": {
            "channel_type": 0x3D,
            "result": "invalid parameter",
            "request": {"line_detect_report_enable": "enable"},
        }
    }
    t.on_uplink("hall", refusal)
    assert state(t, command_id) == "failed"


def test_deadline_then_late_echo(tmp_path: Path) -> None:
    clock = Clock()
    t = tracker(tmp_path, clock)
    command_id = send(t, timeout=30)
    clock.now += 29
    assert t.expire() == []
    clock.now += 2
    [late] = t.expire()
    assert late.id == command_id
    assert t.status_word("hall") == STATUS_TIMED_OUT
    t.on_event("hall", Event("ack", "chirpstack", dev_eui=EUI))  # no unfinished command now
    assert state(t, command_id) == "timed_out"
    t.on_uplink("hall", {"from_now_on_report_interval": 1200})
    assert state(t, command_id) == "confirmed"


def test_restart_keeps_waiting_commands_and_loses_half_published_ones(tmp_path: Path) -> None:
    clock = Clock()
    before = tracker(tmp_path, clock)
    waiting = send(before)
    record = before.get(waiting)
    assert record is not None
    before.published(record)
    half = send(before, "ff10ff")  # the gateway stops before it is published
    after = tracker(tmp_path, clock)
    unfinished = after.load()
    assert [r.id for r in unfinished] == [waiting]
    assert state(after, half) == "lost"
    assert state(after, waiting) == "queued"
    # "lost" is written back at once: a second restart does not report it again.
    doc = json.loads((tmp_path / "downlinks.json").read_text())
    assert {r["id"]: r["state"] for r in doc["records"]} == {waiting: "queued", half: "lost"}
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unreadable_file_is_reported_and_replaced(tmp_path: Path) -> None:
    (tmp_path / "downlinks.json").write_text("{broken")
    t = tracker(tmp_path, Clock())
    assert t.load() == []
    send(t)
    assert json.loads((tmp_path / "downlinks.json").read_text())["version"] == 1
