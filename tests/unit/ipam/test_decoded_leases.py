"""Leases decoded from store records are the very models pydantic would build: the
fast construction on the allocation path gives the same state as model_construct
and as full validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from ipam import Lease, LeaseAddress, PoolSpec, RedisIpam
from ipam.layout import PoolRef

V4 = PoolSpec(name="v4", cidr="10.20.0.0/16", block_size=26)
V6 = PoolSpec(name="v6", cidr="fd00:20::/64", block_size=122)
REFS = {p.name: PoolRef(spec=p, geo=p.geometry(), gen="g1") for p in (V4, V6)}

RECORDS: list[dict[str, Any]] = [
    {"owner": "eph/c1/eth0", "kind": "ephemeral", "node": "n1", "epoch": 1, "holder": "",
     "pod": "", "state": "bound", "retain": 0, "policy": "migrate", "expires": 0,
     "created": 1000.5, "updated": 1000.5, "ip4": {"p": "v4", "g": "g1", "b": "0003", "o": 5}},
    {"owner": "sts/ns/web/0", "kind": "sticky", "node": "n2", "epoch": 3, "holder": "uid-1",
     "pod": "web-0", "state": "bound", "retain": 86400, "policy": "wait", "expires": 0,
     "created": 1.0, "updated": 2.0, "ip4": {"p": "v4", "g": "g1", "b": "0001", "o": 1},
     "ip6": {"p": "v6", "g": "g1", "b": "0000000000000007", "o": 63}},
    {"owner": "sts/ns/web/1", "kind": "sticky", "node": "", "epoch": 1, "holder": "",
     "pod": "", "state": "retained", "retain": -1, "policy": "migrate", "expires": -1,
     "created": 1.0, "updated": 2.0, "ip4": {"p": "v4", "g": "g1"}},
]


def state(m: Any) -> tuple[Any, ...]:
    return (type(m), m.__dict__, m.__pydantic_fields_set__, m.__pydantic_extra__,
            m.__pydantic_private__)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["owner"])
def test_a_decoded_lease_is_the_model_pydantic_builds(record: dict[str, Any]) -> None:
    ipam = RedisIpam(aioredis.Redis())  # never connects: decoding is local
    fast = ipam._decode_with(REFS, json.dumps(record))
    slow = Lease.model_construct(**fast.__dict__)
    assert state(fast) == state(slow)
    for a, b in zip(fast.addresses, slow.addresses, strict=True):
        assert state(a) == state(LeaseAddress.model_construct(**b.__dict__))
    validated = Lease.model_validate(fast.model_dump())
    assert validated == fast and repr(validated) == repr(fast)
    assert fast.model_dump() == validated.model_dump()
    # the models stay usable as models: copies, frozen addresses
    assert fast.model_copy(update={"epoch": 9}).epoch == 9
    if fast.addresses:
        with pytest.raises(ValueError, match="frozen"):
            fast.addresses[0].block = 0  # type: ignore[misc]
