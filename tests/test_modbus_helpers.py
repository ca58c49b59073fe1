"""Support for the Modbus tests (a socat pty pair, mbpoll, a gateway state with sample sensors,
expected register values), and the tests of that support itself.

The expected register words are computed here independently of `gateway.modbus.encoding`, so a
wrong encoder cannot agree with itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.process import terminate
from helpers.wait import TextFile, wait_until

from gateway.settings import ModbusRtuSection, ModbusSection, ModbusTcpSection
from gateway.state import GatewayState, Report
from objects.catalog import ModbusKind, Model, Source
from objects.pointmap import ResolvedPoint, SensorSpec, resolve, sensor_points

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 10.0


# -- socat pty pair --------------------------------------------------------------------------


class SocatPair:
    """Two linked ptys, `slave_path` (for the gateway) and `master_path` (for the test master).

    Stopped by PID. `stop()` makes both paths vanish, as a USB adapter being unplugged does;
    `start()` again creates a new pair at the same paths.
    """

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("socat")
        if exe is None:
            raise RuntimeError("socat is not on PATH: run `apt-get install -y socat`")
        self._exe = exe
        self.slave_path = workdir / "gateway-tty"
        self.master_path = workdir / "master-tty"
        self._log = workdir / "socat.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("socat already running")
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self._exe,
                    "-d",
                    "-d",
                    f"pty,raw,echo=0,link={self.slave_path}",
                    f"pty,raw,echo=0,link={self.master_path}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process, log_file = self._process, TextFile(self._log)
        # socat logs "starting data transfer loop" once both ptys exist and are linked.
        try:
            wait_until(
                lambda: (
                    process.poll() is not None
                    or (
                        self.slave_path.exists()
                        and self.master_path.exists()
                        and "starting data transfer loop" in log_file.text()
                    )
                ),
                STARTUP_TIMEOUT_S,
                "socat to create the pty links",
            )
        except AssertionError:
            self.stop()
            raise
        if process.poll() is not None:
            raise RuntimeError(f"socat exited: {log_file.text()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        terminate(process)
        # socat removes its links on a clean exit; make sure, so the path really vanishes.
        for path in (self.slave_path, self.master_path):
            path.unlink(missing_ok=True)


# -- mbpoll ------------------------------------------------------------------------------------


@dataclass
class MbpollResult:
    returncode: int
    output: str
    values: dict[int, int] = field(default_factory=dict)  # address -> value as printed

    @property
    def timed_out(self) -> bool:
        return "timeout" in self.output.lower() or "timed out" in self.output.lower()

    def exception_code(self) -> int | None:
        """The Modbus exception libmodbus reported, from its error message."""
        messages = {
            "illegal function": 1,
            "illegal data address": 2,
            "illegal data value": 3,
            "slave device or server failure": 4,
        }
        low = self.output.lower()
        for text, code in messages.items():
            if text in low:
                return code
        return None


_VALUE_LINE = re.compile(r"^\[(\d+)\]:\s+(-?\d+)", re.MULTILINE)


def parse_mbpoll(output: str) -> dict[int, int]:
    return {int(a): int(v) for a, v in _VALUE_LINE.findall(output)}


async def mbpoll(*args: str, timeout_s: float = 0.5) -> MbpollResult:
    """Run mbpoll once (0-based addresses) and parse the values it printed."""
    exe = shutil.which("mbpoll")
    if exe is None:
        raise RuntimeError("mbpoll is not on PATH: run `apt-get install -y mbpoll`")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-0",
        "-1",
        "-o",
        f"{timeout_s:.2f}",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode(errors="replace")
    return MbpollResult(proc.returncode or 0, text, parse_mbpoll(text))


def mbpoll_tcp(port: int) -> list[str]:
    return ["-m", "tcp", "-p", str(port)]


def mbpoll_rtu(unit: int = 1) -> list[str]:
    return ["-m", "rtu", "-a", str(unit), "-b", "9600", "-P", "none"]


# -- a gateway state with sample sensors -----------------------------------------------------

LOBBY = SensorSpec(id="lobby", name="Lobby", number=1, model=Model.VS121, region_count=4)
MEETING = SensorSpec(
    id="meeting",
    name="Meeting",
    number=3,
    model=Model.VS121_P,
    region_count=2,
    exclude=frozenset({"a_to_a"}),
)
SPECS = (LOBBY, MEETING)
GATEWAY_VALUES = {
    "heartbeat": 42,
    "uptime": 70_000,  # above 65535: both words matter
    "version": 10_203,
    "sensors_configured": 2,
    "sensors_online": 1,
}


class FakeCommands:
    """Records every command; `fail_with` makes the next ones raise."""

    def __init__(self) -> None:
        self.resets: list[str] = []
        self.fail_with: Exception | None = None
        self.called = asyncio.Event()

    async def reset_counts(self, sensor_id: str) -> str:
        self.called.set()
        if self.fail_with is not None:
            raise self.fail_with
        self.resets.append(sensor_id)
        return "totals reset"


def make_state(specs: Sequence[SensorSpec] = SPECS, now: float | None = None) -> GatewayState:
    clock_now = time.time() if now is None else now
    return GatewayState([(s, 600.0, 60.0) for s in specs], clock=lambda: clock_now)


def sensor_report(spec: SensorSpec, salt: int = 0) -> dict[str, float]:
    """A value for every sensor-sourced key of the spec, distinct per key, some beyond 16 bits."""
    data: dict[str, float] = {}
    for i, rp in enumerate(sensor_points(spec)):
        if rp.point.source is not Source.SENSOR or rp.point.modbus is None:
            continue
        if rp.point.modbus.kind is ModbusKind.BIT:
            data[rp.key] = (i + salt) % 2
        elif rp.point.modbus.width == 2:
            data[rp.key] = 65_536 * (3 + salt) + 1000 + i
        else:
            data[rp.key] = 10 * salt + i + 1
    return data


def feed(state: GatewayState, salt: int = 0, received_at: float | None = None) -> None:
    """Apply one full report per sensor and publish the gateway's own values."""
    when = time.time() if received_at is None else received_at
    for spec in SPECS:
        if spec.id in state.sensors:
            state.apply(Report(spec.id, sensor_report(spec, salt), when))
    state.publish_gateway({**GATEWAY_VALUES, "heartbeat": GATEWAY_VALUES["heartbeat"] + salt})


