"""Opening the RS485 serial port with pyserial, and telling a quiet port from a vanished one."""

from __future__ import annotations

import os
import select

import serial
import serial.rs485

from gateway.errors import GatewayError
from gateway.settings import ModbusRtuSection

BITS_PER_CHARACTER = 11  # what the RTU specification counts: start, 8 data, parity, stop
FIXED_T35_ABOVE_19200 = 0.00175  # the specification's fixed inter-frame time above 19200 baud

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class SerialPortError(GatewayError):
    """The Modbus RTU serial port cannot be opened; `missing` when the path does not exist."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def character_time(baudrate: int) -> float:
    return BITS_PER_CHARACTER / baudrate


def frame_gap(baudrate: int) -> float:
    """3.5 character times: the silence that separates RTU frames."""
    return FIXED_T35_ABOVE_19200 if baudrate > 19200 else 3.5 * character_time(baudrate)


def open_port(cfg: ModbusRtuSection) -> serial.Serial:
    """Open and configure the port, non-blocking and locked against other users.

    Raises SerialPortError naming the port and the reason (missing, busy, no permission, the
    driver refusing RS485 mode).
    """
    port = serial.Serial(
        port=None,
        baudrate=cfg.baudrate,
        bytesize=cfg.bytesize,
        parity=_PARITY[cfg.parity],
        stopbits=cfg.stopbits,
        timeout=0,
        write_timeout=0,
        exclusive=True,  # a second gateway (or a terminal program) must not share the line
    )
    if cfg.rs485:
        port.rs485_mode = serial.rs485.RS485Settings(rts_level_for_tx=True, rts_level_for_rx=False)
    port.port = cfg.port
    try:
        port.open()
    except (serial.SerialException, OSError, ValueError) as exc:
        missing = not os.path.exists(cfg.port)
        raise SerialPortError(f"modbus.rtu.port {cfg.port!r}: {exc}", missing=missing) from exc
    return port


def hung_up(fd: int) -> bool:
    """Whether the descriptor reports hang-up or error (a USB adapter pulled, a pty closed).

    A readable port that yields no bytes is either that, or a spurious wake-up.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(0)
    return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events)
