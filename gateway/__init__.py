"""vs121-gateway: Milesight VS121 / VS121-P occupancy sensors on BACnet/IP and Modbus."""

__version__ = "0.1.0"
