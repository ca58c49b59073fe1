"""The register image: the one copy of every Modbus value, owned by the gateway.

The state's Changes are written into it synchronously in the event loop, and requests read it in
the loop too, so a read never sees half of an update (both words of a 32-bit value change
together). Input and holding registers share one array: the catalog mirrors every register
point in both tables.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple, Protocol

from gateway.modbus.encoding import WordOrder, encode
from gateway.modbus.layout import (
    ADDRESS_SPACE,
    BIT_TABLES,
    Cell,
    Table,
    readable_blocks,
    tables_of,
)
from gateway.state import Change
from objects.catalog import ModbusKind
from objects.pointmap import ResolvedPoint

_SWAP_TO_BIG_ENDIAN = sys.byteorder == "little"
_BITS_AS_ASCII = bytes.maketrans(b"\x00\x01", b"01")


class _Slot(NamedTuple):
    """Where one point's value is stored and how it is encoded (a tuple: one per point, so
    hundreds of thousands at site scale)."""

    table: Table | None  # None: the shared register array; else the bit table
    address: int
    width: int
    scale: int
    signed: bool


_WRITE_TABLES = (Table.COIL, Table.HOLDING)


class ImageView(Protocol):
    """What request handling reads and plans writes with: the image, or one unit's window."""

    @property
    def word_order(self) -> WordOrder: ...

    def read_registers(self, table: Table, address: int, count: int) -> bytes | None: ...

    def read_bits(self, table: Table, address: int, count: int) -> bytes | None: ...

    def writable_cell(self, table: Table, address: int) -> Cell | None: ...


class RegisterImage:
    """Values, readable ranges and writable cells of all four tables.

    `size` is the number of addresses: 65536, what one Modbus device has, unless an addressing
    mode spreads the points over several unit ids (then each unit reads a `window`).
    """

    def __init__(
        self, points: Sequence[ResolvedPoint], *, word_order: WordOrder, size: int = ADDRESS_SPACE
    ) -> None:
        self._order = word_order
        self._size = size
        self._registers = array("H", bytes(2 * size))
        self._bits = {t: bytearray(size) for t in BIT_TABLES}
        self._readable = {t: bytearray(size) for t in Table}
        for block in readable_blocks(points, space=size):
            r = block.addresses
            self._readable[block.table][r.start : r.stop] = b"\x01" * len(r)
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._writable: dict[tuple[Table, int], Cell] = {}
        readable = self._readable
        for rp in points:
            spec = rp.point.modbus
            address = rp.modbus_address
            if spec is None or address is None:
                continue
            tables = tables_of(rp.point)  # the same placement as `cells`, one point at a time
            width, end = spec.width, address + spec.width
            table = None if spec.kind is ModbusKind.REGISTER else tables[0]
            self._slots[(rp.sensor_id, rp.key)] = _Slot(
                table, address, width, spec.scale, spec.signed
            )
            for t in tables:
                # A point is readable even if it lies outside its template's block.
                readable[t][address:end] = b"\x01" * width
                if rp.writable and t in _WRITE_TABLES:
                    self._writable[(t, address)] = Cell(t, address, rp)

    @property
    def word_order(self) -> WordOrder:
        return self._order

    # -- updates ----------------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """A state subscriber: store the changed values (freshness shows in the status word)."""
        self.load(change.sensor_id, change.values)

    def load(self, sensor_id: str, values: Mapping[str, float]) -> None:
        """Store one sensor's values ("" = the gateway); keys without a Modbus point are skipped."""
        for key, value in values.items():
            slot = self._slots.get((sensor_id, key))
            if slot is None:
                continue
            if slot.table is not None:
                self._bits[slot.table][slot.address] = 1 if value else 0
                continue
            words = encode(
                float(value),
                width=slot.width,
                scale=slot.scale,
                signed=slot.signed,
                order=self._order,
            )
            self._registers[slot.address : slot.address + slot.width] = array("H", words)

    # -- requests ---------------------------------------------------------------------------

    def readable(self, table: Table, address: int, count: int) -> bool:
        """Whether every address of the range lies in a readable block."""
        end = address + count
        return end <= self._size and self._readable[table].find(0, address, end) == -1

    def read_registers(self, table: Table, address: int, count: int) -> bytes | None:
        """The registers as big-endian bytes, or None if any address is outside every block."""
        if not self.readable(table, address, count):
            return None
        words = self._registers[address : address + count]
        if _SWAP_TO_BIG_ENDIAN:
            words.byteswap()
        return words.tobytes()

    def read_bits(self, table: Table, address: int, count: int) -> bytes | None:
        """The bits packed as Modbus sends them (first bit in the lowest bit of the first byte)."""
        if not self.readable(table, address, count):
            return None
        bits = self._bits[table][address : address + count]
        packed = int(bits[::-1].translate(_BITS_AS_ASCII), 2)
        return packed.to_bytes((count + 7) // 8, "little")

    def writable_cell(self, table: Table, address: int) -> Cell | None:
        """The writable point that starts at this address, if any."""
        return self._writable.get((table, address))

    def window(self, base: int, span: int) -> ImageWindow:
        """Addresses base..base + span - 1 seen as 0..span - 1 (one unit id's registers)."""
        return ImageWindow(self, base, span)


class ImageWindow:
    """A unit's view of the image: its own addresses from 0, nothing past its span readable,
    so a read can never spill into the next unit's registers."""

    def __init__(self, image: RegisterImage, base: int, span: int) -> None:
        self._image = image
        self._base = base
        self._span = span

    @property
    def word_order(self) -> WordOrder:
        return self._image.word_order

    def read_registers(self, table: Table, address: int, count: int) -> bytes | None:
        if address + count > self._span:
            return None
        return self._image.read_registers(table, self._base + address, count)

    def read_bits(self, table: Table, address: int, count: int) -> bytes | None:
        if address + count > self._span:
            return None
        return self._image.read_bits(table, self._base + address, count)

    def writable_cell(self, table: Table, address: int) -> Cell | None:
        if address >= self._span:
            return None
        cell = self._image.writable_cell(table, self._base + address)
        return None if cell is None else replace(cell, address=cell.address - self._base)