def all_points(specs: Sequence[SensorSpec] = SPECS) -> list[ResolvedPoint]:
    return resolve(list(specs))


def modbus_config(
    *,
    tcp_port: int | None = None,
    rtu_port: str | None = None,
    word_order: str = "high_first",
    unit_id: int = 1,
    missing_port: str = "wait",
    local_echo: bool = False,
    rs485: bool = False,
    tcp_options: Mapping[str, object] | None = None,
    addressing: str = "blocks",
    gateway_unit_id: int = 247,
) -> ModbusSection:
    tcp = ModbusTcpSection.model_validate(
        {"enabled": tcp_port is not None, "host": HOST, "port": tcp_port or 5020}
        | dict(tcp_options or {})
    )
    rtu = ModbusRtuSection.model_validate(
        {
            "enabled": rtu_port is not None,
            "port": rtu_port or "/dev/null",
            "baudrate": 9600,
            "parity": "N",
            "unit_id": unit_id,
            "missing_port": missing_port,
            "local_echo": local_echo,
            "rs485": rs485,
        }
    )
    return ModbusSection.model_validate(
        {
            "word_order": word_order,
            "tcp": tcp,
            "rtu": rtu,
            "addressing": addressing,
            "gateway_unit_id": gateway_unit_id,
        }
    )


# -- expected register contents, computed independently -------------------------------------


def expected_words(value: float, width: int, scale: int, signed: bool, order: str) -> list[int]:
    raw = round(value * scale)
    bits = 16 * width
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    raw = min(max(raw, low), high) % (2**bits)
    if width == 1:
        return [raw]
    hi_word, lo_word = divmod(raw, 65536)
    return [hi_word, lo_word] if order == "high_first" else [lo_word, hi_word]


def expected_image(
    state: GatewayState, points: Sequence[ResolvedPoint], order: str
) -> tuple[dict[int, int], dict[str, dict[int, int]]]:
    """(register address -> word, bit table -> address -> bit) for every mapped point."""
    registers: dict[int, int] = {}
    bits: dict[str, dict[int, int]] = {"coil": {}, "discrete": {}}
    for rp in points:
        spec = rp.point.modbus
        if spec is None or rp.modbus_address is None:
            continue
        values: Mapping[str, float] = (
            state.gateway_values if rp.sensor_id == "" else state.current(rp.sensor_id)
        )
        value = values.get(rp.key, 0)
        if spec.kind is ModbusKind.BIT:
            table = "coil" if rp.writable else "discrete"
            bits[table][rp.modbus_address] = 1 if value else 0
            continue
        words = expected_words(value, spec.width, spec.scale, spec.signed, order)
        for i, word in enumerate(words):
            registers[rp.modbus_address + i] = word
    return registers, bits


# -- tests of the support ----------------------------------------------------------------------


def test_socat_pair_relays_both_ways_and_vanishes_on_stop(tmp_path: Path) -> None:
    pair = SocatPair(tmp_path)
    pair.start()
    try:
        a = os.open(pair.slave_path, os.O_RDWR | os.O_NOCTTY)
        b = os.open(pair.master_path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(a, b"\x01\x02")
            assert os.read(b, 10) == b"\x01\x02"
            os.write(b, b"\x03")
            assert os.read(a, 10) == b"\x03"
        finally:
            os.close(a)
            os.close(b)
    finally:
        pair.stop()
    assert not pair.slave_path.exists()
    assert not pair.master_path.exists()


def test_parse_mbpoll_reads_signed_and_unsigned_lines() -> None:
    text = "-- Polling slave 1...\n[200]: \t1\n[216]: \t34464 (-31072)\n[5]: \t-3\n"
    assert parse_mbpoll(text) == {200: 1, 216: 34464, 5: -3}


@pytest.mark.parametrize(
    ("value", "width", "signed", "order", "words"),
    [
        (70_000, 2, False, "high_first", [1, 4464]),
        (70_000, 2, False, "low_first", [4464, 1]),
        (-1, 1, True, "high_first", [0xFFFF]),
        (-5, 1, False, "high_first", [0]),
        (2**40, 2, False, "high_first", [0xFFFF, 0xFFFF]),
    ],
)
def test_expected_words(value: int, width: int, signed: bool, order: str, words: list[int]) -> None:
    assert expected_words(value, width, 1, signed, order) == words
