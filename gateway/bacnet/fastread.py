"""Fast ReadProperty and ReadPropertyMultiple: the common request shapes answered from bytes.

A BMS polls Present_Value and Status_Flags of thousands of objects, over and over. Through
bacpypes3's generic path every poll decodes the request into objects, builds one value object
per property (about 7-20 µs each) and encodes the reply object by object: 13 ms for 50 present
values, during which the event loop serves nothing else. Here the request's service data is
parsed in place and the reply is assembled from pre-encoded pieces:

- the identity properties (name, type, units, description, ...) are encoded once, by bacpypes3,
  and kept;
- Present_Value, Status_Flags and Reliability are encoded from the object's current state by
  the few-byte encoders below (a REAL, an ENUMERATED, a 4-bit BIT STRING), checked byte for byte
  against bacpypes3's encoding of the same value the first time each object type serves each
  property (and in tests, for every object of the catalog in every state);
- any other property is read and encoded through bacpypes3, as the slow path would.

Anything the fast path does not fully understand (segmented requests, ALL/REQUIRED/OPTIONAL,
unknown objects or properties, an error for any element, objects that are not point objects
except the device's Object_List by index) returns None and goes through the normal bacpypes3
path, so new properties and services keep working. Only the service data of the reply is
built here: the plainest requests are then sent straight from the socket (fastlink.py), the rest
through bacpypes3's link, network, transaction and segmentation layers.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bacpypes3.basetypes import PropertyIdentifier
from bacpypes3.errors import ExecutionError

from gateway.bacnet.eventstate import in_alarm
from gateway.bacnet.objects import PointObject

log = logging.getLogger("gateway.bacnet")

WILDCARD_DEVICE = 4194303
READ_PROPERTY = 12
READ_PROPERTY_MULTIPLE = 14
OBJECT_LIST = 76
_DEVICE_TYPE = 8
_SPECIAL_PROPERTIES = frozenset({8, 80, 105})  # all, optional, required
MAX_PLANS = 2048  # remembered request shapes: a full poll of 1,000 sensors needs about 900
MAX_PIECES = 400_000  # remembered property encoders (Present_Value and flags of 200,000 objects)

# Values that never change while the gateway runs: encoded once per object.
STATIC_PROPERTIES = frozenset(
    {
        "objectIdentifier",
        "objectName",
        "objectType",
        "description",
        "units",
        "polarity",
        "propertyList",
        "minPresValue",
        "maxPresValue",
    }
)

_pack_float = struct.Struct("!f").pack
_pack_objid = struct.Struct("!I").pack


# -- encoders (ASHRAE 135 clause 20.2) ----------------------------------------------------------


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def context_unsigned(tag: int, value: int) -> bytes:
    raw = _uint_bytes(value)
    return bytes([(tag << 4) | 0x08 | len(raw)]) + raw


def application_enumerated(value: int) -> bytes:
    raw = _uint_bytes(value)
    return bytes([0x90 | len(raw)]) + raw


def application_unsigned(value: int) -> bytes:
    raw = _uint_bytes(value)
    return bytes([0x20 | len(raw)]) + raw


def application_real(value: float) -> bytes:
    return b"\x44" + _pack_float(value)


# BIT STRING of 4 bits (in-alarm, fault, overridden, out-of-service), 4 unused bits; indexed
# by the bits' value (0x80 in-alarm, 0x40 fault, 0x10 out-of-service).
_FLAGS = tuple(b"\x82\x04" + bytes([bits]) for bits in range(256))


def encode_value(value: Any) -> bytes:
    """Any bacpypes3 value, application-tagged, by bacpypes3 itself."""
    return bytes(value.encode().encode().pduData)


def _present_value(obj: PointObject) -> bytes | None:
    if obj.profile.analog:
        return application_real(float(obj.present()))
    if obj.profile.binary:
        return b"\x91\x01" if obj.present() else b"\x91\x00"
    return None


def _status_flags(obj: PointObject) -> bytes:
    bits = (0x80 if in_alarm(obj) else 0) | (0x40 if obj.fault else 0)
    return _FLAGS[bits | (0x10 if obj.out_of_service else 0)]


def _reliability(obj: PointObject) -> bytes:
    return application_enumerated(obj.reliability)


# Properties whose value follows the object's state, with their direct encoders.
DYNAMIC_ENCODERS: dict[str, Callable[[PointObject], bytes | None]] = {
    "presentValue": _present_value,
    "statusFlags": _status_flags,
    "reliability": _reliability,
}


# -- the reader --------------------------------------------------------------------------------


class FastReader:
    """Reply service data for RP/RPM requests that name only what it can answer from bytes."""

    def __init__(
        self,
        points: Iterable[PointObject],
        device_instance: int,
        object_list: Sequence[Any],
    ) -> None:
        self._by_raw = {raw_identifier(obj.identifier): obj for obj in points}
        self._device_raw = (_DEVICE_TYPE << 22) | device_instance
        self._object_list = [b"\xc4" + _pack_objid(raw_identifier(o)) for o in object_list]
        self._pieces: dict[tuple[int, int, int | None], Piece] = {}
        self._plans: dict[bytes, list[Piece]] = {}
        self._attrs: dict[int, str | None] = {}
        self._agrees: dict[tuple[str, str], bool] = {}  # (type, property): encoder is right

    # -- requests -------------------------------------------------------------------------------

    def read_property(self, data: bytes) -> bytes | None:
        """ReadProperty-ACK service data, or None to leave the request to bacpypes3."""
        plan = self._plans.get(data)
        if plan is None:
            plan = self._plan_rp(data)
            if plan is None:
                return None
            self._remember(data, plan)
        return _assemble(plan)

    def read_property_multiple(self, data: bytes) -> bytes | None:
        """ReadPropertyMultiple-ACK service data, or None to leave the request to bacpypes3."""
        plan = self._plans.get(data)
        if plan is None:
            plan = self._plan_rpm(data)
            if plan is None:
                return None
            self._remember(data, plan)
        return _assemble(plan)

    # -- plans: a request's reply as constant bytes and value encoders ---------------------------

    def _remember(self, data: bytes, plan: list[Piece]) -> None:
        # A BMS repeats the same few requests; a bounded memory of them saves parsing.
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()
        self._plans[data] = plan

    def _plan_rp(self, data: bytes) -> list[Piece] | None:
        parsed = _parse_rp(data)
        if parsed is None:
            return None
        requested, prop, index = parsed
        raw = self._local(requested)
        value = self._piece(raw, prop, index)
        if value is None:
            return None
        head = b"\x0c" + _pack_objid(raw) + context_unsigned(1, prop)
        if index is not None:
            head += context_unsigned(2, index)
        return _merge([head + b"\x3e", value, b"\x3f"])

    def _plan_rpm(self, data: bytes) -> list[Piece] | None:
        specs = _parse_rpm(data)
        if specs is None:
            return None
        pieces: list[Piece] = []
        for requested, refs in specs:
            raw = self._local(requested)
            pieces.append(b"\x0c" + _pack_objid(raw) + b"\x1e")
            for prop, index in refs:
                value = self._piece(raw, prop, index)
                if value is None:
                    return None
                head = context_unsigned(2, prop)
                if index is not None:
                    head += context_unsigned(3, index)
                pieces += [head + b"\x4e", value, b"\x4f"]
            pieces.append(b"\x1f")
        return _merge(pieces)

    # -- values ---------------------------------------------------------------------------------

    def _local(self, raw: int) -> int:
        # Device instance 4194303 stands for the device that receives the request (15.5.2).
        return self._device_raw if raw == (_DEVICE_TYPE << 22) | WILDCARD_DEVICE else raw

    def _piece(self, raw: int, prop: int, index: int | None) -> Piece | None:
        """The value's encoding: constant bytes, or a function giving the current bytes."""
        key = (raw, prop, index)
        piece = self._pieces.get(key)
        if piece is None:
            piece = self._new_piece(raw, prop, index)
            if piece is not None:
                if len(self._pieces) >= MAX_PIECES:
                    self._pieces.clear()
                self._pieces[key] = piece
        return piece

    def _new_piece(self, raw: int, prop: int, index: int | None) -> Piece | None:
        if prop in _SPECIAL_PROPERTIES:
            return None
        obj = self._by_raw.get(raw)
        if obj is None:
            if raw == self._device_raw and prop == OBJECT_LIST and index is not None:
                return self._object_list_element(index)
            return None
        attr = self._attr(prop)
        if attr is None or attr not in obj.properties:
            return None
        try:
            if index is None and attr in STATIC_PROPERTIES:
                return encode_value(obj.read(attr))
            encoder = DYNAMIC_ENCODERS.get(attr) if index is None else None
            if encoder is not None and self._fast_encoder_agrees(obj, attr, encoder):
                return functools.partial(encoder, obj)  # type: ignore[return-value]
            encode_value(obj.read(attr, index))  # raises now if it cannot be read at all
            return functools.partial(_library_encoding, obj, attr, index)
        except ExecutionError:
            return None  # the slow path answers with the error

    def _fast_encoder_agrees(
        self, obj: PointObject, attr: str, encoder: Callable[[PointObject], bytes | None]
    ) -> bool:
        """Whether `encoder` serves this object type's `attr`; checked against bacpypes3 the
        first time each type serves it, so a changed datatype is never sent wrong."""
        kind = (obj.profile.bacnet_type, attr)
        agrees = self._agrees.get(kind)
        if agrees is None:
            value = encoder(obj)
            expected = encode_value(obj.read(attr))
            agrees = self._agrees[kind] = value == expected
            if value is not None and not agrees:
                log.warning(
                    "BACnet: fast encoding of %s %s differs from the library's (%s, not %s); "
                    "served the slow way",
                    kind[0],
                    attr,
                    expected.hex(),
                    value.hex(),
                )
        return agrees

    def _object_list_element(self, index: int) -> bytes | None:
        if index == 0:
            return application_unsigned(len(self._object_list))
        if 1 <= index <= len(self._object_list):
            return self._object_list[index - 1]
        return None

    def _attr(self, prop: int) -> str | None:
        try:
            return self._attrs[prop]
        except KeyError:
            pass
        try:
            attr: str | None = str(PropertyIdentifier(prop).attr)
        except (ValueError, TypeError, AttributeError):
            attr = None
        self._attrs[prop] = attr
        return attr


