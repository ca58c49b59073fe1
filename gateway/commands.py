"""What the sinks may ask of the gateway: the only paths by which BACnet or Modbus change state."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

from gateway.errors import GatewayError


class CommandRefusedError(GatewayError):
    """A command the gateway will not carry out as asked (e.g. a write to a command slot that
    belongs to the gateway itself). Sinks answer it as an access error, not a failure."""


class Commands(Protocol):
    """Implemented by the application; BACnet and Modbus writes call these and nothing else."""

    async def reset_counts(self, sensor_id: str) -> str:
        """Zero the gateway's totals for a sensor (and ask a LoRaWAN sensor to reset its own).

        Returns a one-line summary; raises KeyError for an unknown sensor id."""
        ...


@runtime_checkable
class AlarmCommands(Protocol):
    """The overcrowding alarm rules' commands (see `gateway.relay`).

    A separate protocol so that a sink serving no alarm rule needs nothing more than `Commands`;
    the write actions of the rules' points check for it and refuse the write when it is missing.
    """

    async def set_alarm_threshold(self, rule_id: str, threshold: float) -> str:
        """Set (and persist) a rule's threshold. KeyError for an unknown rule, ValueError for a
        value out of range."""
        ...

    async def command_relay(self, rule_id: str, priority: int, value: bool | None) -> str:
        """Write (True active, False inactive) or relinquish (None) one of the priority levels
        1..15 of a rule's relay command (16 is the automatic one: CommandRefusedError), persisted.
        KeyError for an unknown rule."""
        ...


class DeliveryRefusedError(GatewayError):
    """A downlink command that cannot be delivered now (sensor offline, network server not
    connected, no route known yet, a model without that command). Refused at once, never
    queued; sinks answer it as a refusal with the reason in the log."""


REQUESTER: ContextVar[str] = ContextVar("requester", default="unknown")
"""Who asked for the command being run (e.g. "bacnet:192.168.1.5:47808", "modbus:tcp", "cli"),
set by the sink that received the request and logged with every command."""


@runtime_checkable
class DownlinkCommands(Protocol):
    """Send guide commands to a sensor (see `gateway.downlinks`)."""

    async def send_command(
        self, sensor_id: str, commands: list[dict[str, Any]], *, requester: str
    ) -> dict[str, Any]:
        """Encode and send `commands` (the JSON shape of `gateway.codec.vs121_downlink`) in one
        downlink; returns the command's record. KeyError for an unknown sensor, EncodeError for
        a bad command, DeliveryRefusedError when it cannot be delivered now."""
        ...
