"""Two scheduler replicas: only the Lease holder binds, no pod is bound twice, and
leadership moves when the leader goes away (released, or expired)."""

from __future__ import annotations

import asyncio
from collections import Counter

from ipam import PoolSpec, RedisIpam
from kubestandin import KubeStandIn, objects
from plumbing.kube.client import KubeSettings, api_client
from scheduler.app import SchedulerApp
from scheduler.kubeapi import KubeApi
from scheduler.leader import LeaderElector
from tests.integration.test_scheduler_cache import SCHED, replica, standin, sts, wait_bound


def bound(app: SchedulerApp) -> float:
    return app.metrics.registry.get_sample_value(
        "stickyip_scheduler_bindings_total", {"result": "bound"}) or 0.0


async def scheduled_events(api: KubeStandIn) -> Counter[str]:
    return Counter(e["involvedObject"]["name"] for e in await api.list("v1", "Event", "default")
                   if e.get("reason") == "Scheduled")


async def test_two_replicas_never_bind_a_pod_twice(redis_url: str, ipam: RedisIpam,
                                                   pool_a: PoolSpec) -> None:
    async with standin(3) as api, replica(api, redis_url, identity="sched-a") as a:
        await api.wait_for(lambda _: a.is_leader(), timeout=5)
        async with replica(api, redis_url, identity="sched-b", reconciled=False) as b:
            # b has read the Lease and found it held by a (and so stays a standby)
            assert b.leader is not None
            await api.wait_for(lambda _: (b.leader._observed or ("",))[0] == "sched-a",
                               timeout=10)
            assert a.is_leader() and not b.is_leader()
            await api.create(sts("pair", 4))
            for i in range(4):
                await api.create(objects.pod(f"web-{i}", labels={"app": "web"},
                                             scheduler_name=SCHED))
            await wait_bound(api, "pair", 4)
            await wait_bound(api, "web", 4)
            await a.scheduler.drain()
            assert bound(a) == 8 and bound(b) == 0

            # The leader leaves (releasing its Lease); the other replica takes over.
            await a.stop()
            await api.wait_for(lambda _: b.is_leader(), timeout=10)
            for i in range(4, 8):
                await api.create(objects.pod(f"web-{i}", labels={"app": "web"},
                                             scheduler_name=SCHED))
            await wait_bound(api, "web", 8)
            await b.scheduler.drain()
            assert bound(b) == 4
        events = await scheduled_events(api)
        assert set(events) == {f"pair-{i}" for i in range(4)} | {f"web-{i}" for i in range(8)}
        assert set(events.values()) == {1}, "every pod was bound exactly once"
        lease = await api.get("coordination.k8s.io/v1", "Lease", "stickyip-scheduler",
                              "kube-system")
        assert lease is not None and lease["spec"]["leaseTransitions"] >= 1


async def test_a_silent_leader_stops_before_another_takes_over(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(0) as api:
        def elector(identity: str) -> LeaderElector:
            kube = KubeApi(api_client(KubeSettings(kube_host=api.url)))
            return LeaderElector(kube, namespace="kube-system", name="race", identity=identity,
                                 duration=1.0, renew_period=0.1)
        one, two = elector("one"), elector("two")
        assert await asyncio.to_thread(one.try_acquire_or_renew)
        one._set(True)
        assert not await asyncio.to_thread(two.try_acquire_or_renew)
        # "one" freezes (no more renewals). "two" keeps trying; the moment it wins,
        # "one" must already have stopped acting as leader.
        for _ in range(100):
            if await asyncio.to_thread(two.try_acquire_or_renew):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the Lease was never taken over")
        assert not one.is_leader, "both replicas would act as leader"
        assert not await asyncio.to_thread(one.try_acquire_or_renew), "one lost the Lease"
