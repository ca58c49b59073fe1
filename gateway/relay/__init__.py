"""Overcrowding alarm rules and the relay outputs they drive (the VS121-P's DO, for any sensor).

`logic`: the rules as pure code; `service`: `RelayService`, fed by the state; `output`: one
worker per output; `drivers`: GPIO (libgpiod), Modbus relay module (pymodbus's client, through
`gateway.modbus.master`), none; `persist`: the rules' durable state.
"""

from gateway.relay.drivers import OutputError
from gateway.relay.service import RelayService

__all__ = ["OutputError", "RelayService"]
