"""Output drivers: what switches the relay of an alarm rule.

Each driver takes one level, "energised" (GPIO line active, module coil ON) or not; which
contact state that gives is decided in `gateway.relay.logic`. Drivers raise OutputError on
failure and never block the event loop: GPIO ioctls run in a worker thread (a line on an I2C or
SPI expander sleeps in the kernel), the Modbus master (pymodbus's client, through
`gateway.modbus.master`) is asynchronous.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.modbus.master import CoilMaster, ModbusMasterError
from gateway.settings import GpioOutput, ModbusCoilOutput, NoOutput

log = logging.getLogger("gateway.relay")

CONSUMER = "vs121-gateway"


class OutputError(GatewayError):
    """An output could not be driven (no answer, an exception response, a missing device)."""


class OutputDriver(Protocol):
    description: str
    # Write the same level again this often (seconds), for outputs that may forget it.
    reassert_after: float | None

    async def set(self, energised: bool) -> None: ...

    async def close(self) -> None: ...


class NullDriver:
    """`type = "none"`: the alarm's points change, nothing is switched."""

    description = "no output"
    reassert_after: float | None = None

    async def set(self, energised: bool) -> None:
        return None

    async def close(self) -> None:
        return None


class GpioDriver:
    """A GPIO line through libgpiod's v2 Python bindings (the `gpiod` package).

    The line is requested on first use, with the wanted level as its initial output value (no
    glitch through the other level), and the request is kept: the line stays ours and each
    change is one ioctl on an open descriptor. After an error the request is released and made
    again on the next attempt. `gpiod` is imported only here, so the gateway runs without it.
    """

    reassert_after: float | None = None

    def __init__(self, cfg: GpioOutput, *, gpiod: Any = None) -> None:
        self._cfg = cfg
        self._gpiod = gpiod
        self._request: Any = None
        self.description = f"GPIO {cfg.chip} line {cfg.line}" + (
            " (active low)" if cfg.active_low else ""
        )

    def _module(self) -> Any:
        if self._gpiod is None:
            try:
                self._gpiod = importlib.import_module("gpiod")
            except ImportError as exc:
                raise OutputError(
                    f"{self.description}: the gpiod package is not installed "
                    "(pip install 'vs121-gateway[gpio]')"
                ) from exc
        return self._gpiod

    def _value(self, gpiod: Any, energised: bool) -> Any:
        return gpiod.line.Value.ACTIVE if energised else gpiod.line.Value.INACTIVE

    def _set_blocking(self, energised: bool) -> None:
        gpiod = self._module()
        value = self._value(gpiod, energised)
        try:
            if self._request is None:
                settings = gpiod.LineSettings(
                    direction=gpiod.line.Direction.OUTPUT,
                    active_low=self._cfg.active_low,
                    output_value=value,
                )
                self._request = gpiod.request_lines(
                    self._cfg.chip, consumer=CONSUMER, config={self._cfg.line: settings}
                )
            else:
                self._request.set_value(self._cfg.line, value)
        except Exception as exc:  # OSError mostly; gpiod has exceptions of its own too
            self._release_blocking()
            raise OutputError(f"{self.description}: {exc}") from exc

    def _release_blocking(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            try:
                request.release()
            except Exception as exc:  # already gone with its chip: nothing to give back
                log.debug("%s: release failed: %s", self.description, exc)

    async def set(self, energised: bool) -> None:
        await asyncio.to_thread(self._set_blocking, energised)

    async def close(self) -> None:
        # Released lines usually keep their last level, but the kernel does not promise it.
        await asyncio.to_thread(self._release_blocking)


class ModbusCoilDriver:
    """One coil of a Modbus relay module, written with function 05 and retried at once."""

    def __init__(self, cfg: ModbusCoilOutput, master: CoilMaster) -> None:
        self._cfg = cfg
        self._master = master
        self.description = f"{master.description} unit {cfg.unit_id} coil {cfg.coil}"
        self.reassert_after = cfg.reassert_seconds or None

    async def set(self, energised: bool) -> None:
        last: OutputError | None = None
        for _ in range(self._cfg.retries + 1):
            try:
                await self._master.write_coil(self._cfg.unit_id, self._cfg.coil, energised)
                return
            except ModbusMasterError as exc:
                last = OutputError(str(exc))
        assert last is not None
        raise last

    async def close(self) -> None:
        return None  # the master is shared by the rules on its line: closed by its owner


class Masters:
    """One Modbus master per line (serial port or host:port), shared by the rules on it."""

    def __init__(self) -> None:
        self._masters: dict[tuple[str, ...], CoilMaster] = {}

    def get(self, cfg: ModbusCoilOutput) -> CoilMaster:
        key = cfg.bus()
        master = self._masters.get(key)
        if master is None:
            if cfg.transport == "tcp":
                master = CoilMaster.tcp(cfg.host, cfg.tcp_port, timeout=cfg.timeout)
            else:
                master = CoilMaster.rtu(
                    cfg.port,
                    baudrate=cfg.baudrate,
                    parity=cfg.parity,
                    bytesize=cfg.bytesize,
                    stopbits=cfg.stopbits,
                    timeout=cfg.timeout,
                )
            self._masters[key] = master
        return master

    async def close(self) -> None:
        for master in self._masters.values():
            await master.close()
        self._masters.clear()


DriverFactory = Callable[[NoOutput | GpioOutput | ModbusCoilOutput], OutputDriver]


def driver_factory(masters: Masters) -> DriverFactory:
    """The drivers for the configured outputs, Modbus ones sharing `masters`."""

    def build(cfg: NoOutput | GpioOutput | ModbusCoilOutput) -> OutputDriver:
        if isinstance(cfg, GpioOutput):
            return GpioDriver(cfg)
        if isinstance(cfg, ModbusCoilOutput):
            return ModbusCoilDriver(cfg, masters.get(cfg))
        return NullDriver()

    return build
