"""Concurrent calls from one client ride one pipeline, and concurrent ALLOCATEs (and
RELEASEs) one many-calls EVALSHA: each call still gets exactly its own answer, its
own error, its own change-log revision, and a flushed script cache is reloaded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ipam import (
    Gap,
    PoolExhausted,
    PoolSpec,
    RedisIpam,
    StoreUnavailable,
    check_and_repair,
    ephemeral_owner,
)


def round_trips(ipam: RedisIpam, n: int) -> asyncio.Event:
    """An event set once the runner has ``n`` round trips in flight (it counts lone
    calls in begin(), pipelines in _flush())."""
    batcher = ipam.runner._batcher
    assert batcher is not None
    reached = asyncio.Event()

    def counting(orig: Any) -> Any:
        def counted(*a: Any, **k: Any) -> None:
            orig(*a, **k)
            if batcher.inflight >= n:
                reached.set()
        return counted

    for name in ("begin", "_flush"):
        setattr(batcher, name, counting(getattr(batcher, name)))
    return reached


async def evalsha_calls(ipam: RedisIpam) -> int:
    stats = await ipam.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_allocations_share_commands_and_get_their_own_leases(
        ipam: RedisIpam) -> None:
    await ipam.apply_pool(PoolSpec(name="wide", cidr="10.60.0.0/16", block_size=26))
    await ipam.allocate(pool="wide", node="n0", owner=ephemeral_owner("warm"))
    await ipam.redis.config_resetstat()
    owners = [ephemeral_owner(f"c{i}") for i in range(200)]
    leases = await asyncio.gather(*(ipam.allocate(pool="wide", node=f"n{i % 4}", owner=o)
                                    for i, o in enumerate(owners)))
    calls = await evalsha_calls(ipam)
    assert calls < 100, f"{calls} EVALSHA for 200 concurrent allocations: nothing was batched"
    assert [x.owner for x in leases] == owners
    assert len({x.address for x in leases}) == 200
    for i, lease in enumerate(leases):
        assert lease.node == f"n{i % 4}"
        again = await ipam.lease(owner=owners[i])
        assert again is not None and again.address == lease.address
    released = await asyncio.gather(*(ipam.release(owner=o) for o in owners))
    assert [x.address for x in released if x is not None] == [x.address for x in leases]
    assert (await ipam.pool_status("wide")).used == 1
    assert await check_and_repair(ipam) == []


async def test_each_call_of_a_batch_gets_its_own_answer_and_error(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("warm"))
    calls = []
    for i in range(30):
        calls.append(ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner(f"x{i % 10}")))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    by_owner: dict[str, set[str]] = {}
    for r in results:
        assert not isinstance(r, BaseException)
        by_owner.setdefault(r.owner, set()).add(str(r.address))
    # the same owner three times in one batch: one address, handed out once
    assert all(len(a) == 1 for a in by_owner.values()) and len(by_owner) == 10
    assert (await ipam.pool_status("pool-a")).used == 11
    # a call the store refuses fails alone: 20 concurrent claims on fewer addresses
    await ipam.apply_pool(PoolSpec(name="tiny", cidr="10.21.0.0/28", block_size=28))
    await ipam.allocate(pool="tiny", node="n1", owner=ephemeral_owner("t-warm"))
    free = (await ipam.pool_status("tiny")).free
    assert 0 < free < 20
    mixed = await asyncio.gather(
        *(ipam.allocate(pool="tiny", node="n1", owner=ephemeral_owner(f"t{i}"))
          for i in range(20)), return_exceptions=True)
    refused = [r for r in mixed if isinstance(r, BaseException)]
    assert len(refused) == 20 - free, refused
    assert all(isinstance(r, PoolExhausted) for r in refused), refused
    assert len({str(r.address) for r in mixed if not isinstance(r, BaseException)}) == free


async def test_a_flushed_script_cache_is_reloaded_for_batched_calls(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("warm"))
    await asyncio.gather(*(ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner(f"a{i}"))
                           for i in range(8)))
    await ipam.redis.script_flush()
    got = await asyncio.gather(*(ipam.allocate(pool="pool-a", node="n2",
                                               owner=ephemeral_owner(f"b{i}"))
                                 for i in range(8)))
    assert len({x.address for x in got}) == 8
    assert await check_and_repair(ipam) == []


async def test_batched_calls_each_log_their_own_revision(ipam: RedisIpam) -> None:
    await ipam.apply_pool(PoolSpec(name="wide", cidr="10.61.0.0/16", block_size=26))
    snap = await ipam.routing_snapshot()
    await ipam.allocate(pool="wide", node="warm", owner=ephemeral_owner("warm"))
    # ten nodes at once: each allocation claims a block, a change of its own
    await asyncio.gather(*(ipam.allocate(pool="wide", node=f"node-{i}",
                                         owner=ephemeral_owner(f"n{i}")) for i in range(10)))
    got = await ipam.read_changes(snap.revision, identity=snap.identity, block_ms=0)
    assert not isinstance(got, Gap)
    claims = [(b.revision, c.node) for b in got for c in b.changes if c.op == "block.claim"]
    assert sorted(n for _, n in claims) == sorted(["warm", *(f"node-{i}" for i in range(10))])
    revisions = [b.revision for b in got]
    assert len(revisions) == len(set(revisions)) == 11, "two calls shared one revision"


@pytest.mark.parametrize("replicas", [0])
async def test_unbatched_clients_give_the_same_answers(redis_url: str, replicas: int) -> None:
    from ipam.connection import open_redis

    client, _ = await open_redis(redis_url)
    plain = RedisIpam(client, actor="plain", batching=False, replicas=replicas)
    try:
        await plain.apply_pool(PoolSpec(name="wide", cidr="10.62.0.0/16", block_size=26))
        got = await asyncio.gather(*(plain.allocate(pool="wide", node="n1",
                                                    owner=ephemeral_owner(f"p{i}"))
                                     for i in range(20)))
        assert len({x.address for x in got}) == 20
    finally:
        await plain.aclose()


async def test_calls_made_while_round_trips_are_busy_leave_together(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    """Calls made one by one while the runner's round trips are in flight (here: on a
    paused store) wait, and leave together in one pipeline as soon as one of them is
    answered: one many-calls EVALSHA, not one command each."""
    await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("warm"))
    both_sent = round_trips(ipam, 2)
    await ipam.redis.config_resetstat()
    await ipam.redis.client_pause(20000, all=False)
    try:
        first = [asyncio.ensure_future(ipam.allocate(pool="pool-a", node="n1",
                                                     owner=ephemeral_owner(f"f{i}")))
                 for i in range(2)]
        await both_sent.wait()  # a lone call and a pipeline
        later = []
        for i in range(8):  # each made in a loop turn of its own
            later.append(asyncio.ensure_future(ipam.allocate(
                pool="pool-a", node="n1", owner=ephemeral_owner(f"l{i}"))))
            await asyncio.sleep(0)
    finally:
        await ipam.redis.client_unpause()
    got = await asyncio.gather(*first, *later)
    assert len({x.address for x in got}) == 10
    assert [x.owner for x in got[2:]] == [ephemeral_owner(f"l{i}") for i in range(8)]
    assert await evalsha_calls(ipam) == 3, "the calls made meanwhile did not leave together"


async def test_a_call_whose_caller_gave_up_before_it_left_is_not_sent(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("warm"))
    both_sent = round_trips(ipam, 2)
    await ipam.redis.client_pause(20000, all=False)
    try:
        # two calls take both round trips the runner allows and wait on the paused store
        held = [asyncio.ensure_future(ipam.allocate(pool="pool-a", node="n1",
                                                    owner=ephemeral_owner(f"h{i}")))
                for i in range(2)]
        await both_sent.wait()
        # a third call queues behind them; its caller's deadline passes before it leaves
        with pytest.raises(StoreUnavailable), ipam.deadline(0.05):
            await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("gave-up"))
    finally:
        await ipam.redis.client_unpause()
    got = await asyncio.gather(*held)
    assert len({x.address for x in got}) == 2
    await ipam.runner.settle(within=5.0)
    assert await ipam.lease(owner=ephemeral_owner("gave-up")) is None