Piece = bytes | Callable[[], bytes]


def _library_encoding(obj: PointObject, attr: str, index: int | None) -> bytes:
    return encode_value(obj.read(attr, index))


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Adjacent constant bytes joined: fewer pieces to assemble per request."""
    out: list[Piece] = []
    run: list[bytes] = []
    for piece in pieces:
        if piece.__class__ is bytes:
            run.append(piece)
        else:
            if run:
                out.append(b"".join(run))
                run = []
            out.append(piece)
    if run:
        out.append(b"".join(run))
    return out


def _assemble(plan: list[Piece]) -> bytes | None:
    try:
        return b"".join([p if p.__class__ is bytes else p() for p in plan])  # type: ignore[operator]
    except ExecutionError:
        return None


def raw_identifier(objid: Any) -> int:
    """The 32-bit encoding of a bacpypes3 ObjectIdentifier (type << 22 | instance)."""
    return (_type_number(objid[0]) << 22) | int(objid[1])


@functools.cache
def _type_number(object_type: Any) -> int:
    return int(object_type)


# -- request parsing (only the shapes the fast path serves) ------------------------------------


def _context_uint(data: bytes, at: int, tag: int) -> tuple[int, int] | None:
    """A context-tagged unsigned of `tag` at `at`: (value, next offset), or None."""
    if at >= len(data):
        return None
    head = data[at]
    length = head & 0x07
    if head >> 4 != tag or not head & 0x08 or not 1 <= length <= 4:
        return None
    end = at + 1 + length
    if end > len(data):
        return None
    return int.from_bytes(data[at + 1 : end], "big"), end


def _parse_rp(data: bytes) -> tuple[int, int, int | None] | None:
    if len(data) < 7 or data[0] != 0x0C:
        return None
    (raw,) = struct.unpack_from("!I", data, 1)
    prop = _context_uint(data, 5, 1)
    if prop is None:
        return None
    index = None
    at = prop[1]
    if at < len(data):
        idx = _context_uint(data, at, 2)
        if idx is None:
            return None
        index, at = idx
    if at != len(data):
        return None
    return raw, prop[0], index


def _parse_rpm(data: bytes) -> list[tuple[int, list[tuple[int, int | None]]]] | None:
    specs: list[tuple[int, list[tuple[int, int | None]]]] = []
    at, end = 0, len(data)
    while at < end:
        if at + 6 > end or data[at] != 0x0C or data[at + 5] != 0x1E:
            return None
        (raw,) = struct.unpack_from("!I", data, at + 1)
        at += 6
        refs: list[tuple[int, int | None]] = []
        while at < end and data[at] != 0x1F:
            prop = _context_uint(data, at, 0)
            if prop is None:
                return None
            at = prop[1]
            index = None
            if at < end and 0x19 <= data[at] <= 0x1C:  # [1] array index, 1-4 octets
                idx = _context_uint(data, at, 1)
                if idx is None:
                    return None
                index, at = idx
            refs.append((prop[0], index))
        if at >= end or not refs:
            return None
        at += 1  # the closing tag
        specs.append((raw, refs))
    return specs or None
