"""A full state volume: the gateway gets itself out, says so, and never claims what is not true.

Real daemon, real mosquitto, and a small tmpfs mounted for the test as the state volume (the
test is skipped where mounting is not permitted). A filler file stands for whatever else takes
the room; the journal itself fills the rest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.broker import MosquittoBroker
from helpers.daemon import Daemon, start_daemon
from helpers.publisher import Publisher

DATA = Path(__file__).parent / "data" / "vs121p"
RESERVE = "space-reserve"
ACK_WITHIN_1S = "ack_timeout = 1.0\n"


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own, unmounted afterwards."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path, leave: int = 0) -> None:
    """Take all the room on `path`'s volume but `leave` bytes."""
    st = os.statvfs(path.parent)
    want = max(0, st.f_bavail * st.f_frsize - leave)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\0" * 4096
        while want > 0 or leave == 0:
            try:
                want -= os.write(fd, block[: max(1, min(len(block), want))] if leave else block)
            except OSError:
                break  # the volume is full
    finally:
        os.close(fd)


class Reports(Publisher):
    def __init__(self, port: int) -> None:
        super().__init__(port, f"disk-pub-{port}")
        self.template = json.loads((DATA / "region_interval_counts.json").read_text())

    def report(self, n: int, total: int = 1) -> None:
        """The n-th distinct interval report (its own period end)."""
        day, minute = divmod(n, 24 * 60)
        end = f"2022/11/{1 + day:02d} {minute // 60:02d}:{minute % 60:02d}:52"
        times = dict(self.template["time_info"], end_time=end)
        doc = dict(self.template, current_total=total, time_info=times)
        self.publish_json("vs121p/foyer", doc)


def _daemon(tmp_path: Path, state: Path, broker: MosquittoBroker) -> Daemon:
    return start_daemon(tmp_path, broker_port=broker.port, state_dir=state, extra=ACK_WITHIN_1S)


def accepted(daemon: Daemon) -> float:
    return daemon.metric("vs121gw_messages_total", source="mqtt:vs121p", outcome="accepted")


def health(daemon: Daemon) -> str:
    try:
        return daemon.get("/healthz")
    except OSError as exc:  # urllib raises HTTPError (an OSError) for 503; its body says why
        read = getattr(exc, "read", None)
        return read().decode() if read is not None else str(exc)


def refused_push(daemon: Daemon) -> bytes:
    """POST a VS121-P report over HTTP, which must be answered 503; the answer's body."""
    line = json.loads((DATA / "line_interval.json").read_text())
    post = urllib.request.Request(
        f"http://127.0.0.1:{daemon.http_port}/vs121p", data=json.dumps(line).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 503
    return refused.value.read()


def test_journal_filling_the_volume_does_not_stop_acknowledgements(
    tmp_path: Path, volume: Path, mqtt_broker: MosquittoBroker
) -> None:
    daemon = _daemon(tmp_path, volume / "state", mqtt_broker)
    pub = Reports(mqtt_broker.port)
    try:
        assert (volume / "state" / RESERVE).exists()
        assert "state volume:" in daemon.log_text()
        assert daemon.metric("vs121gw_state_free_bytes") > 0
        fill(volume / "filler", leave=64 * 1024)  # room for some dozens of journal records
        # One report at a time, each applied before the next, until the journal meets the full
        # volume: every batch is then smaller than a page, so the append that fails had no page
        # of its own to give back, and the snapshot that empties the journal can only be
        # written in the reserve's room. (Larger batches free what they took when they fail,
        # and the snapshot may fit there.)
        total = 0

        def applied(n: int) -> Callable[[], bool]:
            return lambda: accepted(daemon) == n

        while "cannot write state" not in daemon.log_text():
            assert total < 400, "the journal never filled the volume"
            pub.report(total)
            total += 1
            daemon.wait_until(applied(total), what=f"report {total} applied")
        for n in range(total, total + 50):  # and on: acknowledgements go on as before
            pub.report(n)
        total += 50
        daemon.wait_until(lambda: accepted(daemon) == total, timeout=60, what="all applied")
        daemon.wait_until(
            lambda: daemon.metric("vs121gw_state_write_failing") == 0, what="writes working"
        )
        assert "reserve of" in daemon.log_text()  # it had to use it, and it got out
        assert health(daemon).startswith("ok")
    finally:
        pub.close()
        assert daemon.stop() == 0
    # Everything was acknowledged: a restart gets nothing again.
    again = Daemon(tmp_path, daemon.config.read_text(), http_port=daemon.http_port)
    again.start()
    try:
        again.wait_mqtt()
        pub = Reports(mqtt_broker.port)
        pub.report(10_000)  # a marker behind anything the broker might still hold
        again.wait_until(lambda: accepted(again) >= 1, what="marker")
        pub.close()
        assert accepted(again) == 1
        assert again.metric("vs121gw_duplicates_total", sensor="foyer") == 0
    finally:
        again.stop()


def test_full_volume_is_reported_once_and_recovered(
    tmp_path: Path, volume: Path, mqtt_broker: MosquittoBroker
) -> None:
    daemon = _daemon(tmp_path, volume / "state", mqtt_broker)
    pub = Reports(mqtt_broker.port)
    filler = volume / "filler"
    try:
        (volume / "state" / RESERVE).unlink()  # someone else already took the reserve's room
        fill(filler)
        pub.report(1, total=7)
        daemon.wait_until(
            lambda: daemon.metric("vs121gw_state_write_failing") == 1, what="failing reported"
        )
        assert health(daemon).startswith("degraded: cannot write state: No space left on device")
        status = daemon.wait_notify_prefix("STATUS=degraded", 10)
        assert "No space left on device" in status
        # An HTTP push is not acknowledged either: 503 with the reason, not a hang or a 200.
        # Each is held for ack_timeout (1 s) while the committer retries (every second): after
        # four, the failure is still reported once, not once per retry.
        for _ in range(4):
            assert b"No space left on device" in refused_push(daemon)
        assert daemon.log_text().count("cannot write state") == 1
        filler.unlink()
        daemon.wait_until(
            lambda: daemon.metric("vs121gw_state_write_failing") == 0, what="recovered"
        )
        assert health(daemon).startswith("ok")
        # The retries did happen while it failed: the recovery line counts them.
        recovery = re.search(r"state written again after (\d+) failed attempts", daemon.log_text())
        assert recovery is not None
        assert int(recovery[1]) >= 3
        # Full again at shutdown: the final snapshot fails and the log says so.
        (volume / "state" / RESERVE).unlink(missing_ok=True)
        fill(filler)
        # More than the journal's last, partly used page can still take.
        for n in range(2, 22):
            pub.report(n, total=100 + n)
        daemon.wait_until(
            lambda: daemon.metric("vs121gw_state_write_failing") == 1, what="failing again"
        )
    finally:
        pub.close()
        if daemon.running():
            daemon.stop()
    log = daemon.log_text()
    assert "final state NOT saved" in log
    assert "stopped; state saved" not in log
    # Room again: the unacknowledged report comes back and is counted.
    filler.unlink()
    again = Daemon(tmp_path, daemon.config.read_text(), http_port=daemon.http_port)
    again.start()
    try:
        again.wait_until(
            lambda: again.values("foyer").get("people_count_all") == 121, what="redelivered"
        )
    finally:
        again.stop()
