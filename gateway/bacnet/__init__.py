"""BACnet/IP server of the gateway: the only package that imports bacpypes3."""

from gateway.bacnet.server import BacnetError, BacnetServer
from gateway.bacnet.writes import WriteAction, command_actions

__all__ = ["BacnetError", "BacnetServer", "WriteAction", "command_actions"]
