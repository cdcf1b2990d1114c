"""The store is reached through Redis Sentinel URLs (a real sentinel process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ipam import InvalidRequest, PoolSpec, ephemeral_owner, open_ipam
from ipam.connection import parse_sentinel_url
from tests.support.redis_server import RedisServer, running_sentinel


def test_sentinel_urls_parse() -> None:
    t = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26380,10.0.0.2/mymaster/2"
                           "?sentinel_password=x")
    assert t.hosts == [("10.0.0.1", 26380), ("10.0.0.2", 26379)]
    assert (t.service, t.db, t.password, t.sentinel_password) == ("mymaster", 2, "s3cret", "x")
    for bad in ("redis+sentinel://h:1", "redis+sentinel:///svc", "redis+sentinel://h:x/svc"):
        with pytest.raises(InvalidRequest):
            parse_sentinel_url(bad)


@pytest.fixture
def sentinel() -> Iterator[tuple[RedisServer, int]]:
    with RedisServer() as master, running_sentinel(
            master, "sentinel down-after-milliseconds stickyip 5000",
            ready=("SENTINEL", "get-master-addr-by-name", "stickyip"), names=master,
            within=20) as port:
        yield master, port


async def test_allocation_through_sentinel(sentinel: tuple[RedisServer, int]) -> None:
    master, port = sentinel
    ipam = await open_ipam(f"redis+sentinel://127.0.0.1:{port}/stickyip")
    try:
        await ipam.apply_pool(PoolSpec(name="sent", cidr="10.60.0.0/24", block_size=28))
        lease = await ipam.allocate(pool="sent", node="n1", owner=ephemeral_owner("c1"))
        assert str(lease.address) == "10.60.0.1"
    finally:
        await ipam.aclose()
    # the write landed on the master the sentinel named
    ipam = await open_ipam(master.url)
    try:
        assert (await ipam.lease(pool="sent", owner=lease.owner)) is not None
    finally:
        await ipam.aclose()
