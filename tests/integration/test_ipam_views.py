"""Views for scale (issue 10.3, store side): the scheduler's pool view in one script
call, statistics from counters the scripts keep (no record scan), retained
reservations due for expiry from an index, and a bounded, resumable record scan."""

from __future__ import annotations

import pytest

from ipam import (
    PoolSpec,
    RedisIpam,
    ReservationKey,
    ephemeral_owner,
)
from ipam.models import NodeFailurePolicy

A = PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28)
B6 = PoolSpec(name="b6", cidr="fd00:20::/64", block_size=124)


@pytest.fixture
async def busy(ipam: RedisIpam) -> RedisIpam:
    await ipam.apply_pools([A, B6])
    for i in range(5):
        await ipam.allocate(pools=["pool-a", "b6"], node="n1", owner=ephemeral_owner(f"a{i}"))
    await ipam.allocate(pool="pool-a", node="n2", owner=ephemeral_owner("b0"))
    k = ReservationKey.of("prod", "db", 0)
    await ipam.claim(k, pools=["pool-a", "b6"], node="n2", holder="u",
                     policy=NodeFailurePolicy.WAIT)
    await ipam.claim(ReservationKey.of("prod", "db", 1), pool="pool-a", retain=60, now=100)
    await ipam.retain_reservation(ReservationKey.of("prod", "db", 1), now=100)
    await ipam.claim(ReservationKey.of("prod", "db", 2), pool="b6", node="n3", retain=10,
                     now=100)
    await ipam.retain_reservation(ReservationKey.of("prod", "db", 2), now=100)
    return ipam


async def test_the_address_view_is_one_call(busy: RedisIpam) -> None:
    await busy.address_view("pool-a")  # the pool and the script are known, as usual
    sent: list[tuple[object, ...]] = []
    real = busy.redis.execute_command

    async def counting(*args: object, **kw: object) -> object:
        sent.append(args)
        return await real(*args, **kw)

    busy.redis.execute_command = counting  # type: ignore[method-assign]
    try:
        view = await busy.address_view("pool-a")
    finally:
        del busy.redis.execute_command
    assert [a[0] for a in sent] == ["EVALSHA"]
    # n1: block 0 (16 - 1 excluded - 5 held), n2: block 1 (16 - 2 held)
    assert view.free_in_node_blocks == {"n1": 10, "n2": 14}
    assert view.unclaimed_blocks == 14
    assert view.free_total == 256 - 2 - 7
    assert view.status().free == view.free_total


async def test_statistics_come_from_counters(busy: RedisIpam) -> None:
    await busy.heartbeat("n1", now=7.0)
    await busy.fence_node("n3", now=9.0)
    st = await busy.stats()
    assert st.records == {"ephemeral": 6, "bound": 1, "retained": 2}
    pools = {p.pool: p for p in st.pools}
    assert pools["pool-a"].records == {"ephemeral": 6, "bound": 1, "retained": 1}
    assert pools["b6"].records == {"ephemeral": 5, "bound": 1, "retained": 1}
    assert (pools["pool-a"].used, pools["pool-a"].blocks_claimed) == (7, 2)
    assert pools["b6"].free == 2**64 - 2 - 7
    assert st.homes == {"n1": {"ephemeral": 5}, "n2": {"ephemeral": 1, "wait": 1},
                        "n3": {"migrate": 1}}
    assert (st.heartbeats, st.fenced) == ({"n1": 7.0}, {"n3": 9.0})
    light = await busy.stats(nodes=False)
    assert light.records == st.records and light.pools == st.pools
    assert (light.homes, light.heartbeats, light.fenced) == ({}, {}, {})


async def test_statistics_once_the_block_cursor_is_past_nine(ipam: RedisIpam) -> None:
    # The pool's counters hash also holds the next-block cursor, in hex: with twelve
    # nodes it reads '0c' (a letter), and the statistics still count every address.
    await ipam.apply_pools([A])
    for n in range(12):
        await ipam.allocate(pool="pool-a", node=f"n{n}", owner=ephemeral_owner(f"c{n}"))
    st = await ipam.stats()
    pool = st.pools[0]
    assert (pool.used, pool.blocks_claimed, pool.records) == (12, 12, {"ephemeral": 12})


async def test_expiry_comes_from_an_index(busy: RedisIpam) -> None:
    assert await busy.expired(now=105) == []
    assert await busy.expired(now=110) == ["sts/prod/db/2"]
    assert sorted(await busy.expired(now=500)) == ["sts/prod/db/1", "sts/prod/db/2"]
    assert await busy.expired(now=500, limit=1) in (["sts/prod/db/1"], ["sts/prod/db/2"])
    assert await busy.expire_reservation(ReservationKey.of("prod", "db", 2), now=110)
    assert await busy.expired(now=500) == ["sts/prod/db/1"]
    # reactivated: no longer due
    await busy.claim(ReservationKey.of("prod", "db", 1), pool="pool-a", now=120)
    assert await busy.expired(now=500) == []


async def test_the_record_scan_is_bounded_and_resumable(busy: RedisIpam) -> None:
    for i in range(300):
        await busy.allocate(pool="b6", node="n4", owner=ephemeral_owner(f"s{i}"))
    seen: list[str] = []
    cursor, pages = 0, 0
    while True:
        cursor, page = await busy.scan_records(cursor, count=50)
        assert len(page) <= 120  # about count per page, never the whole store
        seen.extend(x.owner for x in page)
        pages += 1
        if cursor == 0:
            break
    assert pages > 3
    assert len(set(seen)) == 309
