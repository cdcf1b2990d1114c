"""The home index: the sticky reservations of one node are read without walking the
store (failover reads only a gone node's records), kept by the same scripts as every
other counter, checked and rebuilt by 'ipam check --repair'."""

from __future__ import annotations

from ipam import (
    PoolSpec,
    RedisIpam,
    ReservationKey,
    check_and_repair,
    ephemeral_owner,
    layout,
)


async def homed(ipam: RedisIpam, node: str) -> list[str]:
    return sorted(r.owner for r in await ipam.homed_on(node))


async def hscans(ipam: RedisIpam) -> int:
    info = await ipam.redis.info("commandstats")
    return int(info.get("cmdstat_hscan", {}).get("calls", 0))


async def test_home_index_follows_every_move(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    await ipam.apply_pool(PoolSpec(name="six", cidr="fd00:20::/120", block_size=124))
    k = [ReservationKey.of("ns", "db", i) for i in range(4)]
    await ipam.claim(k[0], pool="pool-a", node="n1", holder="u0")
    await ipam.claim(k[1], pools=["pool-a", "six"], node="n1")
    await ipam.claim(k[2], pool="pool-a", node="n2", retain=60)
    await ipam.claim(k[3], pool="pool-a")  # no home yet
    await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c1"))
    before = await hscans(ipam)
    assert await homed(ipam, "n1") == [k[0].owner, k[1].owner]
    assert await homed(ipam, "n2") == [k[2].owner]
    assert await homed(ipam, "n") == [] and await homed(ipam, "n10") == []
    assert await hscans(ipam) == before, "read from the index, not a scan"

    await ipam.rehome_reservation(k[0], to_node="n2")
    assert await homed(ipam, "n1") == [k[1].owner]
    assert await homed(ipam, "n2") == [k[0].owner, k[2].owner]
    block = next(b for b in await ipam.blocks("pool-a") if b.node == "n2")
    await ipam.rehome_block(pool="pool-a", block=block.index, from_node="n2", to_node="n3")
    assert await homed(ipam, "n3") == [k[2].owner]
    await ipam.retain_reservation(k[2])
    assert await homed(ipam, "n3") == [k[2].owner], "retained still has its home"
    await ipam.release_reservation(k[1])
    assert await homed(ipam, "n1") == []
    assert await check_and_repair(ipam) == []


async def test_a_store_without_the_index_is_walked_then_repaired(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    for i in range(5):
        await ipam.claim(ReservationKey.of("ns", "db", i), pool="pool-a", node=f"n{i % 2}")
    # a store written before the index existed
    await ipam.redis.delete(layout.BYHOME)
    await ipam.redis.hdel(layout.LAYOUT, "byhome")
    before = await hscans(ipam)
    assert await homed(ipam, "n0") == [f"sts/ns/db/{i}" for i in (0, 2, 4)]
    assert await hscans(ipam) > before, "walked, since the index cannot be trusted"
    found = await check_and_repair(ipam)
    assert [f.kind for f in found] == ["store-counter-mismatch"]
    assert "home index" in found[0].detail
    assert all(f.repaired for f in await check_and_repair(ipam, repair=True))
    before = await hscans(ipam)
    assert await homed(ipam, "n1") == ["sts/ns/db/1", "sts/ns/db/3"]
    assert await hscans(ipam) == before
    assert await check_and_repair(ipam) == []
