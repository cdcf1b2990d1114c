"""Ephemeral leases and block affinity against a real redis-server."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from ipam import (
    PoolExhausted,
    PoolNotFound,
    PoolSpec,
    RedisIpam,
    check_and_repair,
    ephemeral_owner,
)


async def test_leases_come_from_the_nodes_own_block(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    a = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c1"))
    b = await ipam.allocate(pool="pool-a", node="n2", owner=ephemeral_owner("c2"))
    c = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c3"))
    blocks = {blk.node: blk.cidr for blk in await ipam.blocks("pool-a")}
    assert a.address in blocks["n1"] and c.address in blocks["n1"]
    assert b.address in blocks["n2"]
    assert blocks["n1"] != blocks["n2"]
    # the pool's own first address is excluded by default
    assert a.address == ipaddress.IPv4Address("10.20.0.1")


async def test_retry_of_the_same_owner_never_allocates_twice(ipam: RedisIpam,
                                                             pool_a: PoolSpec) -> None:
    owner = ephemeral_owner("retry")
    first = await ipam.allocate(pool="pool-a", node="n1", owner=owner)
    again = await asyncio.gather(*(ipam.allocate(pool="pool-a", node="n1", owner=owner)
                                   for _ in range(20)))
    assert {x.address for x in again} == {first.address}
    assert (await ipam.pool_status("pool-a")).used == 1


async def test_full_block_claims_a_new_one(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    # block 0 of a /28-cut /24 has 15 usable addresses (10.20.0.0 excluded)
    leases = [await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner(f"c{i}"))
              for i in range(16)]
    assert len({x.address for x in leases}) == 16
    assert [b.index for b in await ipam.blocks("pool-a")] == [0, 1]
    assert leases[-1].address == ipaddress.IPv4Address("10.20.0.16")


async def test_exhausted_pool_borrows_then_refuses_clearly(ipam: RedisIpam) -> None:
    await ipam.apply_pool(PoolSpec(name="tiny", cidr="10.9.0.0/28", block_size=29))
    # 16 addresses, 2 excluded, two /29 blocks
    n1 = [await ipam.allocate(pool="tiny", node="n1", owner=ephemeral_owner(f"a{i}"))
          for i in range(7)]
    n2 = [await ipam.allocate(pool="tiny", node="n2", owner=ephemeral_owner(f"b{i}"))
          for i in range(7)]
    assert len({x.address for x in n1 + n2}) == 14
    await ipam.release(pool="tiny", owner=n2[0].owner)
    # no free block left: n1 borrows n2's free address as a migrated /32
    borrowed = await ipam.allocate(pool="tiny", node="n1", owner=ephemeral_owner("x"))
    assert borrowed.address == n2[0].address
    view = await ipam.routing_view()
    assert [(m.address, m.node) for m in view.migrated] == [(borrowed.address, "n1")]
    with pytest.raises(PoolExhausted, match="no free address left"):
        await ipam.allocate(pool="tiny", node="n3", owner=ephemeral_owner("y"))
    assert await check_and_repair(ipam) == []


async def test_release_is_idempotent_and_frees(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    owner = ephemeral_owner("c1")
    lease = await ipam.allocate(pool="pool-a", node="n1", owner=owner)
    assert (await ipam.release(pool="pool-a", owner=owner)) is not None
    assert (await ipam.release(pool="pool-a", owner=owner)) is None
    assert await ipam.owner_of(str(lease.address)) is None
    again = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c2"))
    assert again.address == lease.address


async def test_unknown_pool_is_a_clear_error(ipam: RedisIpam) -> None:
    with pytest.raises(PoolNotFound, match="stickyip pool list"):
        await ipam.allocate(pool="nope", node="n1", owner=ephemeral_owner("c1"))


async def test_concurrent_allocations_from_many_clients_are_unique(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    results = await asyncio.gather(*(
        ipam.allocate(pool="pool-a", node=f"n{i % 4}", owner=ephemeral_owner(f"c{i}"))
        for i in range(200)))
    assert len({r.address for r in results}) == 200
    assert await check_and_repair(ipam) == []


async def test_audit_trail_records_who_when_and_epoch(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    owner = ephemeral_owner("c1")
    lease = await ipam.allocate(pool="pool-a", node="n1", owner=owner, now=1000.0)
    await ipam.release(pool="pool-a", owner=owner, now=1001.0)
    hist = await ipam.history(str(lease.address))
    assert [(h.op, h.owner, h.node, h.epoch, h.at, h.actor) for h in hist] == [
        ("release", owner, "n1", 1, 1001.0, "test"),
        ("allocate", owner, "n1", 1, 1000.0, "test"),
    ]


async def test_owners_of_many_addresses_at_once(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    a = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c1"))
    got = await ipam.owners_of("pool-a", [str(a.address), "10.20.0.200"])
    assert got[a.address] is not None and got[a.address].owner == a.owner  # type: ignore[union-attr]
    assert got[ipaddress.IPv4Address("10.20.0.200")] is None
    assert await ipam.owners_of("pool-a", []) == {}


async def test_free_addresses_per_node_block(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    for i in range(3):
        await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner(f"a{i}"))
    await ipam.allocate(pool="pool-a", node="n2", owner=ephemeral_owner("b0"))
    # n1's block 0 lost 10.20.0.0 to the default exclusion: 16 - 1 - 3
    assert await ipam.free_in_node_blocks("pool-a") == {"n1": 12, "n2": 15}
