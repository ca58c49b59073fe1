"""The Modbus RTU slave: one serial port, supervised, answering only its own unit id(s).

Why our own slave (and TCP server, `tcp`) and not pymodbus's servers. Verified on pymodbus 3.16.1
(paths under site-packages/pymodbus); tests/test_pymodbus_defects.py runs pymodbus's own server
and expects each defect, so an upgrade that fixes one fails there and asks for a new look:

- Other unit ids on a shared RS485 line get exception 04, not silence, even with
  ignore_missing_devices: `simulator/simcore.py:36` raises KeyError for an unknown id, which
  `server/requesthandler.py:106-114` answers (the flag covers only NoSuchIdException, 96-105).
- Broadcasts (unit 0) take the same path unless broadcast_enable (`requesthandler.py:86-91`),
  and another slave's exception response is decoded as a request and answered.
- A request that arrives in the same read as another slave's reply is lost: the RTU framer
  reports the whole buffer as used after the first frame (`framer/rtu.py:100`).
- A late answer carries the next request's ids: `server/requesthandler.py:115-116` copies them
  from `self.last_pdu`, which the next request overwrote (`transaction/transaction.py:273`).
- Pipelined TCP requests wait forever: one frame is decoded per data_received
  (`transport/transport.py:313-314`).
- A serial port that vanished is never reopened (`transport/transport.py:261-276`).

Its clients are sound, and the relay-module master uses them (`gateway.modbus.master`). The
framing (`rtu_framing`) and protocol logic (`pdu`) here are small and are tested against two
independent masters (pymodbus's client and libmodbus's mbpoll).

Line etiquette: a response waits until the line has been quiet for 3.5 character times after the
request (configurable), and is dropped if anything else was heard meanwhile: the master has moved
on, and talking now could collide with another device. Broadcasts (unit 0) are neither executed
nor answered: a write meant for other devices must not reset our counters. The scanner follows
the bus, so nothing inside another slave's reply is ever taken for a request (`rtu_framing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import serial

from gateway.commands import REQUESTER
from gateway.modbus.pdu import RequestHandler
from gateway.modbus.pdu_codes import Outcome
from gateway.modbus.rtu_framing import Frame, FrameScanner, with_crc
from gateway.modbus.serial_port import SerialPortError, frame_gap, hung_up, open_port
from gateway.modbus.units import Router
from gateway.settings import ModbusRtuSection

log = logging.getLogger("gateway.modbus")

# Unparsed bytes are dropped as noise after this much silence. Longer than a USB adapter's
# delivery bursts (FTDI's latency timer is 16 ms), so a frame arriving in pieces is not cut.
NOISE_TIMEOUT_S = 0.05
READ_CHUNK = 4096


class RtuSlave:
    """Keeps the port open (reopening with backoff after it vanished) and serves it."""

    def __init__(
        self,
        cfg: ModbusRtuSection,
        handler: RequestHandler,
        on_outcome: Callable[[Outcome], None],
        *,
        reopen_backoff: tuple[float, float] = (0.5, 10.0),
        router: Router | None = None,
    ) -> None:
        self._cfg = cfg
        self._router = router
        self._handler = handler
        self._on_outcome = on_outcome
        self._backoff = reopen_backoff
        self._task: asyncio.Task[None] | None = None
        self._unserved: serial.Serial | None = None  # opened by start(), not yet served
        self._link: _Link | None = None

    @property
    def is_open(self) -> bool:
        return self._link is not None

    async def start(self) -> None:
        """Open the port and serve it; a missing port raises SerialPortError or is waited for."""
        port: serial.Serial | None = None
        warned: str | None = None
        try:
            port = open_port(self._cfg)
        except SerialPortError as exc:
            if self._cfg.missing_port == "fail":
                raise
            log.warning("Modbus RTU: %s; waiting for the port to appear", exc)
            warned = str(exc)
        self._unserved = port
        self._task = asyncio.create_task(self._supervise(warned), name="modbus-rtu")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        port, self._unserved = self._unserved, None
        if port is not None:  # stopped before the supervisor took the port over
            port.close()

    async def _supervise(self, warned: str | None) -> None:
        low, high = self._backoff
        delay = low
        port, self._unserved = self._unserved, None
        while True:
            if port is None:
                try:
                    port = open_port(self._cfg)
                except SerialPortError as exc:
                    # The loss (or the missing port) was logged once; a port that is merely
                    # absent stays quiet. Any other reason (permissions, a device that is no
                    # serial port) is worth a warning, once per distinct reason.
                    if exc.missing or str(exc) == warned:
                        log.debug("Modbus RTU: %s", exc)
                    else:
                        log.warning("Modbus RTU: %s; retrying until it works", exc)
                        warned = str(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, high)
                    continue
            cfg = self._cfg
            units = (
                str(cfg.unit_id) if self._router is None else _ranges(sorted(self._router.unit_ids))
            )
            log.info(
                "Modbus RTU: serving unit id %s on %s (%d baud, %d%s%d)",
                units,
                cfg.port,
                cfg.baudrate,
                cfg.bytesize,
                cfg.parity,
                cfg.stopbits,
            )
            delay, warned = low, None
            link = _Link(port, cfg, self._handler, self._on_outcome, self._router)
            self._link = link
            try:
                reason = await link.serve()
            finally:
                self._link = None
                link.close()
            port = None
            log.warning(
                "Modbus RTU: serial port %s lost (%s); reopening when it returns", cfg.port, reason
            )


class _Link:
    """One open port: reads, cuts frames, answers our unit id, detects the port vanishing."""

    def __init__(
        self,
        port: serial.Serial,
        cfg: ModbusRtuSection,
        handler: RequestHandler,
        on_outcome: Callable[[Outcome], None],
        router: Router | None = None,
    ) -> None:
        self._port = port
        self._fd = port.fileno()
        self._unit = cfg.unit_id
        self._router = router
        ours = (lambda unit: unit == cfg.unit_id) if router is None else router.serves
        self._echo = cfg.local_echo
        self._handler = handler
        self._on_outcome = on_outcome
        self._loop = asyncio.get_running_loop()
        gap = frame_gap(cfg.baudrate)
        self._delay = gap if cfg.response_delay_ms is None else cfg.response_delay_ms / 1000
        self._scanner = FrameScanner(ours)
        self._frames: asyncio.Queue[tuple[Frame, int]] = asyncio.Queue()
        self._lost: asyncio.Future[str] = self._loop.create_future()
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._received = 0  # bytes heard so far: tells whether the line stayed quiet
        self._last_heard = self._loop.time()

    async def serve(self) -> str:
        """Serve until the port is lost; returns why."""
        self._loop.add_reader(self._fd, self._on_readable)
        worker = self._loop.create_task(self._work())
        try:
            return await self._lost
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
        with contextlib.suppress(OSError, serial.SerialException):
            self._port.close()

    def _fail(self, reason: str) -> None:
        self._loop.remove_reader(self._fd)  # a dead descriptor stays readable: stop spinning
        self._loop.remove_writer(self._fd)
        if not self._lost.done():
            self._lost.set_result(reason)

    # -- receiving ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc.strerror or repr(exc))
            return
        if not data:
            if hung_up(self._fd):
                self._fail("hang-up")
            return
        self._received += len(data)
        self._last_heard = self._loop.time()
        self._scanner.feed(data)
        for frame in self._scanner.frames():
            self._frames.put_nowait((frame, self._received))
        self._count_noise()
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        if self._scanner.pending:
            self._quiet_timer = self._loop.call_later(NOISE_TIMEOUT_S, self._on_quiet)

    def _on_quiet(self) -> None:
        self._quiet_timer = None
        frame = self._scanner.silence()
        if frame is not None:
            self._frames.put_nowait((frame, self._received))
        self._count_noise()

    def _count_noise(self) -> None:
        for _ in range(self._scanner.take_discarded()):
            self._on_outcome(Outcome.BAD_FRAME)

    # -- answering ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            frame, heard = await self._frames.get()
            await self._answer(frame, heard)

    async def _answer(self, frame: Frame, heard: int) -> None:
        if not frame.request:
            return  # another slave's response (or our own echo): nothing to do
        REQUESTER.set(f"modbus-rtu:unit {frame.unit}")
        if self._router is not None:
            routed = self._router.handle(frame.unit, frame.pdu)
            if routed is None:
                self._on_outcome(Outcome.NOT_ADDRESSED)  # other units and broadcasts: silence
                return
            reply = routed
        elif frame.unit != self._unit:
            self._on_outcome(Outcome.NOT_ADDRESSED)
            return
        else:
            reply = self._handler.handle(frame.pdu)
        pdu, outcome = reply if isinstance(reply, tuple) else await reply
        self._on_outcome(outcome)
        wait = self._last_heard + self._delay - self._loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._received != heard:
            log.debug("Modbus RTU: line busy again before our response; response dropped")
            return
        self._send(with_crc(bytes((frame.unit,)) + pdu))

    def _send(self, adu: bytes) -> None:
        if self._echo:
            self._scanner.expect_echo(adu)
        try:
            written = os.write(self._fd, adu)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._fail(exc.strerror or repr(exc))
            return
        if written < len(adu):
            # A response is far smaller than the driver's buffer, so the line is stuck (flow
            # control, a jammed adapter). The master will retry; queueing would only pile up.
            log.debug("Modbus RTU: output buffer full; %d bytes dropped", len(adu) - written)


def _ranges(numbers: list[int]) -> str:
    """1,2,3,5 -> "1-3,5": the unit ids a slave answers, in one short log line."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)
