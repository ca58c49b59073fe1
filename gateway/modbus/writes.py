"""Master writes: validated against the catalog, then carried out through `Commands`.

A write never changes the register image directly. It becomes a command (persisted, seen by
BACnet too); the new value appears in the image when the state reports it, like any other
change. Which command a writable point triggers is looked up by its catalog key in
`WRITE_ACTIONS`, so a new writable point needs one entry here and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.commands import REQUESTER, AlarmCommands, Commands, DownlinkCommands
from gateway.device_settings import SETTING_POINTS, setting_command
from gateway.modbus.encoding import decode
from gateway.modbus.image import ImageView
from gateway.modbus.layout import Table
from gateway.modbus.pdu_codes import ExceptionCode
from objects.pointmap import ResolvedPoint

log = logging.getLogger("gateway.modbus")

# A write answers only when its command has finished (or failed), so the master knows the
# outcome. Past this the master has long given up; the command still runs to completion.
COMMAND_TIMEOUT_S = 5.0

WriteAction = Callable[[Commands, ResolvedPoint, float], Awaitable[object]]


async def _reset_counts(commands: Commands, rp: ResolvedPoint, value: float) -> object:
    # A pulse coil: writing 1 resets, writing 0 is accepted and does nothing; it reads back 0.
    if value:
        return await commands.reset_counts(rp.sensor_id)
    return None


OVERRIDE_PRIORITY = 8  # an operator's override, the same level a BMS writes over BACnet


def _alarm(commands: Commands, rp: ResolvedPoint) -> tuple[AlarmCommands, str]:
    if not isinstance(commands, AlarmCommands) or rp.rule is None:
        raise LookupError(f"no alarm rule behind {rp.key}")
    return commands, rp.rule


async def _alarm_threshold(commands: Commands, rp: ResolvedPoint, value: float) -> object:
    alarm, rule = _alarm(commands, rp)
    return await alarm.set_alarm_threshold(rule, value)


async def _relay_override(commands: Commands, rp: ResolvedPoint, value: float) -> object:
    # The override register: 0 relinquishes priority 8 (automatic again), 1 forces the relay
    # inactive, 2 active. The catalog's range (0..2) has already been checked (else 03).
    alarm, rule = _alarm(commands, rp)
    return await alarm.command_relay(rule, OVERRIDE_PRIORITY, None if value == 0 else value == 2)


async def _relay_coil(commands: Commands, rp: ResolvedPoint, value: float) -> object:
    # The relay coil reads the output; writing it overrides at priority 8 (there is no way to
    # relinquish with a coil: write 0 to the override register for that).
    alarm, rule = _alarm(commands, rp)
    return await alarm.command_relay(rule, OVERRIDE_PRIORITY, bool(value))


async def _setting(commands: Commands, rp: ResolvedPoint, value: float) -> object:
    # Sent to the sensor as a downlink (refused at once, 04, when it cannot be delivered); the
    # register keeps showing what the sensor echoes.
    if not isinstance(commands, DownlinkCommands):
        raise LookupError(f"this gateway sends no commands for {rp.key}")
    command = setting_command(rp.point.key, value)
    requester = REQUESTER.get()
    if requester == "unknown":
        requester = "modbus"
    return await commands.send_command(rp.sensor_id, [command], requester=requester)


WRITE_ACTIONS: dict[str, WriteAction] = {
    **dict.fromkeys(SETTING_POINTS, _setting),
    "reset_counts": _reset_counts,
    "rule_{r}_threshold": _alarm_threshold,
    "rule_{r}_override": _relay_override,
    "rule_{r}_relay": _relay_coil,
}


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One point a write request sets, with the value the master means."""

    point: ResolvedPoint
    value: float


class WriteExecutor:
    """Plans writes (address and value checks, no side effects) and runs them as commands."""

    def __init__(self, image: ImageView, commands: Commands) -> None:
        self._image = image
        self._commands = commands
        self._pending: set[asyncio.Future[object]] = set()

    def plan_bits(self, address: int, bits: Sequence[int]) -> list[WriteOp] | ExceptionCode:
        """Coil writes: every coil must be a writable point (else 02)."""
        ops: list[WriteOp] = []
        for i, bit in enumerate(bits):
            cell = self._image.writable_cell(Table.COIL, address + i)
            if cell is None:
                return ExceptionCode.ILLEGAL_DATA_ADDRESS
            ops.append(WriteOp(cell.point, float(bit)))
        return ops

    def plan_registers(self, address: int, words: Sequence[int]) -> list[WriteOp] | ExceptionCode:
        """Holding writes: whole writable points only (else 02), values in range (else 03)."""
        cells = []
        pos, end = address, address + len(words)
        while pos < end:
            cell = self._image.writable_cell(Table.HOLDING, pos)
            if cell is None or cell.end > end:
                return ExceptionCode.ILLEGAL_DATA_ADDRESS  # unmapped, read-only or half a point
            cells.append(cell)
            pos = cell.end
        ops: list[WriteOp] = []
        for cell in cells:
            spec = cell.point.point.modbus
            assert spec is not None  # writable cells come from points with a Modbus placement
            part = tuple(words[cell.address - address : cell.end - address])
            value = decode(part, scale=spec.scale, signed=spec.signed, order=self._image.word_order)
            low, high = cell.point.point.minimum, cell.point.point.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                return ExceptionCode.ILLEGAL_DATA_VALUE
            ops.append(WriteOp(cell.point, value))
        return ops

    async def run(self, ops: Sequence[WriteOp]) -> ExceptionCode | None:
        """Carry out the planned writes in address order; 04 if a command fails or hangs."""
        for op in ops:
            action = WRITE_ACTIONS.get(op.point.point.key)
            who = f"{op.point.sensor_id or 'gateway'}.{op.point.key}"
            if action is None:
                log.error("Modbus write to %s: no command is defined for this point", who)
                return ExceptionCode.SERVER_DEVICE_FAILURE
            task = asyncio.ensure_future(action(self._commands, op.point, op.value))
            self._pending.add(task)
            task.add_done_callback(self._finished)
            try:
                # shield: a master timing out must not cancel a half-done command.
                await asyncio.wait_for(asyncio.shield(task), COMMAND_TIMEOUT_S)
            except TimeoutError:
                log.error(
                    "Modbus write to %s: command still running after %.0f s", who, COMMAND_TIMEOUT_S
                )
                return ExceptionCode.SERVER_DEVICE_FAILURE
            except Exception as exc:  # any failure of the command is answered with 04
                log.error("Modbus write to %s = %g failed: %r", who, op.value, exc)
                return ExceptionCode.SERVER_DEVICE_FAILURE
            log.info("Modbus write to %s = %g", who, op.value)
        return None

    def _finished(self, task: asyncio.Future[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here so a command that failed after its timeout is still logged once.
            log.debug("Modbus write command ended with %r", task.exception())
