"""A small Modbus master for relay modules: write one coil, read coils back, over RTU or TCP.

Only what a relay output needs (functions 05 and 01), so no master library is pulled in; the
frames and the CRC are those of the gateway's own slave (`gateway.modbus.rtu_framing`), and the
tests run it against pymodbus's slave. The serial port and the TCP connection stay open between
transactions and are reopened after an error; one lock per line keeps transactions in turn, so
several rules can share one module or one RS485 line.

RTU transactions block (pyserial), so they run in a worker thread; TCP uses asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from typing import Protocol

import serial

from gateway.errors import GatewayError
from gateway.modbus.rtu_framing import crc_ok, with_crc
from gateway.modbus.serial_port import frame_gap

log = logging.getLogger("gateway.relay")

WRITE_SINGLE_COIL = 0x05
READ_COILS = 0x01
COIL_ON = b"\xff\x00"
COIL_OFF = b"\x00\x00"
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    11: "gateway target failed to respond",
}


class OutputError(GatewayError):
    """An output could not be driven (no answer, an exception response, a missing device)."""


class ModbusMaster(Protocol):
    """One line to one or more Modbus devices."""

    description: str

    async def write_coil(self, unit: int, address: int, on: bool) -> None: ...

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]: ...

    async def close(self) -> None: ...


def _write_coil_pdu(address: int, on: bool) -> bytes:
    return bytes([WRITE_SINGLE_COIL]) + address.to_bytes(2, "big") + (COIL_ON if on else COIL_OFF)


def _read_coils_pdu(address: int, count: int) -> bytes:
    return bytes([READ_COILS]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")


def _check_reply(request: bytes, reply: bytes, where: str) -> bytes:
    """The reply's PDU if it answers `request`; OutputError for an exception or a mismatch."""
    if not reply:
        raise OutputError(f"{where}: empty reply")
    if reply[0] == request[0] | 0x80:
        code = reply[1] if len(reply) > 1 else 0
        raise OutputError(f"{where}: exception {code:02d} ({_EXCEPTIONS.get(code, 'unknown')})")
    if reply[0] != request[0]:
        raise OutputError(f"{where}: reply to function {reply[0]}, not {request[0]}")
    if request[0] == WRITE_SINGLE_COIL and reply != request:
        raise OutputError(f"{where}: the coil write was not echoed ({reply.hex()})")
    return reply


