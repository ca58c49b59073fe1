"""What the sinks may ask of the gateway: the only paths by which BACnet or Modbus change state."""

from __future__ import annotations

from typing import Protocol


class Commands(Protocol):
    """Implemented by the application; BACnet and Modbus writes call these and nothing else."""

    async def reset_counts(self, sensor_id: str) -> str:
        """Zero the gateway's totals for a sensor (and ask a LoRaWAN sensor to reset its own).

        Returns a one-line summary; raises KeyError for an unknown sensor id."""
        ...
