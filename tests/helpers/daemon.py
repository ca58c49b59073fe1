"""Runs the real gateway as a separate process for end-to-end tests.

Readiness comes from the daemon's own sd_notify READY=1 on a socket we bind (the same path systemd
uses), not from sleeping; its state is read back over its HTTP API.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.broker import free_port
from helpers.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]

LORAWAN_SENSORS = """
[[sensors]]
id = "hall"
name = "Hall"
number = 1
model = "vs121"
dev_eui = "24e124538c000001"
region_count = 4
report_interval = 60

[[sensors]]
id = "lab"
name = "Lab"
number = 2
model = "vs121"
dev_eui = "24e124538c000002"
region_count = 8
report_interval = 60

[[sensors]]
id = "foyer"
name = "Foyer"
number = 3
model = "vs121-p"
serial = "369362028335"
region_count = 2
report_interval = 60
"""


def gateway_config(
    state_dir: Path,
    *,
    mqtt_port: int | None,
    http_port: int,
    subscriptions: str = "",
    sensors: str = LORAWAN_SENSORS,
    extra: str = "",
) -> str:
    mqtt = ""
    if mqtt_port is not None:
        mqtt = (
            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
            f'client_id = "gw-{state_dir.parent.name}"\nkeepalive = 5\nreconnect_max = 2\n'
            f"{subscriptions}\n"
        )
    return (
        f'[gateway]\nstate_dir = "{state_dir}"\nlog_level = "info"\n'
        "[bacnet]\nenabled = false\n"
        "[modbus.tcp]\nenabled = false\n"
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f"{extra}\n{mqtt}{sensors}"
    )


CHIRPSTACK_SUBSCRIPTION = """
[[mqtt.subscriptions]]
name = "chirpstack"
topic = "application/+/device/+/event/up"
envelope = "chirpstack"
"""

VS121P_SUBSCRIPTION = """
[[mqtt.subscriptions]]
name = "vs121p"
topic = "vs121p/#"
envelope = "vs121p"
"""

ALL_SUBSCRIPTIONS = (
    CHIRPSTACK_SUBSCRIPTION
    + """
[[mqtt.subscriptions]]
name = "tts"
topic = "v3/+/devices/+/up"
envelope = "tts"

[[mqtt.subscriptions]]
name = "milesight"
topic = "milesight/uplink/+"
envelope = "milesight"
downlink_topic = "milesight/downlink/{dev_eui}"

[[mqtt.subscriptions]]
name = "raw"
topic = "sensors/+/up"
envelope = "raw"
raw_topic_pattern = "sensors/{dev_eui}/up"
"""
    + VS121P_SUBSCRIPTION
)


class Daemon:
    """`vs121-gateway run --config <file>` in a child process."""

    def __init__(self, workdir: Path, config_text: str, *, http_port: int) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.config = workdir / "gateway.toml"
        self.config.write_text(config_text)
        self.log_path = workdir / "gateway.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        # How the gateway is started; a test may run it through a wrapper script instead.
        self.command = [sys.executable, "-m", "gateway.cli"]

    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        sock_path = self.workdir / "notify.sock"
        sock_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(sock_path))
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("VS121GW_")}
        child_env.update(env or {})
        child_env["NOTIFY_SOCKET"] = str(sock_path)
        child_env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [*self.command, "run", "--config", str(self.config)],
                cwd=self.workdir,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_notify("READY=1", timeout)

    def wait_notify(self, field: str, timeout: float) -> None:
        self._notification(lambda line: line == field, field, timeout)

    def wait_notify_prefix(self, prefix: str, timeout: float) -> str:
        """The first notification field starting with `prefix` (e.g. "STATUS=degraded")."""
        return self._notification(lambda line: line.startswith(prefix), prefix, timeout)

    def _notification(self, match: Callable[[str], bool], what: str, timeout: float) -> str:
        """The first field of an sd_notify datagram that `match`es (blocks in recv)."""
        assert self._notify is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} from the gateway; log:\n{self.log_tail()}")
            self._notify.settimeout(left)
            try:
                data = self._notify.recv(4096).decode()
            except TimeoutError:
                continue
            for line in data.split("\n"):
                if match(line):
                    return line

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self._process is not None
        self._process.kill()
        self._process.wait(10)
        self._close()

    def terminate(self) -> None:
        """Send SIGTERM and return at once (the notify socket stays readable)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self._process is not None
        code = self._process.wait(timeout)
        self._close()
        return code

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(timeout)
        self._close()
        return code

    def _close(self) -> None:
        self._process = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- reading it back ------------------------------------------------------------------

    def get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.get("/api/sensors"))
        return doc

    def values(self, sensor: str) -> dict[str, Any]:
        values: dict[str, Any] = self.status()["sensors"][sensor]["values"]
        return values

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics (0 when the series does not exist yet)."""
        for line in self.get("/metrics").splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            if metric != name:
                continue
            found = dict(
                pair.split("=", 1) for pair in label_text.rstrip("}").split(",") if "=" in pair
            )
            if {k: v.strip('"') for k, v in found.items()} == labels:
                return float(value)
        return 0.0

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition"
    ) -> None:
        """Poll the daemon's observable state until `predicate` holds (bounded); a predicate
        that cannot read it yet (connection refused, key missing) counts as not holding."""

        def holds() -> bool:
            if not self.running():
                raise AssertionError(f"gateway exited while waiting for {what}:\n{self.log_tail()}")
            try:
                return predicate()
            except (OSError, KeyError):
                return False

        wait_until(holds, timeout, what, detail=self.log_tail)

    def wait_mqtt(self, timeout: float = 20.0) -> None:
        """Until the gateway is connected to the broker (and so subscribed)."""
        self.wait_until(lambda: self.metric("vs121gw_mqtt_connected") == 1, timeout, "MQTT")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def new_http_port() -> int:
    return free_port()


def start_daemon(
    workdir: Path,
    *,
    broker_port: int | None = None,
    state_dir: Path | None = None,
    subscriptions: str = ALL_SUBSCRIPTIONS,
    sensors: str = LORAWAN_SENSORS,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Daemon:
    """The gateway started from `gateway_config`; with a broker, subscribed and connected."""
    port = new_http_port()
    cfg = gateway_config(
        state_dir or workdir / "state",
        mqtt_port=broker_port,
        http_port=port,
        subscriptions=subscriptions,
        sensors=sensors,
        extra=extra,
    )
    daemon = Daemon(workdir, cfg, http_port=port)
    daemon.start(env=env)
    if broker_port is not None:
        daemon.wait_mqtt()
    return daemon


def start_mqtt_daemon(
    workdir: Path, broker_port: int, *, extra: str = "", env: dict[str, str] | None = None
) -> Daemon:
    """The gateway subscribed to every network server's topics, started and connected."""
    return start_daemon(workdir, broker_port=broker_port, extra=extra, env=env)
