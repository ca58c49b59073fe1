"""The objects' identifiers, built without bacpypes3's generic element call, are the very
identifiers bacpypes3 builds: same type, value, hash, text and encoding."""

from __future__ import annotations

import pytest
from bacpypes3.primitivedata import ObjectIdentifier
from bacpypes3.primitivedata import ObjectType as BacnetObjectType

from gateway.bacnet.objects import PROFILES, identifier


@pytest.mark.parametrize("bacnet_type", sorted({p.bacnet_type for p in PROFILES.values()}))
@pytest.mark.parametrize("instance", [0, 1, 2_499_501, 4_194_000, 4_194_302])
def test_the_fast_identifier_is_bacpypes3s_identifier(bacnet_type: str, instance: int) -> None:
    kind = BacnetObjectType(bacnet_type)
    fast = identifier(kind, instance)
    stock = ObjectIdentifier((bacnet_type, instance))
    assert type(fast) is type(stock)
    assert fast == stock
    assert hash(fast) == hash(stock)
    assert str(fast) == str(stock) == f"{bacnet_type},{instance}"
    assert [t.tag_data for t in fast.encode().tagList] == [
        t.tag_data for t in stock.encode().tagList
    ]
    assert isinstance(fast[0], BacnetObjectType)
    assert {stock: 1}[fast] == 1
