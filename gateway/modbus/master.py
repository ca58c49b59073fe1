"""A Modbus master for relay modules: pymodbus's asynchronous TCP and serial clients, adapted.

The relay needs two functions, write single coil (05) and read coils (01), on a line shared by
several rules. pymodbus's clients do that well: one lock per client keeps transactions in turn,
a lost TCP connection is made again and a vanished serial port is reopened on the next request
(`transaction/transaction.py`, `TransactionManager.execute`), and late or foreign replies are
refused by transaction and device id. This adapter only turns pymodbus's results into one
`ModbusMasterError` whose message names the line, the unit and the reason, and keeps pymodbus
out of every other package.

pymodbus logs each timeout at ERROR and each reconnect attempt at WARNING: a second line for an
event the relay already reports once (and retries), so its logger is raised to CRITICAL unless
the operator has set a level for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from gateway.errors import GatewayError

_PYMODBUS_LOG = logging.getLogger("pymodbus")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class ModbusMasterError(GatewayError):
    """A request got no valid answer: no connection, no reply, or an exception response."""


class CoilMaster:
    """One line (serial port or host:port) to one or more Modbus devices."""

    def __init__(self, client: ModbusBaseClient, description: str, *, timeout: float) -> None:
        self._client = client
        self.description = description
        self._timeout = timeout
        self._serial = isinstance(client, AsyncModbusSerialClient)

    @classmethod
    def tcp(cls, host: str, port: int, *, timeout: float = 0.5) -> CoilMaster:
        client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=0)
        return cls(client, f"Modbus TCP {host}:{port}", timeout=timeout)

    @classmethod
    def rtu(
        cls,
        port: str,
        *,
        baudrate: int = 9600,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        timeout: float = 0.5,
    ) -> CoilMaster:
        client = AsyncModbusSerialClient(
            port,
            baudrate=baudrate,
            parity=parity,
            bytesize=bytesize,
            stopbits=stopbits,
            timeout=timeout,
            retries=0,
        )
        return cls(client, f"Modbus RTU {port}", timeout=timeout)

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        """Write one coil; unit 0 is a broadcast, which nobody answers."""
        result = await self._call(
            unit,
            lambda: self._client.write_coil(
                address, on, device_id=unit, no_response_expected=unit == 0
            ),
        )
        # pymodbus takes any write-coil reply from the unit as the answer (over RTU there is no
        # transaction id): check that it echoes this write.
        if result is not None and (result.address != address or bool(result.bits[0]) != on):
            raise ModbusMasterError(
                f"{self.description} unit {unit}: the reply does not echo the write of coil "
                f"{address}"
            )

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        result = await self._call(
            unit, lambda: self._client.read_coils(address, count=count, device_id=unit)
        )
        assert result is not None
        return [bool(b) for b in result.bits[:count]]

    async def close(self) -> None:
        self._client.close()

    async def _call(
        self, unit: int, request: Callable[[], Awaitable[ModbusPDU]]
    ) -> ModbusPDU | None:
        where = f"{self.description} unit {unit}"
        try:
            if not self._client.connected and not await self._client.connect():
                verb = "cannot open the port" if self._serial else "cannot connect"
                raise ModbusMasterError(f"{where}: {verb}")
            result = await _not_abandoned(request())
        except ModbusIOException as exc:
            raise ModbusMasterError(f"{where}: no reply within {self._timeout:g} s") from exc
        except ConnectionException as exc:
            raise ModbusMasterError(f"{where}: connection lost") from exc
        except (ModbusException, OSError) as exc:
            raise ModbusMasterError(f"{where}: {exc}") from exc
        if result is not None and result.isError():
            code = result.exception_code
            reason = _EXCEPTIONS.get(code, "unknown")
            raise ModbusMasterError(f"{where}: exception {code:02d} ({reason})")
        return result


async def _not_abandoned(request: Awaitable[ModbusPDU]) -> ModbusPDU | None:
    """Await a transaction; when cancelled, let it finish first. pymodbus would otherwise take
    the abandoned request's late reply as the answer to the next one (over RTU nothing tells
    them apart), and a slave may drop a request sent while it still answers the previous."""
    work = asyncio.ensure_future(request)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise
