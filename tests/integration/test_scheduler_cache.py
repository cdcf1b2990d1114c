"""The scheduler's watch cache against the API stand-in (and the harness the other
scheduler scenarios share: a stand-in, a real Redis, scheduler replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from ipam import PoolSpec, RedisIpam
from kubestandin import KubeStandIn, objects
from plumbing.kube.client import KubeSettings, api_client
from plumbing.kube.watch import LoopSink
from scheduler.app import SchedulerApp
from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.kubeapi import KubeApi
from scheduler.objects import node_from_json
from tests.support.clock import SkewClock

SCHED = "stickyip-scheduler"
FAST = {
    "lease_duration": 2.0, "renew_period": 0.2, "retry_period": 0.2, "node_grace": 0.5,
    "heartbeat_ttl": 1.0, "failover_period": 0.2, "gc_period": 3600.0, "gc_grace": 0.0,
    "address_view_ttl": 0.5, "watch_timeout": 5,
}


def settings(identity: str = "sched-0", **kw: Any) -> SchedulerSettings:
    return SchedulerSettings(identity=identity, **(FAST | kw))


@asynccontextmanager
async def replica(api: KubeStandIn, redis_url: str, *, clock: SkewClock | None = None,
                  reconciled: bool = True, **kw: Any) -> AsyncIterator[SchedulerApp]:
    """A scheduler replica; with ``clock``, its failover and GC controllers and its
    IPAM read that clock (tests move time forward instead of sleeping). With
    ``reconciled`` (a replica that will lead), it is yielded once its first
    reconciliation pass is done (before that it hands out no new address)."""
    ipam = RedisIpam(aioredis.Redis.from_url(redis_url), actor="scheduler-test",
                     **({"clock": clock} if clock is not None else {}))
    kube = KubeApi(api_client(KubeSettings(kube_host=api.url)))
    app = SchedulerApp(settings(**kw), kube, ipam)
    if clock is not None:
        app.failover.clock = clock
        app.gc.clock = clock
    await app.start()
    try:
        await app.wait_synced()
        if reconciled:
            async with asyncio.timeout(10):
                await app.reconciler.wait_passes(1)
        yield app
    finally:
        await app.stop()
        await ipam.aclose()


@asynccontextmanager
async def standin(nodes: int = 3, **node_kw: Any) -> AsyncIterator[KubeStandIn]:
    # Bookmarks often: the GC waits until its watch cache caught up with the API.
    async with KubeStandIn(statefulset_controller=True, auto_ready=True,
                           bookmark_interval=0.1) as api:
        for i in range(nodes):
            await api.create(objects.node(f"node-{i}", **node_kw))
        yield api


def sts(name: str, replicas: int = 3, *, namespace: str = "default", **ann: str) -> Any:
    annotations = {f"stickyip.io/{k.replace('_', '-')}": v for k, v in ann.items()}
    annotations.setdefault("stickyip.io/pool", "pool-a")
    return objects.statefulset(
        name, namespace, replicas, template_labels={"app": name, "stickyip.io/fixed-ip": "true"},
        template_annotations=annotations, scheduler_name=SCHED,
        pod_management_policy="Parallel")


async def pods_of(api: KubeStandIn, name: str, namespace: str = "default") -> dict[str, Any]:
    return {p["metadata"]["name"]: p for p in await api.list("v1", "Pod", namespace,
                                                           label_selector=f"app={name}")}


async def wait_bound(api: KubeStandIn, name: str, count: int, *, namespace: str = "default",
                     within: float = 15.0,
                     check: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    async def ok(_: KubeStandIn) -> bool:
        pods = await pods_of(api, name, namespace)
        return len(pods) == count and all(
            p["spec"].get("nodeName") and (check is None or check(p)) for p in pods.values())
    await api.wait_for(ok, timeout=within)
    return await pods_of(api, name, namespace)


def has_ip(p: dict[str, Any]) -> bool:
    """The pod's address is annotated (the scheduler bound it with its reservation)."""
    return "stickyip.io/ip" in p["metadata"]["annotations"]


def placement(pods: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {n: (p["spec"]["nodeName"], p["metadata"]["annotations"].get("stickyip.io/ip", ""))
            for n, p in pods.items()}


async def test_cache_follows_creates_updates_and_deletes(redis_url: str, ipam: RedisIpam,
                                                         pool_a: PoolSpec) -> None:
    async with standin(2) as api, replica(api, redis_url) as app:
        assert set(app.cache.nodes) == {"node-0", "node-1"}
        await api.create(objects.node("node-2", labels={"zone": "b"}))
        await api.create(objects.pod("plain", cpu="250m", node_name="node-2"))
        await api.wait_for(lambda _: "node-2" in app.cache.nodes
                           and app.cache.pod_by_ref("default/plain") is not None)
        assert app.cache.nodes["node-2"].labels["zone"] == "b"
        assert app.cache.used["node-2"].cpu_m == 250
        await api.delete("v1", "Pod", "plain")
        await api.set_node_ready("node-1", False)
        await api.wait_for(lambda _: app.cache.pod_by_ref("default/plain") is None
                           and not app.cache.nodes["node-1"].ready)
        assert app.cache.used["node-2"].cpu_m == 0
        assert "node-1" in app.cache.not_ready_since


async def test_stale_watch_gets_410_and_the_cache_is_listed_again(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(1) as api:
        kube = KubeApi(api_client(KubeSettings(kube_host=api.url)))
        _, rv = await asyncio.to_thread(kube.list, "nodes")
        await api.create(objects.node("node-9"))
        await api.delete("v1", "Node", "node-0")
        api.compact()

        cache = ClusterCache()
        cache.upsert_node(node_from_json(objects.node("node-0")))  # what it knew at ``rv``
        loop = asyncio.get_running_loop()
        reflector = kube.reflector("nodes", LoopSink(loop, cache.sink("nodes")),
                                   watch_timeout=1, resource_version=rv)
        thread = reflector.start()
        try:
            await api.wait_for(lambda _: set(cache.nodes) == {"node-9"}, timeout=10)
            assert reflector.lists == 1 and cache.is_synced("nodes")
            await api.create(objects.node("node-10"))  # and it watches again afterwards
            await api.wait_for(lambda _: "node-10" in cache.nodes, timeout=10)
        finally:
            reflector.stop()
            await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()
