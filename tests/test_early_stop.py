"""A stop signal at any moment of start-up runs the shutdown sequence (real subprocesses).

The moment is taken from the process itself: /proc/<pid>/status shows when SIGTERM becomes a
caught signal (the gateway catches it before its slow imports), and the log shows when the
event loop has started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.daemon import gateway_config, new_http_port
from helpers.wait import TextFile, wait_until


def catches(pid: int, signum: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    port = new_http_port()
    config = tmp_path / "gw.toml"
    config.write_text(gateway_config(tmp_path / "state", mqtt_port=None, http_port=port))
    log = tmp_path / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VS121GW_")}
    env.pop("NOTIFY_SOCKET", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_sigterm_while_loading_runs_the_shutdown(
    gateway_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, log = gateway_process
    wait_until(
        lambda: process.poll() is not None or catches(process.pid, signal.SIGTERM),
        30,
        "the SIGTERM handler",
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0  # not -15: the process did not die by the signal
    text = log.read_text()
    assert "SIGTERM received while starting: shutting down" in text
    assert "vs121-gateway stopped; state saved" in text
    assert "vs121-gateway ready" not in text
    assert "Traceback" not in text


def test_sigterm_one_second_into_start_up(
    gateway_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    # The reported case: systemd stops the unit a second after starting it, while the gateway
    # still loads its libraries (the second is the scenario; the process must not end in it).
    process, log = gateway_process
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(1.0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert "vs121-gateway stopped; state saved" in log.read_text()


def test_sigterm_once_the_loop_runs_runs_the_shutdown(
    gateway_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, log = gateway_process
    output = TextFile(log)
    wait_until(lambda: process.poll() is not None or "starting:" in output.text(), 30, "the loop")
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    text = log.read_text()
    assert "vs121-gateway stopped; state saved" in text
    assert "Traceback" not in text


def test_other_commands_still_end_on_sigterm(tmp_path: Path) -> None:
    # `decode` reading standard input is not the daemon: the signal ends it as usual.
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "decode"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdin is not None
        process.stdin.write(b"04c903\n")
        process.stdin.flush()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
