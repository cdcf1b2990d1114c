"""After the store restarts (or a replica is promoted), it may lack reservations that
running pods hold: once reconciliation has run against a store, a new server process
hands out no new address until the next reconciliation opens it again. What does not
take a new address goes on: reads, retries of earlier allocations, binding an
existing reservation, dry runs, and restoring a running pod's reservation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ipam import PoolSpec, RedisIpam, ReservationKey, ephemeral_owner
from ipam.errors import AllocationPaused
from tests.support.redis_server import RedisServer


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    with RedisServer() as s:
        yield s


async def restart(server: RedisServer, ipam: RedisIpam) -> RedisIpam:
    await ipam.aclose()
    server.stop()
    server.start()
    return RedisIpam(aioredis.Redis.from_url(server.url), actor="test")


async def test_never_reconciled_the_store_stays_open(server: RedisServer) -> None:
    ipam = RedisIpam(aioredis.Redis.from_url(server.url), actor="test")
    await ipam.apply_pool(PoolSpec(name="p", cidr="10.20.0.0/24", block_size=28))
    ipam = await restart(server, ipam)
    assert not await ipam.allocation_paused()
    assert (await ipam.allocate(pool="p", node="n1", owner=ephemeral_owner("c1"))).address
    await ipam.aclose()


async def test_a_restarted_store_pauses_new_addresses_until_reconciled(
        server: RedisServer) -> None:
    ipam = RedisIpam(aioredis.Redis.from_url(server.url), actor="test")
    await ipam.apply_pool(PoolSpec(name="p", cidr="10.20.0.0/24", block_size=28))
    k0, k1 = ReservationKey.parse("ns/db/0"), ReservationKey.parse("ns/db/1")
    first = await ipam.allocate(pool="p", node="n1", owner=ephemeral_owner("c1"))
    await ipam.claim(k0, pool="p", node="n1")
    run_id = await ipam.open_allocation()
    assert not await ipam.allocation_paused()

    ipam = await restart(server, ipam)
    assert await ipam.allocation_paused()
    with pytest.raises(AllocationPaused, match="reconciled with the running pods"):
        await ipam.allocate(pool="p", node="n1", owner=ephemeral_owner("c2"))
    with pytest.raises(AllocationPaused):
        await ipam.claim(k1, pool="p", node="n1")
    with pytest.raises(AllocationPaused):
        await ipam.claim(k1, pool="p", address="10.20.0.9")
    # what takes no new address goes on
    again = await ipam.allocate(pool="p", node="n1", owner=ephemeral_owner("c1"))
    assert again.address == first.address, "a retry of an earlier allocation"
    bound = await ipam.claim(k0, pool="p", node="n1", holder="u0")
    assert bound.holder == "u0"
    assert (await ipam.claim(k1, pool="p", node="n1", dry_run=True)).address is not None
    restored = await ipam.claim(k1, pool="p", address="10.20.0.9", node="n1", holder="u1",
                                restore=True, epoch=4)
    assert str(restored.address) == "10.20.0.9"
    assert restored.epoch == 4, "a restored record keeps the epoch its pod runs at"
    again_restored = await ipam.claim(k1, pool="p", address="10.20.0.9", node="n1",
                                      holder="u1", restore=True, epoch=9)
    assert again_restored.epoch == 4, "an existing record's epoch is never rewritten"
    assert await ipam.lease(owner=ephemeral_owner("c2")) is None, "nothing was written"

    assert await ipam.open_allocation() != run_id
    assert not await ipam.allocation_paused()
    assert (await ipam.allocate(pool="p", node="n1", owner=ephemeral_owner("c2"))).address
    await ipam.aclose()
