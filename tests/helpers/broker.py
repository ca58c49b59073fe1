"""A throwaway mosquitto broker on loopback, for tests and benchmarks.

Started with `mosquitto -c <conf>` listening on 127.0.0.1 only, anonymous, without persistence,
everything in a caller-given directory. It is stopped by PID, and can be restarted on the same
port so tests can cut the broker away under a running client.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from helpers.process import terminate
from helpers.wait import wait_until

HOST = "127.0.0.1"
INSTALL_HINT = "run `apt-get install -y mosquitto` (the project's test script installs it)"


class BrokerError(RuntimeError):
    """The broker could not be found, started or stopped."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the kernel's choice for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(host: str, port: int) -> bool:
    """Whether a TCP connect to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process; `start()` it, `restart()` it, `stop()` it (or use `with`)."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        executable: str = "mosquitto",
        start_timeout: float = 10.0,
        persistence: bool = False,
        extra_config: str = "",
    ) -> None:
        path = shutil.which(executable)
        if path is None:
            raise BrokerError(f"{executable!r} is not on PATH: {INSTALL_HINT}")
        self.host = HOST
        self._executable = path
        self._workdir = workdir
        self._port = port
        self._start_timeout = start_timeout
        self._persistence = persistence
        self._extra = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this run's output begins in the shared log file

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker has not been started")
        return self._port

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BrokerError("the broker is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self._workdir / "mosquitto.log"

    def start(self) -> None:
        """Start on the given port, or on a free one (retried: another process may grab it)."""
        if self._process is not None:
            raise BrokerError(f"the broker is already running (pid {self._process.pid})")
        attempts = 1 if self._port is not None else 3
        for attempt in range(attempts):
            port = self._port if self._port is not None else free_port()
            try:
                self._launch(port)
            except BrokerError:
                if attempt == attempts - 1:
                    raise
                continue
            self._port = port
            return

    def stop(self) -> None:
        """SIGTERM by PID, wait for the exit, SIGKILL if it does not come."""
        process, self._process = self._process, None
        terminate(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop, then start again on the same port; clients see the connection drop."""
        port = self.port
        self.stop()
        self._port = port
        self._launch(port)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, port: int) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "mosquitto.conf"
        # Log to stderr, which we redirect: run as root, mosquitto switches to its own user and
        # could not open a log file in a private temporary directory.
        # With persistence, sessions and queued QoS 1 messages survive a restart (saved on
        # SIGTERM); `user root` keeps a root-started broker able to write in our directory.
        persistence = (
            f"persistence true\npersistence_location {self._workdir}/\nuser root\n"
            if self._persistence
            else "persistence false\n"
        )
        config.write_text(
            f"listener {port} {self.host}\n"
            "allow_anonymous true\n"
            f"{persistence}"
            "log_dest stderr\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
            f"{self._extra}"
        )
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self._process = process = subprocess.Popen(
            [self._executable, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        # Ready means: still alive, has logged "running" (so the listener is bound by this
        # process, not by whoever else may hold the port), and the port accepts a connection.
        try:
            wait_until(
                lambda: (
                    process.poll() is not None
                    or (" running" in self._run_log() and port_accepts(self.host, port))
                ),
                self._start_timeout,
                f"mosquitto on {self.host}:{port}",
            )
        except AssertionError:
            self.stop()
            raise BrokerError(
                f"mosquitto did not accept connections on {self.host}:{port} in time"
            ) from None
        if process.poll() is not None:
            code = process.returncode
            self.stop()
            raise BrokerError(
                f"mosquitto exited with code {code} on port {port}: {self._last_log_line()}"
            )

    def _run_log(self) -> str:
        try:
            return self.log_path.read_bytes()[self._log_start :].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _last_log_line(self) -> str:
        lines = self._run_log().strip().splitlines()
        return lines[-1] if lines else "(no log output)"
