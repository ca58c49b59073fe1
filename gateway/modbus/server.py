"""`ModbusServer`: the register image plus its TCP server and RTU slave, as one component."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.access import AllowList
from gateway.commands import Commands
from gateway.modbus.image import RegisterImage
from gateway.modbus.pdu import DeviceIdentity, RequestHandler
from gateway.modbus.pdu_codes import Outcome
from gateway.modbus.rtu import RtuSlave
from gateway.modbus.tcp import TcpServer
from gateway.modbus.units import (
    Router,
    UnitRouter,
    WindowRouter,
    image_size,
    plan,
    warn_left_out,
)
from gateway.modbus.writes import WriteExecutor
from gateway.settings import ModbusSection
from gateway.state import GatewayState
from objects.pointmap import ResolvedPoint

log = logging.getLogger("gateway.modbus")

RequestCallback = Callable[[str, str], None]  # (transport "tcp"|"rtu", outcome)

DEFAULT_IDENTITY = DeviceIdentity(
    vendor="vs121-gateway", product="VS121 gateway", revision=__version__
)


class ModbusServer:
    """Serves the points over Modbus TCP and/or RTU from one register image.

    The image follows the state from construction on (initial values, then every Change), so it
    is complete before the first request. Writes become `commands` calls. `on_request(transport,
    outcome)` is called once per request (see `Outcome` for the values).
    """

    def __init__(
        self,
        cfg: ModbusSection,
        points: Sequence[ResolvedPoint],
        state: GatewayState,
        commands: Commands,
        *,
        on_request: RequestCallback | None = None,
        identity: DeviceIdentity = DEFAULT_IDENTITY,
        reopen_backoff: tuple[float, float] = (0.5, 10.0),
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        served = plan(cfg, points)
        self._left_out = served.left_out
        self._cfg = cfg
        self._image = RegisterImage(
            served.points, word_order=cfg.word_order, size=image_size(cfg, served.units)
        )
        for sensor_id in state.ids():
            self._image.load(sensor_id, state.current(sensor_id))
        self._image.load("", state.gateway_values)
        state.subscribe(self._image.apply)
        handler = RequestHandler(self._image, WriteExecutor(self._image, commands), identity)
        router: Router | None = None
        if cfg.addressing == "unit_blocks" and served.units is not None:
            router = WindowRouter.over(self._image, served.units, commands, identity)
        elif served.units is not None:
            router = UnitRouter(handler, served.units)

        self._on_request = on_request
        self._callback_failed = False

        def counter(transport: str) -> Callable[[Outcome], None]:
            return lambda outcome: self._count(transport, outcome)

        self._tcp = (
            TcpServer(
                cfg.tcp.host,
                cfg.tcp.port,
                handler,
                counter("tcp"),
                max_connections=cfg.tcp.max_connections,
                idle_timeout=cfg.tcp.idle_timeout_s,
                keepalive=(
                    cfg.tcp.keepalive_idle_s,
                    cfg.tcp.keepalive_interval_s,
                    cfg.tcp.keepalive_count,
                ),
                router=router,
            )
            if cfg.tcp.enabled
            else None
        )
        if self._tcp is not None and cfg.tcp.allow_from:
            self._tcp.allow = AllowList(
                cfg.tcp.allow_from, what="Modbus TCP", on_refused=on_refused
            )
        self._rtu = (
            RtuSlave(cfg.rtu, handler, counter("rtu"), reopen_backoff=reopen_backoff, router=router)
            if cfg.rtu.enabled
            else None
        )

    def _count(self, transport: str, outcome: Outcome) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(transport, outcome.value)
        except Exception:
            # A metrics problem must not break serving, nor flood the log once per request.
            if not self._callback_failed:
                log.exception("Modbus on_request callback failed (logged once)")
                self._callback_failed = True

    @property
    def tcp_port(self) -> int | None:
        """The port the TCP server listens on, None when it does not run."""
        return self._tcp.port if self._tcp is not None else None

    @property
    def tcp_connections(self) -> int:
        """Modbus TCP connections open right now."""
        return self._tcp.open_connections if self._tcp is not None else 0

    @property
    def left_out(self) -> list[tuple[str, int]]:
        """(sensor id, number) of the sensors the addressing mode cannot reach (BACnet-only)."""
        return list(self._left_out)

    @property
    def rtu_port_open(self) -> bool:
        """Whether the RTU slave has its serial port open right now."""
        return self._rtu is not None and self._rtu.is_open

    async def start(self) -> None:
        """Start listening; raises SerialPortError if the RTU port is missing and
        missing_port = "fail", OSError if the TCP port cannot be bound."""
        warn_left_out(self._cfg, self._left_out)
        if self._tcp is not None:
            await self._tcp.start()
        if self._rtu is not None:
            try:
                await self._rtu.start()
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        if self._rtu is not None:
            await self._rtu.stop()
        if self._tcp is not None:
            await self._tcp.stop()
