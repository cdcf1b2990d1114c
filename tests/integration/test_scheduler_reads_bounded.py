"""The scheduler's periodic passes cost the store a bounded amount, whatever it holds:
statistics are one read of counters, a failover pass reads nothing while every node is
Ready, and a GC pass visits a bounded page of records, resuming where the last one
stopped, so a whole cycle takes about the grace. Measured in commands the real
redis-server counts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from ipam import NodeName, PoolSpec, RedisIpam, ReservationKey, ReservationState, ephemeral_owner
from scheduler import ipam_stats
from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.controllers import MIN_GC_RECORDS, FailoverController, GcController
from scheduler.gc import GcOp
from scheduler.metrics import Metrics
from scheduler.scheduling import Scheduler
from tests.support.clock import SkewClock
from tests.unit.scheduler.helpers import node_json, pod_json


async def commands(ipam: RedisIpam) -> dict[str, int]:
    """Calls per command so far (INFO commandstats), the INFO itself not counted."""
    info = await ipam.redis.info("commandstats")
    out = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
    out["info"] = out.get("info", 0) - 1
    return out


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items()
            if n - before.get(k, 0) and k != "info"}


def cache_of(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> ClusterCache:
    cache = ClusterCache()
    cache.replace("nodes", nodes)
    cache.replace("pods", pods)
    cache.replace("statefulsets", [])
    return cache


async def test_statistics_cost_the_same_at_40_and_400_records(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    m = Metrics()
    cache = cache_of([node_json("n0")], [])
    await ipam.apply_pool(PoolSpec(name="wide", cidr="10.80.0.0/16", block_size=26))
    await ipam_stats.collect(ipam, m, cache)  # the script is loaded once
    costs = []
    for pool, more in (("pool-a", 40), ("wide", 360)):
        for i in range(more):
            await ipam.allocate(pool=pool, node=f"n{i % 4}", owner=ephemeral_owner(f"{pool}{i}"))
        before = await commands(ipam)
        stats = await ipam_stats.collect(ipam, m, cache)
        costs.append(spent(before, await commands(ipam)))
        assert stats is not None
        assert sum(stats.records.values()) == {"pool-a": 40, "wide": 400}[pool]
    # the pool list and ONE script over counters, whatever the store holds: no scan,
    # no read per record
    assert costs[0] == costs[1], costs
    assert costs[0].get("evalsha") == 1 and not {"hscan", "sscan", "scan", "hmget"} & set(
        costs[0]), costs[0]
    assert m.registry.get_sample_value("stickyip_ipam_pool_addresses",
                                       {"pool": "wide", "state": "used"}) == 360


async def test_failover_reads_nothing_while_every_node_is_ready(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    clock = SkewClock()
    nodes = [node_json(f"n{i}") for i in range(3)]
    cache = cache_of(nodes, [])
    settings = SchedulerSettings(identity="t", node_grace=40, heartbeat_ttl=30)
    ctl = FailoverController(settings, cache, ipam, None, Scheduler(settings, cache, ipam, None),
                             clock=clock)
    await ipam.claim(ReservationKey.of("ns", "db", 0), pool="pool-a", node="n1", holder="u")
    first = await ctl.run_once()  # learns which nodes hold reservations
    assert first.read_store and not first.gone

    before = await commands(ipam)
    for _ in range(5):
        report = await ctl.run_once()
        assert not report.read_store and not report.gone and not report.slow
    assert spent(before, await commands(ipam)) == {}

    # n1 stops being Ready: one read of the counters judges it (slow: within the grace)
    cache.upsert_node(replace(cache.nodes[NodeName("n1")], ready=False, ready_since=0.0))
    before = await commands(ipam)
    report = await ctl.run_once()
    assert "grace" in report.slow[NodeName("n1")]
    used = spent(before, await commands(ipam))
    assert used.get("evalsha") == 1 and not {"hscan", "sscan", "scan", "hmget"} & set(used)
    # a NotReady node that holds no reservation is not even judged
    cache.upsert_node(replace(cache.nodes[NodeName("n2")], ready=False, ready_since=0.0))
    report = await ctl.run_once()
    assert set(report.slow) == {"n1"}

    # n1 is confirmed gone: only its reservations are read (the home index), no scan
    clock.advance(settings.node_grace + settings.heartbeat_ttl)
    before = await commands(ipam)
    report = await ctl.run_once()
    assert set(report.gone) == {"n1"} and [str(k) for k in report.moved] == ["ns/db/0"]
    used = spent(before, await commands(ipam))
    assert "zrangebylex" in used and not {"hscan", "sscan", "scan"} & set(used), used


async def test_gc_walks_a_bounded_page_per_pass_and_frees_every_leak_within_cycles(
        ipam: RedisIpam) -> None:
    await ipam.apply_pool(PoolSpec(name="wide", cidr="10.80.0.0/16", block_size=26))
    clock = SkewClock()
    ipam.clock = clock
    total = 2500
    for i in range(total):
        await ipam.allocate(pool="wide", node=f"n{i % 8}", owner=ephemeral_owner(f"c{i}"),
                            pod=f"default/p{i}", holder=f"uid-{i}")
    # every odd pod is gone; the even ones run
    live = [pod_json(f"p{i}", uid=f"uid-{i}", node_name=f"n{i % 8}", phase="Running")
            for i in range(0, total, 2)]
    cache = cache_of([node_json(f"n{i}") for i in range(8)], live)
    settings = SchedulerSettings(identity="t", gc_period=60, gc_grace=300)
    gc = GcController(settings, ipam, None, cache, clock=clock)
    per_pass = gc.budget(total)
    assert per_pass == MIN_GC_RECORDS  # 2,500 x 60 / 300 = 500 -> at least 1,000

    clock.advance(301)  # the leases are older than the grace
    visited: list[int] = []
    for _ in range(3):  # one cycle: every record seen once, every leak marked missing
        before = await commands(ipam)
        assert await gc.run_once() == []
        visited.append(gc.last_visited)
        used = spent(before, await commands(ipam))
        # bounded: one or two HSCAN pages of ~1,000, the counters, the expiry index
        assert 1 <= used["hscan"] <= 2 and used["zrangebyscore"] == 1, used
        assert not {"hmget", "sscan", "scan"} & set(used), used
    assert gc.cursor == 0, "three passes of >= 1,000 cover 2,500 records"
    assert all(v <= 2 * per_pass for v in visited) and sum(visited) >= total, visited
    assert len(gc.missing_since) == total // 2

    clock.advance(301)  # gone longer than the grace: the next cycle frees them
    freed = []
    for _ in range(3):
        freed += [a for a in await gc.run_once()]
    assert {a.op for a in freed} == {GcOp.RELEASE}
    assert sorted(a.owner for a in freed) == sorted(ephemeral_owner(f"c{i}")
                                                    for i in range(1, total, 2))
    st = await ipam.stats(nodes=False)
    assert st.records == {"ephemeral": total // 2}, "every live pod kept its lease"


async def test_gc_expires_from_the_index_and_frees_quarantine_once_the_pod_is_gone(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    clock = SkewClock()
    ipam.clock = clock
    k0, k1, k2 = (ReservationKey.of("ns", "db", i) for i in range(3))
    await ipam.claim(k0, pool="pool-a", node="n0", retain=10)
    await ipam.retain_reservation(k0)
    for k, uid in ((k1, "u1"), (k2, "u2")):
        await ipam.claim(k, pool="pool-a", node="n0", holder=uid, pod=f"ns/{k.pod_name}")
        forced = await ipam.release(owner=k.owner, force=True)
        assert forced is not None and forced.state is ReservationState.QUARANTINED
    # db-1's pod still runs; db-2's is gone
    cache = cache_of([node_json("n0")], [pod_json("db-1", namespace="ns", uid="u1",
                                                  sts="db", node_name="n0", phase="Running")])
    gc = GcController(SchedulerSettings(identity="t", gc_grace=300), ipam, None, cache,
                      clock=clock)
    clock.advance(11)
    done = await gc.run_once()
    assert sorted((a.op, a.owner) for a in done) == [
        (GcOp.EXPIRE, k0.owner), (GcOp.HOLDER_GONE, k2.owner)]
    assert await ipam.reservation(k0) is None and await ipam.reservation(k2) is None
    held = await ipam.reservation(k1)
    assert held is not None and held.state is ReservationState.QUARANTINED


async def test_decisions_wait_until_nodes_and_pods_are_listed(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    cache = ClusterCache()
    settings = SchedulerSettings(identity="t")
    sched = Scheduler(settings, cache, ipam, None)
    cache.replace("pods", [pod_json("web")])
    assert await sched.schedule_one(sched.queue.get_nowait()) is None  # nodes not listed
    assert sched.queue.empty()
    cache.replace("nodes", [node_json("n0")])  # listed: the parked pod is queued again
    uid = await asyncio.wait_for(sched.queue.get(), 1)
    decision = await sched.schedule_one(uid)
    assert decision is not None and decision.node == "n0"
