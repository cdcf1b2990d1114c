"""The change log (issue 10.1, store side): every routing or fencing mutation appends
its changes with a revision in the same script; a follower reads them with a blocking
read (no polling) and gets a Gap when the log was trimmed or the store is another
one (restart, lost writes). A follower applying the changes to its snapshot holds
what a fresh snapshot holds."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ipam import (
    ChangeOp,
    Gap,
    RedisIpam,
    ephemeral_owner,
    layout,
)
from ipam.connection import open_redis
from tests.support.pools import K0, V4
from tests.support.redis_server import RedisServer


async def blocked_readers(client: aioredis.Redis) -> int:
    listing = await client.client_list()
    return sum(1 for c in listing if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


async def test_changes_carry_what_a_follower_needs(dual: RedisIpam) -> None:
    snap = await dual.routing_snapshot()
    assert set(snap.pools) == {"v4", "v6"} and snap.revision == 1
    await dual.claim(K0, pools=["v4", "v6"], node="n1", holder="u")
    await dual.rehome_block(pool="v4", block=0, from_node="n1", to_node="n2")
    await dual.fence_node("n1", now=50.0)
    got = await dual.read_changes(snap.revision, identity=snap.identity, block_ms=0)
    assert not isinstance(got, Gap)
    assert [b.revision for b in got] == [2, 3, 4]
    claim, move, fence = got
    assert [(c.op, c.pool, str(c.cidr), c.node) for c in claim.changes] == [
        (ChangeOp.BLOCK_CLAIM, "v4", "10.20.0.0/28", "n1"),
        (ChangeOp.BLOCK_CLAIM, "v6", "fd00:20::/122", "n1")]
    ops = [c.op for c in move.changes]
    assert ops == [ChangeOp.BLOCK_MOVE, ChangeOp.MIG_SET, ChangeOp.RES_HOME]
    blk, mig, home = move.changes
    assert (blk.from_node, blk.node, blk.block) == ("n1", "n2", 0)
    # the IPv6 address stays in n1's block: routed to the new home as a /128, same epoch
    assert (mig.address, mig.node, mig.owner, mig.epoch) == (
        ipaddress.IPv6Address("fd00:20::1"), "n2", K0.owner, 2)
    assert (home.owner, home.node, home.epoch) == (K0.owner, "n2", 2)
    assert [str(a) for a in home.addresses] == ["10.20.0.1", "fd00:20::1"]
    assert [(c.op, c.node, c.at) for c in fence.changes] == [(ChangeOp.NODE_FENCE, "n1", 50.0)]
    for batch in got:
        snap.apply(batch)
    assert snap.state() == (await dual.routing_snapshot()).state()
    # nothing routing-relevant, nothing logged: an ephemeral lease in a claimed block
    rev = snap.revision
    await dual.allocate(pool="v4", node="n2", owner=ephemeral_owner("c"))
    assert await dual.read_changes(rev, identity=snap.identity, block_ms=0) == []


async def test_a_follower_blocks_on_the_server_until_a_change(dual: RedisIpam,
                                                              redis_url: str) -> None:
    snap = await dual.routing_snapshot()
    watcher, _ = await open_redis(redis_url)
    follower = RedisIpam(watcher)
    try:
        before = await dual.redis.info("commandstats")
        reading = asyncio.create_task(
            follower.read_changes(snap.revision, identity=snap.identity, block_ms=10_000))
        # wait until the follower's read is parked on the server
        for _ in range(500):
            if await blocked_readers(dual.redis):
                break
            await asyncio.sleep(0.01)
        assert await blocked_readers(dual.redis) == 1
        assert not reading.done()
        await dual.unfence_node("nobody")  # no change: stays parked
        await dual.fence_node("n9")
        got = await asyncio.wait_for(reading, 5.0)
        assert not isinstance(got, Gap)
        assert [c.op for b in got for c in b.changes] == [ChangeOp.NODE_FENCE]
        after = await dual.redis.info("commandstats")
        # one parked read and one quick look, not a polling loop
        calls = (after["cmdstat_xread"]["calls"]
                 - before.get("cmdstat_xread", {"calls": 0})["calls"])
        assert calls == 2
    finally:
        await follower.aclose()


async def test_an_idle_read_returns_empty_after_its_block_time(dual: RedisIpam) -> None:
    snap = await dual.routing_snapshot()
    got = await dual.read_changes(snap.revision, identity=snap.identity, block_ms=50)
    assert got == []


async def test_a_trimmed_log_is_a_gap(dual: RedisIpam) -> None:
    snap = await dual.routing_snapshot()
    for i in range(5):
        await dual.fence_node(f"n{i}")
    await dual.redis.xtrim(layout.LOG, maxlen=2, approximate=False)
    got = await dual.read_changes(snap.revision, identity=snap.identity, block_ms=0)
    assert isinstance(got, Gap) and "trimmed" in got.reason
    # a fresh snapshot follows on from there
    fresh = await dual.routing_snapshot()
    assert set(fresh.fenced) == {f"n{i}" for i in range(5)}
    assert await dual.read_changes(fresh.revision, identity=fresh.identity, block_ms=0) == []


async def test_a_follower_ahead_of_the_store_gets_a_gap(dual: RedisIpam) -> None:
    snap = await dual.routing_snapshot()
    got = await dual.read_changes(snap.revision + 3, identity=snap.identity, block_ms=0)
    assert isinstance(got, Gap) and "behind" in got.reason


@pytest.fixture
async def own_ipam(own_redis: RedisServer) -> AsyncIterator[RedisIpam]:
    client, _ = await open_redis(own_redis.url)
    store = RedisIpam(client)
    yield store
    await store.aclose()


async def test_a_restarted_store_is_a_gap_even_with_every_write_kept(
        own_redis: RedisServer, own_ipam: RedisIpam) -> None:
    await own_ipam.apply_pools([V4])
    await own_ipam.claim(K0, pool="v4", node="n1")
    snap = await own_ipam.routing_snapshot()
    own_redis.kill9()
    own_redis.start()  # AOF replay: same data, another server process
    fresh = await own_ipam.routing_snapshot()
    assert fresh.revision == snap.revision and fresh.state() == snap.state()
    assert fresh.identity != snap.identity
    got = await own_ipam.read_changes(snap.revision, identity=snap.identity, block_ms=0)
    assert isinstance(got, Gap) and "identity" in got.reason
