"""Modbus requests in, responses out: the protocol logic both transports share.

`RequestHandler.handle` takes a request PDU (function code and data, no unit id, no framing) and
returns the response PDU with its outcome. Reads are answered at once from the register image;
writes return a coroutine, because they wait for the command they trigger.

Supported: 1 read coils, 2 read discrete inputs, 3 read holding registers, 4 read input registers,
5 write single coil, 6 write single register, 15 write multiple coils, 16 write multiple
registers, 8/0 diagnostics echo, 43/14 read device identification (basic objects). Any other
function answers 01, except codes 128-255: those are exception responses, never requests, and
the transports drop them unanswered (`8x 01` would read as an exception to function x).
Checks follow the protocol specification's order: function (01), quantity and byte count (03),
address (02), value (03), execution (04).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.modbus.image import ImageView
from gateway.modbus.layout import ADDRESS_SPACE, Table
from gateway.modbus.pdu_codes import OUTCOME_OF, ExceptionCode, Outcome
from gateway.modbus.writes import WriteExecutor, WriteOp

log = logging.getLogger("gateway.modbus")

Reply = tuple[bytes, Outcome]
PendingReply = Coroutine[Any, Any, Reply]

MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGISTERS = 123
COIL_ON, COIL_OFF = 0xFF00, 0x0000

_READ_TABLE = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
_HEAD = struct.Struct(">BHH")  # function code, address, quantity (or value)
_MEI_DEVICE_ID = 0x0E
_CONFORMITY_BASIC = 0x81  # basic objects, stream and individual access


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The basic objects of function 43/14: vendor name, product code, revision."""

    vendor: str
    product: str
    revision: str

    def objects(self) -> list[bytes]:
        return [
            s.encode("ascii", "replace")[:64] for s in (self.vendor, self.product, self.revision)
        ]


def exception_reply(function: int, code: ExceptionCode) -> Reply:
    return bytes((function | 0x80, code)), OUTCOME_OF[code]


