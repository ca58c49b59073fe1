"""Which sensors a Modbus scheme can address, and the addressing modes with several unit ids.

Three addressing modes (``modbus.addressing``):

- ``blocks`` (the default): one device; sensor n's points sit at ``n x 200 + offset``. The
  address space ends at 65535, so sensors whose whole block does not fit are not on Modbus.
- ``unit_per_sensor``: unit id = sensor number (1..247), every unit with the same layout
  (``offset``, i.e. the block of sensor n moved to address 0); the gateway's own block (heartbeat,
  status, alarm rules) on ``modbus.gateway_unit_id``. Sensors numbered above 247 are not on
  Modbus. Over RTU the slave answers exactly this set of unit ids and stays silent to the rest;
  over TCP an unknown unit id answers exception 0B (gateway target device failed to respond).
- ``unit_blocks``: 100 sensors per unit id. Sensor n is on unit ``1 + n // 100`` at
  ``(n % 100) x 200 + offset``: sensor 1234 on unit 13 at 6800 + offset. Unit 1 is exactly the
  ``blocks`` layout for sensors 1..99, the gateway's block (heartbeat, status, alarm rules) at
  0..199 included; unit 2 holds sensors 100..199 (sensor 100 at 0), and so on. 247 unit ids
  reach sensor 24699. Unit ids answered: unit 1 and every unit holding a configured sensor;
  others as in ``unit_per_sensor`` (RTU silence, TCP 0B).

Sensors a scheme cannot address stay on BACnet (and in the state); the gateway warns once at
start, naming them. Refusing the whole configuration instead would keep a large BACnet site
from offering Modbus at all, and a PLC reading such a sensor gets exception 02, never a wrong
value.

Internally every mode shares one register image laid out in blocks (sensor n at n x 200, also
past 65535 in ``unit_blocks``); the router turns (unit id, unit-local address) into the block
address and back, so a read can never spill into the neighbouring sensor's block (or unit).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.commands import Commands
from gateway.modbus.image import RegisterImage
from gateway.modbus.layout import ADDRESS_SPACE, SENSOR_SPANS
from gateway.modbus.pdu import DeviceIdentity, PendingReply, Reply, RequestHandler, exception_reply
from gateway.modbus.pdu_codes import ExceptionCode
from gateway.modbus.writes import WriteExecutor
from gateway.settings import ModbusSection
from objects.catalog import MODBUS_BLOCK
from objects.pointmap import ResolvedPoint

log = logging.getLogger("gateway.modbus")

MAX_UNIT_ID = 247
_BLOCK_END = max(span.stop for span in SENSOR_SPANS.values())
# The highest sensor number whose whole block fits below address 65536 in blocks mode.
MAX_BLOCK_SENSOR = (ADDRESS_SPACE - _BLOCK_END) // MODBUS_BLOCK
# unit_blocks: sensors per unit id, and the addresses one unit spans.
SENSORS_PER_UNIT = 100
UNIT_SPAN = SENSORS_PER_UNIT * MODBUS_BLOCK
MAX_UNIT_BLOCKS_SENSOR = MAX_UNIT_ID * SENSORS_PER_UNIT - 1
_RANGED = {1, 2, 3, 4, 15, 16}  # functions with an address and a quantity
_SINGLE = {5, 6}  # functions with an address and a value
_ECHOES_ADDRESS = {5, 6, 15, 16}


@dataclass(frozen=True, slots=True)
class Plan:
    """What is on Modbus: the points served, the unit ids (unit mode), who is left out."""

    points: list[ResolvedPoint]
    units: dict[int, int] | None  # unit id -> block base address; None in blocks mode
    left_out: list[tuple[str, int]]  # (sensor id, number) of sensors not on Modbus


_MAX_SENSOR = {
    "blocks": MAX_BLOCK_SENSOR,
    "unit_per_sensor": MAX_UNIT_ID,
    "unit_blocks": MAX_UNIT_BLOCKS_SENSOR,
}


def max_sensor_number(cfg: ModbusSection) -> int:
    return _MAX_SENSOR[cfg.addressing]


def unit_block_of(number: int) -> tuple[int, int]:
    """unit_blocks addressing: (unit id, base of its window in the image) of sensor `number`."""
    index = number // SENSORS_PER_UNIT
    return 1 + index, index * UNIT_SPAN


def placement(cfg: ModbusSection, number: int, address: int) -> tuple[int | None, int]:
    """(unit id, the address a request carries) of image address `address` of sensor `number`
    (0: the gateway and its alarm rules); the unit id is None in blocks mode (any unit id)."""
    if cfg.addressing == "unit_per_sensor":
        if number == 0:
            return cfg.gateway_unit_id, address
        return number, address - number * MODBUS_BLOCK
    if cfg.addressing == "unit_blocks":
        unit, base = unit_block_of(number)
        return unit, address - base
    return None, address


def image_size(cfg: ModbusSection, units: dict[int, int] | None) -> int:
    """Addresses the register image needs: 65536, or in unit_blocks up to the last window."""
    if cfg.addressing != "unit_blocks" or not units:
        return ADDRESS_SPACE
    return max(ADDRESS_SPACE, max(units.values()) + UNIT_SPAN)


def on_modbus(cfg: ModbusSection, number: int) -> bool:
    """Whether the addressing mode reaches sensor `number` (0, the gateway, always)."""
    if number == 0:
        return True
    if cfg.addressing == "unit_per_sensor" and number == cfg.gateway_unit_id:
        return False
    return number <= max_sensor_number(cfg)


def plan(cfg: ModbusSection, points: Sequence[ResolvedPoint]) -> Plan:
    """Split the points into those served over Modbus and the sensors the scheme cannot reach."""
    unit_mode = cfg.addressing == "unit_per_sensor"
    served: list[ResolvedPoint] = []
    left: dict[str, int] = {}
    numbers: set[int] = set()
    for rp in points:
        number = rp.sensor_number
        if rp.sensor_id == "" or rp.rule is not None:
            served.append(rp)  # the gateway's block: always addressable
            continue
        if not on_modbus(cfg, number):
            left.setdefault(rp.sensor_id, number)
            continue
        served.append(rp)
        numbers.add(number)
    units = None
    if unit_mode:
        units = {n: n * MODBUS_BLOCK for n in sorted(numbers)}
        units[cfg.gateway_unit_id] = 0
    elif cfg.addressing == "unit_blocks":
        units = dict(unit_block_of(n) for n in sorted({0, *numbers}))
    return Plan(served, units, sorted(left.items(), key=lambda item: item[1]))


def warn_left_out(cfg: ModbusSection, left_out: Sequence[tuple[str, int]]) -> None:
    """One warning line at start naming every sensor that is not on Modbus."""
    if not left_out:
        return
    limit = max_sensor_number(cfg)
    names = ", ".join(f"{sid} (#{n})" for sid, n in left_out[:20])
    more = f" and {len(left_out) - 20} more" if len(left_out) > 20 else ""
    log.warning(
        "Modbus: %d sensor(s) numbered above %d are BACnet-only, %s addressing cannot reach "
        "them: %s%s",
        len(left_out),
        limit,
        cfg.addressing,
        names,
        more,
    )


class Router(Protocol):
    """What the transports need from an addressing mode with several unit ids."""

    @property
    def unit_ids(self) -> frozenset[int]: ...

    def serves(self, unit: int) -> bool: ...

    def handle(self, unit: int, pdu: bytes) -> Reply | PendingReply | None: ...

    def handle_tcp(self, unit: int, pdu: bytes) -> Reply | PendingReply: ...


class WindowRouter:
    """unit_blocks: each unit id answers from its own window of the image (its addresses from
    0, nothing readable or writable past its span), with a handler of its own."""

    def __init__(self, handlers: dict[int, RequestHandler]) -> None:
        self._handlers = dict(handlers)

    @classmethod
    def over(
        cls,
        image: RegisterImage,
        units: dict[int, int],
        commands: Commands,
        identity: DeviceIdentity,
    ) -> WindowRouter:
        handlers = {}
        for unit, base in units.items():
            window = image.window(base, UNIT_SPAN)
            handlers[unit] = RequestHandler(window, WriteExecutor(window, commands), identity)
        return cls(handlers)

    @property
    def unit_ids(self) -> frozenset[int]:
        return frozenset(self._handlers)

    def serves(self, unit: int) -> bool:
        return unit in self._handlers

    def handle(self, unit: int, pdu: bytes) -> Reply | PendingReply | None:
        handler = self._handlers.get(unit)
        return None if handler is None else handler.handle(pdu)

    def handle_tcp(self, unit: int, pdu: bytes) -> Reply | PendingReply:
        reply = self.handle(unit, pdu)
        if reply is None:
            return exception_reply(pdu[0], ExceptionCode.GATEWAY_TARGET_FAILED)
        return reply


class UnitRouter:
    """Answers requests per unit id, each unit seeing its sensor's block at address 0."""

    def __init__(self, handler: RequestHandler, units: dict[int, int]) -> None:
        self._handler = handler
        self._units = dict(units)

    @property
    def unit_ids(self) -> frozenset[int]:
        return frozenset(self._units)

    def serves(self, unit: int) -> bool:
        return unit in self._units

    def handle(self, unit: int, pdu: bytes) -> Reply | PendingReply | None:
        """The reply of `unit` to the request, None when no such unit is served here."""
        base = self._units.get(unit)
        if base is None:
            return None
        function = pdu[0]
        if (function not in _RANGED and function not in _SINGLE) or len(pdu) < 5:
            return self._handler.handle(pdu)
        address = int.from_bytes(pdu[1:3], "big")
        count = int.from_bytes(pdu[3:5], "big") if function in _RANGED else 1
        if address + count > MODBUS_BLOCK:
            if function in _SINGLE or 1 <= count <= 2000:
                return exception_reply(function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
            return self._handler.handle(pdu)  # a bad quantity: the handler answers 03
        moved = pdu[:1] + (address + base).to_bytes(2, "big") + pdu[3:]
        reply = self._handler.handle(moved)
        if function not in _ECHOES_ADDRESS:
            return reply
        if isinstance(reply, tuple):
            return _local(reply, pdu)
        return _local_later(reply, pdu)

    def handle_tcp(self, unit: int, pdu: bytes) -> Reply | PendingReply:
        reply = self.handle(unit, pdu)
        if reply is None:
            return exception_reply(pdu[0], ExceptionCode.GATEWAY_TARGET_FAILED)
        return reply


def _local(reply: Reply, request: bytes) -> Reply:
    """A write's echo carries the address the master sent, not the block address."""
    answer, outcome = reply
    if answer[0] & 0x80:
        return reply
    return answer[:1] + request[1:3] + answer[3:], outcome


async def _local_later(pending: PendingReply, request: bytes) -> Reply:
    return _local(await pending, request)
