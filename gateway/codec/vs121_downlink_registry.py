"""The `Command` base class of the VS121 downlinks and the registry its subclasses join.

A command class declares its channel and type bytes and its fields, each annotated with a field
kind from `vs121_downlink_fields`; `register` records those kinds and files the class by JSON name
and by header. `Command` then validates, encodes, decodes and converts every registered command
the same way. The command classes themselves live in `vs121_downlink_commands` and register when
it is imported; `vs121_downlink` imports it, so the registry is full whenever that is loaded.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self, TypeVar

from gateway.codec.vs121_downlink_fields import FieldKind
from gateway.errors import EncodeError

_FIELDS: dict[type[Command], tuple[tuple[str, FieldKind], ...]] = {}
_BY_NAME: dict[str, type[Command]] = {}
_BY_HEADER: dict[bytes, type[Command]] = {}
COMMANDS: Final[Mapping[str, type[Command]]] = MappingProxyType(_BY_NAME)
"""Every command class by its JSON name (read-only)."""
COMMANDS_BY_HEADER: Final[Mapping[bytes, type[Command]]] = MappingProxyType(_BY_HEADER)
"""Every command class by its channel and type bytes (read-only)."""


def _not_allowed(command: str, field: str, value: object, kind: FieldKind) -> str:
    return f"{command}.{field}: {value!r} is not allowed; expected {kind.allowed}"


@dataclass(frozen=True, kw_only=True)
class Command:
    """One downlink command. Subclasses declare `NAME`, `HEADER` (channel and type bytes), any
    constant data bytes the guide puts first (`FIXED`), and fields annotated with their kind,
    in the order the guide lays them out."""

    NAME: ClassVar[str]
    HEADER: ClassVar[bytes]
    FIXED: ClassVar[bytes] = b""

    def __post_init__(self) -> None:
        if type(self) not in _FIELDS:
            raise TypeError(f"{type(self).__name__} is not a registered command")
        for name, kind in _FIELDS[type(self)]:
            value = getattr(self, name)
            if not kind.accepts(value):
                raise EncodeError(_not_allowed(self.NAME, name, value, kind))
        self._check()

    def _check(self) -> None:
        """Rules that tie fields together; raise EncodeError."""

    def encode(self) -> bytes:
        packed = self._packed()
        fields = _FIELDS[type(self)]
        return self.HEADER + self.FIXED + b"".join(kind.pack(packed[n]) for n, kind in fields)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"command": self.NAME}
        for name, kind in _FIELDS[type(self)]:
            obj[name] = kind.dump(getattr(self, name))
        return obj

    @classmethod
    def data_size(cls) -> int:
        """Data bytes after the channel and type."""
        return len(cls.FIXED) + sum(kind.width for _, kind in _FIELDS[cls])

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Self:
        if obj.get("command", cls.NAME) != cls.NAME:
            raise EncodeError(f"{cls.NAME}: got an object for command {obj['command']!r}")
        fields = _FIELDS[cls]
        names = [name for name, _ in fields]
        given = {key: value for key, value in obj.items() if key != "command"}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise EncodeError(
                f"{cls.NAME}: unknown field {', '.join(unknown)}; allowed: "
                f"{', '.join(names) or 'none'}"
            )
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in given]
        if missing:
            raise EncodeError(
                f"{cls.NAME}: missing field {', '.join(missing)}; required: {', '.join(required)}"
            )
        kwargs: dict[str, Any] = {}
        for name, kind in fields:
            if name in given:
                try:
                    kwargs[name] = kind.load(given[name])
                except (ValueError, TypeError):
                    raise EncodeError(_not_allowed(cls.NAME, name, given[name], kind)) from None
        return cls(**kwargs)

    @classmethod
    def from_data(cls, data: bytes) -> Self:
        """The command whose data bytes (after channel and type) are `data`.

        Raises ValueError for bytes that mean nothing, EncodeError for a value out of range."""
        if len(data) != cls.data_size():
            raise ValueError(f"{cls.NAME} has {cls.data_size()} data bytes, not {len(data)}")
        if data[: len(cls.FIXED)] != cls.FIXED:
            got = data[: len(cls.FIXED)].hex()
            raise ValueError(f"{cls.NAME}: expected {cls.FIXED.hex()}, got {got}")
        pos = len(cls.FIXED)
        values: dict[str, Any] = {}
        for name, kind in _FIELDS[cls]:
            try:
                values[name] = kind.unpack(data[pos : pos + kind.width])
            except ValueError as exc:
                raise ValueError(f"{cls.NAME}.{name}: {exc}") from None
            pos += kind.width
        return cls._from_packed(values)

    def _packed(self) -> dict[str, Any]:
        """Field values as the bytes hold them (overridden where they differ from the fields)."""
        return {name: getattr(self, name) for name, _ in _FIELDS[type(self)]}

    @classmethod
    def _from_packed(cls, values: dict[str, Any]) -> Self:
        return cls(**values)


_C = TypeVar("_C", bound=Command)


def register(cls: type[_C]) -> type[_C]:
    """Record the field kinds of command class `cls` and file it by name and header.

    Raises TypeError for a field without exactly one kind, a name or header already taken, or a
    header that is not two bytes."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: list[tuple[str, FieldKind]] = []
    for field in dataclasses.fields(cls):
        kinds = [
            m for m in getattr(hints[field.name], "__metadata__", ()) if isinstance(m, FieldKind)
        ]
        if len(kinds) != 1:
            raise TypeError(f"{cls.__name__}.{field.name} needs one field kind in Annotated[...]")
        fields.append((field.name, kinds[0]))
    if cls.NAME in _BY_NAME or cls.HEADER in _BY_HEADER or len(cls.HEADER) != 2:
        raise TypeError(f"{cls.__name__}: duplicate name or bad header")
    _FIELDS[cls] = tuple(fields)
    _BY_NAME[cls.NAME] = cls
    _BY_HEADER[cls.HEADER] = cls
    return cls
