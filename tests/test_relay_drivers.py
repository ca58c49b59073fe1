"""The output drivers against real counterparts where there are any here.

- The Modbus relay-module driver talks to pymodbus's RTU slave across a socat pty pair (and to
  its TCP server), an implementation independent of ours.
- GPIO has no hardware here: the driver runs against a fake `gpiod` module whose line request
  records what the real one would be asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from helpers.broker import free_port
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from test_modbus_helpers import SocatPair

from gateway.modbus.master import CoilMaster, ModbusMasterError
from gateway.relay.drivers import GpioDriver, Masters, ModbusCoilDriver, OutputError
from gateway.relay.output import OutputWorker
from gateway.settings import GpioOutput, ModbusCoilOutput

pytestmark = pytest.mark.asyncio

UNIT = 3
COILS = 16
WITHIN_S = 5.0  # deadline of every wait on observable state


class RelayModule:
    """A Modbus relay module: pymodbus's slave with 16 coils, recording every coil write."""

    def __init__(self, unit: int = UNIT) -> None:
        self.writes: list[tuple[int, bool]] = []
        self.wrote = asyncio.Event()

        async def action(
            function: int,
            _start: int,
            address: int,
            _count: int,
            _registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> None:
            if function == 5 and values is not None:
                self.writes.append((address, bool(values[0])))
                self.wrote.set()

        bits = [SimData(0, count=COILS, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        self.device = SimDevice(
            id=unit, simdata=(bits, list(bits), regs, list(regs)), action=action
        )
        self.server: ModbusSerialServer | ModbusTcpServer | None = None
        self.unit = unit

    async def serve_rtu(self, port: Path) -> None:
        self.server = ModbusSerialServer(self.device, port=str(port), baudrate=9600)
        await self.server.serve_forever(background=True)

    async def serve_tcp(self, port: int) -> None:
        self.server = ModbusTcpServer(self.device, address=("127.0.0.1", port))
        await self.server.serve_forever(background=True)

    async def coil(self, address: int) -> bool:
        assert self.server is not None
        values = await self.server.context.async_getValues(self.unit, 1, address, 1)
        assert isinstance(values, list), values
        return bool(values[0])

    async def power_cycle(self) -> None:
        """The module lost power: every coil back to off."""
        assert self.server is not None
        await self.server.context.async_setValues(self.unit, 15, 0, [False] * COILS)

    async def next_write(self) -> tuple[int, bool]:
        async with asyncio.timeout(WITHIN_S):
            while not self.writes:
                self.wrote.clear()
                await self.wrote.wait()
        return self.writes.pop(0)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]  # untyped in pymodbus


@pytest_asyncio.fixture
async def rtu(tmp_path: Path) -> AsyncIterator[tuple[RelayModule, SocatPair]]:
    pair = SocatPair(tmp_path)
    pair.start()
    module = RelayModule()
    await module.serve_rtu(pair.master_path)
    yield module, pair
    await module.stop()
    pair.stop()


def coil_output(port: Path, **kw: Any) -> ModbusCoilOutput:
    return ModbusCoilOutput.model_validate(
        {"type": "modbus", "port": str(port), "unit_id": UNIT, "coil": 5, "timeout": 0.5} | kw
    )


# -- Modbus RTU --------------------------------------------------------------------------------


async def test_rtu_driver_switches_a_coil_of_a_pymodbus_slave(
    rtu: tuple[RelayModule, SocatPair],
) -> None:
    module, pair = rtu
    masters = Masters()
    driver = ModbusCoilDriver(
        coil_output(pair.slave_path), masters.get(coil_output(pair.slave_path))
    )
    try:
        await driver.set(True)
        assert await module.coil(5) is True
        await driver.set(False)
        assert await module.coil(5) is False
        master = masters.get(coil_output(pair.slave_path))
        await master.write_coil(UNIT, 7, True)
        assert await master.read_coils(UNIT, 0, 10) == [False] * 7 + [True, False, False]
    finally:
        await masters.close()
    assert module.writes == [(5, True), (5, False), (7, True)]


async def test_rtu_exception_and_silence_are_errors(rtu: tuple[RelayModule, SocatPair]) -> None:
    module, pair = rtu
    master = CoilMaster.rtu(str(pair.slave_path), timeout=0.3)
    try:
        with pytest.raises(ModbusMasterError, match="exception 02"):
            await master.write_coil(UNIT, 40, True)  # no such coil
        await module.stop()  # the module goes silent
        with pytest.raises(ModbusMasterError, match="no reply"):
            await master.write_coil(UNIT, 5, True)
    finally:
        await master.close()


async def test_rtu_port_that_does_not_exist(tmp_path: Path) -> None:
    master = CoilMaster.rtu(str(tmp_path / "ttyNOPE"))
    with pytest.raises(ModbusMasterError, match="cannot open"):
        await master.write_coil(1, 0, True)


async def test_worker_reasserts_after_the_module_power_cycles(
    rtu: tuple[RelayModule, SocatPair],
) -> None:
    module, pair = rtu
    cfg = coil_output(pair.slave_path, reassert_seconds=0.2)
    masters = Masters()
    worker = OutputWorker("crowd", ModbusCoilDriver(cfg, masters.get(cfg)))
    worker.start()
    try:
        worker.want(True)
        assert await module.next_write() == (5, True)
        await module.power_cycle()
        assert await module.coil(5) is False
        assert await module.next_write() == (5, True)  # written again, unasked
        assert await module.coil(5) is True
    finally:
        await worker.stop(final=False)
        await masters.close()
    assert await module.coil(5) is False  # the shutdown level


async def test_worker_retries_a_missing_module_until_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pair = SocatPair(tmp_path)
    pair.start()
    module = RelayModule()
    cfg = coil_output(pair.slave_path, timeout=0.2, retries=1, retry_seconds=0.1)
    masters = Masters()
    failures = 0
    failed_twice = asyncio.Event()

    def attempt(ok: bool) -> None:
        nonlocal failures
        failures += not ok
        if failures >= 2:
            failed_twice.set()

    worker = OutputWorker(
        "crowd",
        ModbusCoilDriver(cfg, masters.get(cfg)),
        retry_after=cfg.retry_seconds,
        on_attempt=attempt,
    )
    try:
        with caplog.at_level(logging.DEBUG, logger="gateway.relay"):
            worker.start()
            worker.want(True)
            async with asyncio.timeout(WITHIN_S):
                await failed_twice.wait()
            assert worker.fault
            await module.serve_rtu(pair.master_path)
            assert await worker.settled(WITHIN_S)
        assert await module.coil(5) is True
        assert not worker.fault
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "cannot drive" in errors[0].getMessage()
    finally:
        await worker.stop(final=None)
        await masters.close()
        await module.stop()
        pair.stop()


# -- Modbus TCP ----------------------------------------------------------------------------------


async def test_tcp_driver_switches_a_coil_and_reconnects() -> None:
    port = free_port()
    module = RelayModule(unit=1)
    await module.serve_tcp(port)
    cfg = ModbusCoilOutput(type="modbus", transport="tcp", tcp_port=port, coil=2)
    masters = Masters()
    driver = ModbusCoilDriver(cfg, masters.get(cfg))
    try:
        await driver.set(True)
        assert await module.coil(2) is True
        await module.stop()
        with pytest.raises(OutputError):
            await driver.set(False)
        module = RelayModule(unit=1)
        await module.serve_tcp(port)
        await driver.set(False)  # a new connection
        assert await module.coil(2) is False
        assert module.writes == [(2, False)]
    finally:
        await masters.close()
        await module.stop()


async def test_tcp_master_refused_connection() -> None:
    master = CoilMaster.tcp("127.0.0.1", free_port(), timeout=0.5)
    with pytest.raises(ModbusMasterError, match="cannot connect"):
        await master.write_coil(1, 0, True)
    await master.close()


# -- GPIO ------------------------------------------------------------------------------------------


class Value(Enum):
    INACTIVE = 0
    ACTIVE = 1


class Direction(Enum):
    OUTPUT = 3


@dataclass
class FakeLineRequest:
    """Stands in for gpiod.LineRequest: records values, can fail like a vanished chip."""

    chip: str
    config: dict[int, Any]
    values: list[tuple[int, Value]] = field(default_factory=list)
    released: bool = False
    fail: bool = False

    def set_value(self, line: int, value: Value) -> None:
        if self.fail:
            raise OSError(19, "No such device")
        self.values.append((line, value))

    def release(self) -> None:
        self.released = True


class FakeGpiod:
    """The part of the gpiod v2 module the driver uses."""

    line = SimpleNamespace(Value=Value, Direction=Direction)

    def __init__(self) -> None:
        self.requests: list[FakeLineRequest] = []
        self.missing = False

    @staticmethod
    def LineSettings(**kw: Any) -> dict[str, Any]:
        return kw

    def request_lines(self, path: str, *, consumer: str, config: dict[int, Any]) -> FakeLineRequest:
        if self.missing:
            raise FileNotFoundError(2, "No such file or directory", path)
        assert consumer == "vs121-gateway"
        request = FakeLineRequest(path, config)
        self.requests.append(request)
        return request


async def test_gpio_line_is_requested_once_and_kept() -> None:
    gpiod = FakeGpiod()
    cfg = GpioOutput(type="gpio", chip="/dev/gpiochip1", line=17, active_low=True)
    driver = GpioDriver(cfg, gpiod=gpiod)
    await driver.set(True)
    await driver.set(False)
    await driver.set(True)
    assert len(gpiod.requests) == 1
    request = gpiod.requests[0]
    assert request.chip == "/dev/gpiochip1"
    # Requested as an output already at the wanted level, active-low handled by the kernel.
    assert request.config == {
        17: {"direction": Direction.OUTPUT, "active_low": True, "output_value": Value.ACTIVE}
    }
    assert request.values == [(17, Value.INACTIVE), (17, Value.ACTIVE)]
    await driver.close()
    assert request.released


async def test_gpio_failure_releases_and_requests_again() -> None:
    gpiod = FakeGpiod()
    driver = GpioDriver(GpioOutput(type="gpio", line=4), gpiod=gpiod)
    await driver.set(True)
    gpiod.requests[0].fail = True
    with pytest.raises(OutputError, match="No such device"):
        await driver.set(False)
    assert gpiod.requests[0].released
    gpiod.missing = True
    with pytest.raises(OutputError, match="No such file"):
        await driver.set(False)
    gpiod.missing = False
    await driver.set(False)
    assert len(gpiod.requests) == 2
    assert gpiod.requests[1].config[4]["output_value"] is Value.INACTIVE


async def test_gpio_without_the_gpiod_package_is_an_output_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    real = importlib.import_module

    def no_gpiod(name: str, package: str | None = None) -> Any:
        if name == "gpiod":
            raise ModuleNotFoundError("No module named 'gpiod'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_gpiod)
    driver = GpioDriver(GpioOutput(type="gpio", line=4))
    with pytest.raises(OutputError, match=r"vs121-gateway\[gpio\]"):
        await driver.set(True)


# -- the worker ------------------------------------------------------------------------------------


class Flaky:
    """A driver with a bug: raises something that is not an OutputError, once."""

    description = "flaky output"
    reassert_after: float | None = None

    def __init__(self) -> None:
        self.levels: list[bool] = []
        self.broken = True

    async def set(self, energised: bool) -> None:
        if self.broken:
            self.broken = False
            raise RuntimeError("driver bug")
        self.levels.append(energised)

    async def close(self) -> None:
        return None


async def test_worker_survives_any_driver_exception() -> None:
    driver = Flaky()
    faults: list[bool] = []
    worker = OutputWorker("crowd", driver, retry_after=0.05, on_fault=faults.append)
    worker.start()
    try:
        worker.want(True)
        assert await worker.settled(WITHIN_S)
        assert driver.levels == [True]
        assert faults == [True, False]
    finally:
        await worker.stop(final=None)
