"""Modbus TCP server and RTU slave serving the point map from one register image.

The only package that speaks Modbus. Layout and readable blocks: `layout`; value encoding:
`encoding`; the image: `image`; protocol: `pdu`; writes to commands: `writes`; addressing modes
and unit ids: `units`; transports: `tcp`, `rtu` (framing in `rtu_framing`, the port in
`serial_port`); the relay-module master (pymodbus's clients): `master`.
"""

from gateway.modbus.pdu_codes import OUTCOMES, TRANSPORTS, Outcome
from gateway.modbus.serial_port import SerialPortError
from gateway.modbus.server import ModbusServer

__all__ = ["OUTCOMES", "TRANSPORTS", "ModbusServer", "Outcome", "SerialPortError"]
