"""The commissioning page over plain HTTP against the real daemon: server-rendered pages (no
script needed), escaping, downloads equal to the CLI's output, the live stream, and the rules for
actions (credentials, POST only, same origin, page token)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.daemon import Daemon, gateway_config, new_http_port

USER, PASSWORD = "admin", "pa55-word"

SENSORS = """
[[sensors]]
id = "hall"
name = "Hall <b>&</b>"
number = 1
model = "vs121-p"
serial = "369362028335"
region_count = 2
report_interval = 60

[[alarms]]
id = "crowd"
name = "Crowd"
number = 1
sensors = ["hall"]
threshold = 9
"""

REPORT = json.loads(
    (Path(__file__).parent / "data" / "vs121p" / "region_interval_counts.json").read_text()
)


def _start(tmp_path: Path, *, auth: bool) -> Daemon:
    port = new_http_port()
    text = gateway_config(tmp_path / "state", mqtt_port=None, http_port=port, sensors=SENSORS)
    if auth:
        text = text.replace(
            f"port = {port}\n", f'port = {port}\nusername = "{USER}"\npassword = "{PASSWORD}"\n', 1
        )
    daemon = Daemon(tmp_path, text, http_port=port)
    daemon.start()
    return daemon


@pytest.fixture
def open_gateway(tmp_path: Path) -> Iterator[Daemon]:
    d = _start(tmp_path, auth=False)
    yield d
    assert d.stop() == 0


@pytest.fixture
def guarded_gateway(tmp_path: Path) -> Iterator[Daemon]:
    d = _start(tmp_path, auth=True)
    yield d
    assert d.stop() == 0


def _request(
    d: Daemon,
    path: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    auth: bool = False,
) -> tuple[int, str, dict[str, str]]:
    all_headers = dict(headers or {})
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{d.http_port}{path}",
        data=data,
        headers=all_headers,
        method="POST" if data is not None else "GET",
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_args: object, **_kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=5) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _token(d: Daemon) -> str:
    _, page, _ = _request(d, "/alarms")
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_pages_are_server_rendered_and_escaped(open_gateway: Daemon) -> None:
    d = open_gateway
    status, _, _ = _request(d, "/vs121p", data=json.dumps(REPORT).encode())
    assert status == 200
    status, page, headers = _request(d, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "Hall &lt;b&gt;&amp;&lt;/b&gt;" in page
    assert "<b>&</b>" not in page
    row = re.search(r'<tr id="sensor-hall".*?</tr>', page, re.S)
    assert row is not None
    assert 'data-state="online"' in row.group(0)
    assert f'data-key="people">{REPORT["current_total"]}</td>' in row.group(0)
    for path in ("/sensors/hall", "/points", "/alarms", "/gateway"):
        status, page, _ = _request(d, path)
        assert status == 200, path
        assert "<nav" in page
    _, sensor, _ = _request(d, "/sensors/hall")
    assert "current_total" in sensor  # the message itself
    assert "AI 1001" in sensor  # its points with BACnet object and Modbus address
    assert "holding 204 (400205)" in sensor
    # Reliability as BACnet serves it: a value this reporting type never sends is out of
    # service (no fault), a reported one has no fault.
    assert _reliability(sensor, "a_to_b") == "out-of-service"
    assert _reliability(sensor, "people_count_all") == "no-fault-detected"
    # An exact twin of a total shows the value it mirrors, as BACnet serves it.
    assert _reliability(sensor, "gateway_total_in_exact") == "no-fault-detected"
    assert _reliability(sensor, "gateway_total_in") == "no-fault-detected"
    assert _request(d, "/sensors/nope")[0] == 404


def _reliability(page: str, key: str) -> str:
    row = re.search(rf'<span class="sub">{key}(?: · writable)?</span>.*?</tr>', page, re.S)
    assert row is not None, key
    found = re.search(r'<span class="rel ([a-z-]+)">', row.group(0))
    assert found is not None, key
    return found.group(1)


def test_downloads_are_the_cli_text(open_gateway: Daemon) -> None:
    d = open_gateway
    for fmt in ("ede", "csv", "modbus", "modbus-csv"):
        status, text, headers = _request(d, f"/points/download/{fmt}")
        assert status == 200
        assert "attachment" in headers["Content-Disposition"]
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "points",
                "--config",
                str(d.config),
                "--format",
                fmt,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert text == cli.stdout, fmt


def test_points_filter_without_script(open_gateway: Daemon) -> None:
    _, page, _ = _request(open_gateway, "/points?writable=yes&type=analog-value")
    owners = re.findall(r'data-owner="([^"]+)" data-type="([^"]+)" data-writable="([^"]+)"', page)
    assert owners
    assert all(t == "analog-value" and w == "yes" for _, t, w in owners)


def test_live_stream_sends_the_changed_row(open_gateway: Daemon) -> None:
    d = open_gateway
    url = f"http://127.0.0.1:{d.http_port}/events?topic=sensors"
    with urllib.request.urlopen(url, timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.readline() == b"retry: 3000\n"
        stream.readline()
        first = json.loads(stream.readline().removeprefix(b"data: "))
        assert 'data-state="never"' in first["replace"]["sensor-hall"]
        assert _request(d, "/vs121p", data=json.dumps(REPORT).encode())[0] == 200
        while True:  # bounded by the read timeout
            line = stream.readline()
            if line.startswith(b"data: "):
                event = json.loads(line.removeprefix(b"data: "))
                if "sensor-hall" in event.get("replace", {}):
                    break
        assert 'data-state="online"' in event["replace"]["sensor-hall"]


def test_no_action_without_configured_credentials(open_gateway: Daemon) -> None:
    d = open_gateway
    token = _token(d)
    body = f"threshold=3&csrf={token}".encode()
    status, text, _ = _request(d, "/alarms/crowd/threshold", data=body)
    assert status == 403
    assert "http.username" in text
    assert _request(d, "/alarms/crowd/threshold")[0] == 405  # never on GET
    assert "action refused" in d.log_text()
    _, page, _ = _request(d, "/gateway")  # the same line, in the page's fault log
    assert "action refused: no http.username/password configured" in page


def test_action_rules(guarded_gateway: Daemon) -> None:
    d = guarded_gateway
    token = _token(d)  # read-only pages are open on loopback
    body = f"threshold=4&csrf={token}".encode()
    status, _, headers = _request(d, "/alarms/crowd/threshold", data=body)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic")
    bad = b"threshold=4&csrf=forged"
    assert _request(d, "/alarms/crowd/threshold", data=bad, auth=True)[0] == 403
    other = {"Origin": "http://attacker.example"}
    assert _request(d, "/alarms/crowd/threshold", data=body, auth=True, headers=other)[0] == 403
    assert "threshold 4" not in d.log_text()
    same = {"Origin": f"http://127.0.0.1:{d.http_port}"}
    status, _, headers = _request(d, "/alarms/crowd/threshold", data=body, auth=True, headers=same)
    assert status == 303
    assert headers["Location"].startswith("/alarms?note=")
    _, page, _ = _request(d, headers["Location"])
    assert "alarm crowd: threshold 4" in page  # the outcome, shown on the page
    assert f"alarm crowd: threshold 4 by {USER}" in d.log_text()
    status, text, _ = _request(
        d,
        "/alarms/crowd/override",
        data=f"value=active&csrf={token}".encode(),
        auth=True,
        headers={"Accept": "application/json"},
    )
    assert status == 200
    assert json.loads(text) == {"ok": True, "message": "alarm crowd: relay priority 8 active"}
    status, text, _ = _request(
        d,
        "/sensors/hall/reset",
        data=f"csrf={token}".encode(),
        auth=True,
        headers={"Accept": "application/json"},
    )
    assert status == 200
    assert "totals reset" in text
    assert _request(d, "/login")[0] == 401
    assert _request(d, "/login?next=//evil.example/", auth=True)[2]["Location"] == "/"
