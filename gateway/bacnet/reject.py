"""Which Reject a malformed confirmed request gets (ASHRAE 135 clause 18.8).

bacpypes3 answers a request it cannot decode with Abort(other) and quietly ignores arguments
past the end of a service's parameters; a BACnet device rejects both, naming the reason, as
bacnet-stack's server does:
- no service data at all, or parameters cut short: missing-required-parameter;
- tags that cannot be parsed: invalid-tag;
- a complete request followed by more: too-many-arguments.
"""

from __future__ import annotations

from typing import Any

from bacpypes3.apdu import APCISequence, ConfirmedRequestPDU
from bacpypes3.pdu import PDUData
from bacpypes3.primitivedata import Tag, TagClass


def reject_reason(service: int, data: bytes, decoded: Any) -> str | None:
    """The reject reason for a request's service data, or None when it is well formed.
    `decoded` is what bacpypes3 made of it (None if it could not decode it)."""
    if decoded is None and not data:
        return "missingRequiredParameter"
    bounds = _tag_bounds(data)
    if bounds is None:
        return "invalidTag"
    if decoded is not None:
        try:
            again = bytes(decoded.encode().pduData)
        except Exception:  # a value bacpypes3 cannot re-encode: leave the request be
            return None
        counted = _tag_bounds(again)
        if counted is not None and len(bounds) > len(counted):
            return "tooManyArguments"
        return None
    for end in reversed(bounds[:-1]):
        if _decodes(service, data[:end]):
            return "tooManyArguments"
    return "missingRequiredParameter"


def _tag_bounds(data: bytes) -> list[int] | None:
    """Offsets just after each tag at nesting depth 0, or None if the tags do not parse."""
    pdu = PDUData(data)
    bounds: list[int] = []
    depth = 0
    try:
        while pdu.pduData:
            tag = Tag.decode(pdu)
            if tag.tag_class == TagClass.opening:
                depth += 1
            elif tag.tag_class == TagClass.closing:
                depth -= 1
                if depth < 0:
                    return None
            if depth == 0:
                bounds.append(len(data) - len(pdu.pduData))
    except Exception:  # truncated or impossible tags
        return None
    return bounds if depth == 0 else None


def _decodes(service: int, data: bytes) -> bool:
    request = ConfirmedRequestPDU()
    request.apduService = service
    request.apduInvokeID = 0
    request.put_data(data)
    try:
        APCISequence.decode(request)
    except Exception:  # bacpypes3 raises many kinds for bad input
        return False
    return True