def _coils(reply: bytes, count: int, where: str) -> list[bool]:
    if len(reply) < 2 or reply[1] != (count + 7) // 8 or len(reply) != 2 + reply[1]:
        raise OutputError(f"{where}: malformed read-coils reply {reply.hex()}")
    return [bool(reply[2 + i // 8] >> (i % 8) & 1) for i in range(count)]


class RtuMaster:
    """Modbus RTU master on a serial port of its own (not the gateway's slave port)."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        timeout: float = 0.5,
    ) -> None:
        self.port = port
        self.description = f"Modbus RTU {port}"
        self._settings = (baudrate, parity, bytesize, stopbits)
        self._timeout = timeout
        self._gap = frame_gap(baudrate)
        self._serial: serial.Serial | None = None
        self._lock = asyncio.Lock()
        self._last_end = 0.0

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        request = _write_coil_pdu(address, on)
        if unit == 0:  # broadcast: nobody answers
            await self._transact(unit, request, expect=None)
            return
        reply = await self._transact(unit, request, expect=len(request))
        _check_reply(request, reply, self._where(unit))

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        request = _read_coils_pdu(address, count)
        reply = await self._transact(unit, request, expect=2 + (count + 7) // 8)
        return _coils(_check_reply(request, reply, self._where(unit)), count, self._where(unit))

    async def close(self) -> None:
        async with self._lock:
            self._close()

    def _where(self, unit: int) -> str:
        return f"{self.description} unit {unit}"

    async def _transact(self, unit: int, pdu: bytes, *, expect: int | None) -> bytes:
        async with self._lock:
            work = asyncio.ensure_future(
                asyncio.to_thread(self._transact_blocking, unit, pdu, expect)
            )
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # The thread cannot be stopped: keep the line ours until it is done with it.
                with contextlib.suppress(Exception):
                    await work
                raise

    def _open(self) -> serial.Serial:
        if self._serial is None:
            baudrate, parity, bytesize, stopbits = self._settings
            try:
                self._serial = serial.Serial(
                    port=self.port,
                    baudrate=baudrate,
                    parity=_PARITY[parity],
                    bytesize=bytesize,
                    stopbits=stopbits,
                    timeout=self._timeout,
                    write_timeout=self._timeout,
                    exclusive=True,
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                raise OutputError(f"{self.description}: cannot open: {exc}") from exc
        return self._serial

    def _close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()

    def _transact_blocking(self, unit: int, pdu: bytes, expect: int | None) -> bytes:
        where = self._where(unit)
        try:
            port = self._open()
            # Keep the bus's 3.5-character silence between our frames.
            quiet = self._last_end + self._gap - time.monotonic()
            if quiet > 0:
                time.sleep(quiet)
            port.reset_input_buffer()
            port.write(with_crc(bytes([unit]) + pdu))
            port.flush()
            if expect is None:
                self._last_end = time.monotonic()
                return b""
            frame = self._read_reply(port, unit, pdu[0], expect, where)
        except (serial.SerialException, OSError) as exc:
            self._close()
            raise OutputError(f"{where}: {exc}") from exc
        finally:
            self._last_end = time.monotonic()
        return frame

    def _read_reply(
        self, port: serial.Serial, unit: int, function: int, expect: int, where: str
    ) -> bytes:
        head = port.read(2)
        if len(head) < 2:
            raise OutputError(f"{where}: no reply within {self._timeout:g} s")
        if head[0] != unit:
            raise OutputError(f"{where}: reply from unit {head[0]}")
        rest = 3 if head[1] == function | 0x80 else expect - 1 + 2  # PDU after function, CRC
        body = port.read(rest)
        frame = head + body
        if len(body) < rest:
            raise OutputError(f"{where}: reply cut short ({frame.hex()})")
        if not crc_ok(frame):
            raise OutputError(f"{where}: reply with a bad CRC ({frame.hex()})")
        return frame[1:-2]


class TcpMaster:
    """Modbus TCP master; one connection, kept open, reconnected after an error."""

    def __init__(self, host: str, port: int, *, timeout: float = 0.5) -> None:
        self.description = f"Modbus TCP {host}:{port}"
        self._host = host
        self._port = port
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tid = 0

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        request = _write_coil_pdu(address, on)
        _check_reply(request, await self._transact(unit, request), self._where(unit))

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        request = _read_coils_pdu(address, count)
        reply = _check_reply(request, await self._transact(unit, request), self._where(unit))
        return _coils(reply, count, self._where(unit))

    async def close(self) -> None:
        async with self._lock:
            await self._disconnect()

    def _where(self, unit: int) -> str:
        return f"{self.description} unit {unit}"

    async def _transact(self, unit: int, pdu: bytes) -> bytes:
        async with self._lock:
            where = self._where(unit)
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._exchange(unit, pdu)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, OutputError) as exc:
                await self._disconnect()  # a late reply must not answer the next request
                reason = "no reply" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
                raise OutputError(f"{where}: {reason}") from exc
            except asyncio.CancelledError:
                await self._disconnect()  # the exchange may be half done
                raise

    async def _exchange(self, unit: int, pdu: bytes) -> bytes:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        self._tid = (self._tid + 1) % 65536
        self._writer.write(struct.pack(">HHHB", self._tid, 0, len(pdu) + 1, unit) + pdu)
        await self._writer.drain()
        while True:
            tid, proto, length, _unit = struct.unpack(">HHHB", await self._reader.readexactly(7))
            if proto != 0 or not 2 <= length <= 254:
                raise OutputError(f"malformed MBAP header (protocol {proto}, length {length})")
            body = await self._reader.readexactly(length - 1)
            if tid == self._tid:
                return body
            log.debug("%s: dropped a reply to transaction %d", self.description, tid)

    async def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
