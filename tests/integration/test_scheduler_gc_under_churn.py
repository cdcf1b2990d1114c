"""The GC under churn: pods come and go while GC passes run back to back; it never
frees the address of a pod (or ordinal) that exists, and frees every leak once
its pod has been gone longer than the grace."""

from __future__ import annotations

import asyncio
import contextlib

from ipam import OwnerKey, PoolSpec, RedisIpam, ReservationKey, ephemeral_owner
from kubestandin import objects
from scheduler.gc import GcAction, GcOp
from tests.integration.test_scheduler_cache import replica, standin, sts, wait_bound
from tests.support.clock import SkewClock

GRACE = 60.0


async def test_gc_leaves_live_owners_alone_under_churn(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    # GC, the scheduler's IPAM and this test's IPAM share one clock that the test
    # moves: each round ages the leases of earlier rounds by half the grace, so
    # leaks become due while new pods keep coming, with no sleep that must outlast
    # a grace.
    clock = SkewClock()
    ipam.clock = clock
    async with standin(2) as api, replica(api, redis_url, clock=clock,
                                          gc_grace=GRACE) as app:
        await api.create(sts("live", 2))
        await wait_bound(api, "live", 2)

        keepers: dict[OwnerKey, str] = {}
        doomed: dict[OwnerKey, str] = {}
        actions: list[GcAction] = []
        stop = asyncio.Event()
        passes = 0
        progressed = asyncio.Condition()

        async def gc_loop() -> None:
            nonlocal passes
            while not stop.is_set():
                actions.extend(await app.gc.run_once())
                async with progressed:
                    passes += 1
                    progressed.notify_all()

        gc_task = asyncio.create_task(gc_loop())
        try:
            for round_ in range(6):
                for i in range(8):
                    name = f"churn-{round_}-{i}"
                    pod = await api.create(objects.pod(name, node_name=f"node-{i % 2}"))
                    owner = ephemeral_owner(f"c{round_}x{i}")
                    # As the CNI ADD does: the pod exists before its address is allocated.
                    await ipam.allocate(pool="pool-a", node=f"node-{i % 2}", owner=owner,
                                        pod=f"default/{name}", holder=pod["metadata"]["uid"])
                    (doomed if i % 2 else keepers)[owner] = name
                for name in doomed.values():
                    if name.startswith(f"churn-{round_}-"):
                        await api.delete("v1", "Pod", name)
                clock.advance(GRACE / 2)
                # GC passes run between rounds: wait for one that began after this
                # round's changes (the one running now may have begun before).
                async with progressed:
                    target = passes + 2
                    await progressed.wait_for(lambda: passes >= target)  # noqa: B023
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await gc_task

        released = {a.owner for a in actions if a.op is GcOp.RELEASE}
        assert not released & set(keepers), "GC freed the address of a live pod"
        assert released & set(doomed), "no leak was freed while pods churned"
        for owner in keepers:
            assert await ipam.lease(pool="pool-a", owner=owner) is not None
        for o in (0, 1):
            res = await ipam.reservation(ReservationKey.parse(f"default/live/{o}"),
                                         pool="pool-a")
            assert res is not None and res.holder

        # Every leak goes once its pod has been gone longer than the grace.
        await app.gc.run_once()
        clock.advance(GRACE + 1.0)
        await app.gc.run_once()
        for owner in doomed:
            assert await ipam.lease(pool="pool-a", owner=owner) is None, owner
        for owner in keepers:
            assert await ipam.lease(pool="pool-a", owner=owner) is not None


async def test_statefulset_deleted_releases_its_reservations(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(2) as api, replica(api, redis_url) as app:
        await api.create(sts("gone", 2))
        await api.create(sts("stays", 1))
        await wait_bound(api, "gone", 2)
        await wait_bound(api, "stays", 1)
        await api.delete("apps/v1", "StatefulSet", "gone")
        await api.wait_for(lambda _: "gone" not in {n for _, n in app.cache.statefulsets})
        done = await app.gc.run_once()
        assert {a.owner for a in done} == {"sts/default/gone/0", "sts/default/gone/1"}
        assert await ipam.reservation(ReservationKey.parse("default/stays/0"),
                                      pool="pool-a") is not None