class RequestHandler:
    """Answers request PDUs from the register image; writes go through the `WriteExecutor`."""

    def __init__(self, image: ImageView, writes: WriteExecutor, identity: DeviceIdentity) -> None:
        self._image = image
        self._writes = writes
        self._identity = identity

    def handle(self, pdu: bytes) -> Reply | PendingReply:
        """The response to a request PDU (at least the function code), now or when awaited."""
        try:
            return self._dispatch(pdu)
        except Exception:
            # A bug must cost one request (answered 04), never the connection or the port.
            log.exception("Modbus request %s failed", pdu.hex())
            return exception_reply(pdu[0], ExceptionCode.SERVER_DEVICE_FAILURE)

    def _dispatch(self, pdu: bytes) -> Reply | PendingReply:
        function = pdu[0]
        if function in _READ_TABLE:
            return self._read(function, pdu)
        if function == 5:
            return self._write_single_coil(pdu)
        if function == 6:
            return self._write_single_register(pdu)
        if function == 15:
            return self._write_coils(pdu)
        if function == 16:
            return self._write_registers(pdu)
        if function == 8:
            return self._diagnostics(pdu)
        if function == 43:
            return self._device_identification(pdu)
        return exception_reply(function, ExceptionCode.ILLEGAL_FUNCTION)

    # -- reads ------------------------------------------------------------------------------

    def _read(self, function: int, pdu: bytes) -> Reply:
        if len(pdu) != _HEAD.size:
            return exception_reply(function, ExceptionCode.ILLEGAL_DATA_VALUE)
        _, address, count = _HEAD.unpack(pdu)
        table = _READ_TABLE[function]
        bits = table in (Table.COIL, Table.DISCRETE)
        if not 1 <= count <= (MAX_READ_BITS if bits else MAX_READ_REGISTERS):
            return exception_reply(function, ExceptionCode.ILLEGAL_DATA_VALUE)
        if bits:
            data = self._image.read_bits(table, address, count)
        else:
            data = self._image.read_registers(table, address, count)
        if data is None:
            return exception_reply(function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        return bytes((function, len(data))) + data, Outcome.OK

    # -- writes -----------------------------------------------------------------------------

    def _write_single_coil(self, pdu: bytes) -> Reply | PendingReply:
        if len(pdu) != _HEAD.size:
            return exception_reply(5, ExceptionCode.ILLEGAL_DATA_VALUE)
        _, address, value = _HEAD.unpack(pdu)
        if value not in (COIL_ON, COIL_OFF):
            return exception_reply(5, ExceptionCode.ILLEGAL_DATA_VALUE)
        return self._write(5, self._writes.plan_bits(address, [value == COIL_ON]), pdu)

    def _write_single_register(self, pdu: bytes) -> Reply | PendingReply:
        if len(pdu) != _HEAD.size:
            return exception_reply(6, ExceptionCode.ILLEGAL_DATA_VALUE)
        _, address, value = _HEAD.unpack(pdu)
        return self._write(6, self._writes.plan_registers(address, [value]), pdu)

    def _write_coils(self, pdu: bytes) -> Reply | PendingReply:
        if len(pdu) < 6:
            return exception_reply(15, ExceptionCode.ILLEGAL_DATA_VALUE)
        _, address, count = _HEAD.unpack_from(pdu)
        size = pdu[5]
        if not 1 <= count <= MAX_WRITE_BITS or size != (count + 7) // 8 or len(pdu) != 6 + size:
            return exception_reply(15, ExceptionCode.ILLEGAL_DATA_VALUE)
        if address + count > ADDRESS_SPACE:
            return exception_reply(15, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        bits = [(pdu[6 + (i >> 3)] >> (i & 7)) & 1 for i in range(count)]
        return self._write(15, self._writes.plan_bits(address, bits), pdu[:5])

    def _write_registers(self, pdu: bytes) -> Reply | PendingReply:
        if len(pdu) < 6:
            return exception_reply(16, ExceptionCode.ILLEGAL_DATA_VALUE)
        _, address, count = _HEAD.unpack_from(pdu)
        size = pdu[5]
        if not 1 <= count <= MAX_WRITE_REGISTERS or size != 2 * count or len(pdu) != 6 + size:
            return exception_reply(16, ExceptionCode.ILLEGAL_DATA_VALUE)
        if address + count > ADDRESS_SPACE:
            return exception_reply(16, ExceptionCode.ILLEGAL_DATA_ADDRESS)
        words = struct.unpack_from(f">{count}H", pdu, 6)
        return self._write(16, self._writes.plan_registers(address, words), pdu[:5])

    def _write(
        self, function: int, plan: Sequence[WriteOp] | ExceptionCode, answer: bytes
    ) -> Reply | PendingReply:
        if isinstance(plan, ExceptionCode):
            return exception_reply(function, plan)
        return self._run(function, plan, answer)

    async def _run(self, function: int, plan: Sequence[WriteOp], answer: bytes) -> Reply:
        try:
            code = await self._writes.run(plan)
        except Exception:
            log.exception("Modbus write (function %d) failed", function)
            code = ExceptionCode.SERVER_DEVICE_FAILURE
        if code is not None:
            return exception_reply(function, code)
        return answer, Outcome.OK

    # -- diagnostics and identification ---------------------------------------------------

    def _diagnostics(self, pdu: bytes) -> Reply:
        # Sub-function 0 (return query data) is the usual link test: answer with the request.
        if len(pdu) >= 3 and pdu[1:3] == b"\x00\x00":
            return pdu, Outcome.OK
        return exception_reply(8, ExceptionCode.ILLEGAL_FUNCTION)

    def _device_identification(self, pdu: bytes) -> Reply:
        if len(pdu) < 2 or pdu[1] != _MEI_DEVICE_ID:
            return exception_reply(43, ExceptionCode.ILLEGAL_FUNCTION)
        if len(pdu) != 4 or not 1 <= pdu[2] <= 4:
            return exception_reply(43, ExceptionCode.ILLEGAL_DATA_VALUE)
        access, first = pdu[2], pdu[3]
        objects = self._identity.objects()
        if access == 4:  # one object, by id
            if first >= len(objects):
                return exception_reply(43, ExceptionCode.ILLEGAL_DATA_ADDRESS)
            chosen = [(first, objects[first])]
        else:  # stream access: only basic objects exist; an unknown start restarts at 0
            start = first if first < len(objects) else 0
            chosen = list(enumerate(objects))[start:]
        body = bytearray((43, _MEI_DEVICE_ID, access, _CONFORMITY_BASIC, 0, 0, len(chosen)))
        for object_id, value in chosen:
            body += bytes((object_id, len(value))) + value
        return bytes(body), Outcome.OK
