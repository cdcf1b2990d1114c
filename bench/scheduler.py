"""Scheduler benchmark (``make bench-scheduler``): decisions/s over 5,000 nodes with
the real IPAM on a real redis-server (in-process, and through the whole scheduler
against the API stand-in: decide, reserve, annotate, bind), extender ``/filter``
latency over HTTP with 5,000 node names, and re-homing 100 pods off a node end to end
(API stand-in, StatefulSet controller, kubelet stand-in, scheduler, failover
controller): with fast timers from the controller's fence, and with the default
settings from the Node's deletion (confirmed gone) and from its death."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import sys
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bench.common import Report, cpu_seconds, percentile, redis_cpu
from ipam import PoolSpec, RedisIpam, ReservationKey
from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.extender import Extender
from scheduler.models import PodInfo
from scheduler.objects import pod_from_json
from scheduler.scheduling import Scheduler
from tests.support.redis_server import RedisServer, free_port

NODES = 5000
PODS = 10_000
#: pods created in one burst for the scheduler-with-binding figure
BIND_PODS = 2000
POOL = "bench"


def node_json(i: int) -> dict[str, Any]:
    taints = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}] if i % 20 == 0 else []
    return {"metadata": {"name": f"node-{i:05d}",
                         "labels": {"zone": f"z{i % 3}", "kubernetes.io/hostname": f"n{i}"}},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                       "conditions": [{"type": "Ready",
                                       "status": "False" if i % 50 == 7 else "True"}]}}


def pod_json(name: str, *, sts: str | None, ordinal: int = 0) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "bench", "uid": f"uid-{name}",
                            "labels": {}, "annotations": {}}
    if sts:
        meta["name"] = f"{sts}-{ordinal}"
        meta["uid"] = f"uid-{sts}-{ordinal}"
        meta["labels"] = {"stickyip.io/fixed-ip": "true", "app": sts}
        meta["annotations"] = {"stickyip.io/pool": POOL}
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts,
                                    "uid": f"uid-sts-{sts}", "controller": True}]
    return {"metadata": meta,
            "spec": {"schedulerName": "stickyip-scheduler",
                     "containers": [{"name": "c", "resources": {
                         "requests": {"cpu": "100m", "memory": "128Mi"}}}]},
            "status": {"phase": "Pending"}}


def workload() -> tuple[list[PodInfo], list[PodInfo]]:
    """(returning StatefulSet pods whose reservation exists, the 10,000 to decide)."""
    sts_pods = [pod_from_json(pod_json("", sts=f"sts-{s:03d}", ordinal=o))
                for s in range(500) for o in range(10)]
    returning = [p for p in sts_pods if p.ordinal % 2 == 0]
    plain = [pod_from_json(pod_json(f"web-{i:05d}", sts=None)) for i in range(PODS // 2)]
    mixed = sts_pods + plain
    random.Random(7).shuffle(mixed)
    return returning, mixed


def fresh_cache() -> ClusterCache:
    cache = ClusterCache()
    cache.replace("nodes", [node_json(i) for i in range(NODES)])
    gc.freeze()  # as `stickyip scheduler` does once its caches are synced
    return cache


async def decisions(ipam: RedisIpam, *, ipam_step: bool, percentage: int = 0,
                    limit: int | None = None) -> dict[str, float]:
    settings = SchedulerSettings(identity="bench", percentage_of_nodes_to_score=percentage)
    cache = fresh_cache()
    sched = Scheduler(settings, cache, ipam, None)
    _, pods = workload()
    pods = pods[:limit] if limit else pods
    for p in pods:
        q = PodInfo(**{f: getattr(p, f) for f in p.__dataclass_fields__})
        if not ipam_step:
            q.labels = {}  # not opted in: the same filter and score, no IPAM at all
        cache.upsert_pod(q)
    placed = 0
    t0 = time.perf_counter()
    for p in pods:
        pod = cache.pods[p.uid]
        d = await sched.decide(pod)
        if d.node is not None:
            cache.assume(pod.uid, d.node)
            placed += 1
    dt = time.perf_counter() - t0
    return {"pods": len(pods), "placed": placed, "seconds": round(dt, 3),
            "per_s": round(len(pods) / dt, 1)}


async def prepare_reservations(ipam: RedisIpam) -> None:
    """Half the StatefulSet pods come back to an existing reservation."""
    returning, _ = workload()
    rng = random.Random(3)
    coros = []
    for p in returning:
        key = ReservationKey.of(p.namespace, p.statefulset, p.ordinal)
        node = f"node-{rng.randrange(NODES):05d}"
        while int(node[5:]) % 20 == 0 or int(node[5:]) % 50 == 7:
            node = f"node-{rng.randrange(NODES):05d}"
        coros.append(ipam.claim(key, pool=POOL, node=node))
    await ipam.gather_limited(coros, 32)


async def extender_latency(ipam: RedisIpam, report: Report) -> None:
    cache = fresh_cache()
    settings = SchedulerSettings(identity="bench")
    sched = Scheduler(settings, cache, ipam, None)
    ext = Extender(cache, ipam, sched)
    runner = web.AppRunner(ext.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    names = [f"node-{i:05d}" for i in range(NODES)]
    returning, _mixed = workload()
    bodies = {
        "home": [json.dumps({"Pod": pod_json("", sts=p.statefulset, ordinal=p.ordinal),
                             "NodeNames": names}).encode() for p in returning[:50]],
        "first": [json.dumps({"Pod": pod_json("", sts=f"new-{i}", ordinal=1),
                              "NodeNames": names}).encode() for i in range(50)],
        "plain": [json.dumps({"Pod": pod_json(f"p{i}", sts=None),
                              "NodeNames": names}).encode() for i in range(50)],
    }
    series: dict[str, list[float]] = {k: [] for k in [*bodies, "healthz"]}
    headers = {"Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            for round_ in range(8):
                for kind, items in bodies.items():
                    for body in items:
                        t0 = time.perf_counter()
                        async with http.post("/filter", data=body, headers=headers) as r:
                            out = await r.json()
                        dt = time.perf_counter() - t0
                        assert not out["Error"], out["Error"]
                        if round_:  # the first round warms caches
                            series[kind].append(dt * 1000)
                for _ in range(50):
                    t0 = time.perf_counter()
                    async with http.get("/healthz") as r:
                        await r.read()
                    if round_:
                        series["healthz"].append((time.perf_counter() - t0) * 1000)
    finally:
        await runner.cleanup()
    all_filter = [x for k in bodies for x in series[k]]
    report.row("extender_filter_p99_ms", percentile(all_filter, 99), "ms", 5, "lower")
    report.detail["extender"] = {
        "node_names": NODES, "requests": len(all_filter),
        "filter_p50_ms": round(percentile(all_filter, 50), 3),
        "filter_p99_ms": round(percentile(all_filter, 99), 3),
        **{f"{k}_p50_ms": round(percentile(v, 50), 3) for k, v in series.items()},
        **{f"{k}_p99_ms": round(percentile(v, 99), 3) for k, v in series.items()},
        "baseline": "healthz = the same HTTP round trip with no JSON body and no decision",
    }


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


async def rehome_run(redis_url: str, settings: SchedulerSettings, how: str
                     ) -> dict[str, Any]:
    """100 fixed-IP pods placed on node "victim", which then goes: ``how`` = "deleted"
    (its Node object deleted: confirmed gone) or "dies" (its agent's heartbeat stops and
    the Node turns NotReady, as the node controller reports a dead kubelet). Until every
    pod is Ready, with its address, on another node."""
    from kubestandin import KubeStandIn, objects
    from plumbing.kube.client import KubeSettings, api_client
    from scheduler.app import SchedulerApp
    from scheduler.kubeapi import KubeApi

    ipam = RedisIpam(aioredis.Redis.from_url(redis_url), actor="bench")
    # A clean store: reservations left by the decision phases are homed on nodes this
    # cluster does not have, which the failover controller would (rightly) re-home too.
    await ipam.redis.flushall()
    await ipam.apply_pool(PoolSpec(name="rehome", cidr="10.64.0.0/20", block_size=26))
    alive = True

    async def agent_heartbeat() -> None:  # the victim's agent, until the node dies
        while alive:
            await ipam.heartbeat("victim")
            await asyncio.sleep(1.0)

    async with KubeStandIn(statefulset_controller=True, auto_ready=True) as api:
        await api.create(objects.node("victim", cpu="64", memory="256Gi"))
        beat = asyncio.create_task(agent_heartbeat())
        kube = KubeApi(api_client(KubeSettings(kube_host=api.url)))
        app = SchedulerApp(settings, kube, ipam)
        await app.start()
        try:
            await app.wait_synced()
            body = objects.statefulset(
                "big", "default", 100,
                template_labels={"app": "big", "stickyip.io/fixed-ip": "true"},
                template_annotations={"stickyip.io/pool": "rehome"},
                scheduler_name=settings.name, pod_management_policy="Parallel")
            t0 = time.perf_counter()
            await api.create(body)

            async def placed(on: str | None, ips: dict[str, str] | None) -> bool:
                pods = await api.list("v1", "Pod", "default", label_selector="app=big")
                if len(pods) != 100:
                    return False
                for p in pods:
                    node = p["spec"].get("nodeName")
                    ip = p["metadata"]["annotations"].get("stickyip.io/ip")
                    if not node or not ip or (on and node != on) or (not on and node == "victim"):
                        return False
                    if ips is not None and (ips[p["metadata"]["name"]] != ip or not _ready(p)):
                        return False
                return True
            await api.wait_for(lambda a: placed("victim", None), timeout=300, interval=0.05)
            first_s = time.perf_counter() - t0
            ips = {p["metadata"]["name"]: p["metadata"]["annotations"]["stickyip.io/ip"]
                   for p in await api.list("v1", "Pod", "default", label_selector="app=big")}
            for i in range(5):
                await api.create(objects.node(f"healthy-{i}", cpu="64", memory="256Gi"))
            await api.wait_for(lambda a: len(app.cache.nodes) == 6)
            t_gone = time.time()
            if how == "deleted":
                await api.delete("v1", "Node", "victim")
            else:
                alive = False
                await beat
                await api.set_node_ready("victim", False)
            await api.wait_for(lambda a: placed(None, ips), timeout=600, interval=0.05)
            t_done = time.time()
            fenced = (await ipam.node_health("victim")).fenced_at
            moved_blocks = sorted({b.node for b in await ipam.blocks("rehome")})
        finally:
            alive = False
            await asyncio.gather(beat, return_exceptions=True)
            await app.stop()
            await ipam.aclose()
    return {"pods": 100, "node": how, "seconds_from_event": round(t_done - t_gone, 3),
            "seconds_from_fence": round(t_done - fenced, 3),
            "fence_lag_s": round(fenced - t_gone, 3), "block_owners_after": moved_blocks,
            "baseline_first_placement_100_pods_s": round(first_s, 3),
            "settings": {k: getattr(settings, k) for k in (
                "failover_period", "retry_period", "renew_period", "node_grace",
                "heartbeat_ttl", "gc_period")}}


async def rehome(redis_url: str, report: Report) -> None:
    fast = SchedulerSettings(identity="bench-rehome", failover_period=0.2,
                             renew_period=0.5, retry_period=0.2, gc_period=3600)
    quick = await rehome_run(redis_url, fast, "deleted")
    report.row("rehome_100_pods_s", quick["seconds_from_fence"], "s", 10, "lower")
    defaults = SchedulerSettings(identity="bench-rehome-defaults")
    confirmed = await rehome_run(redis_url, defaults, "deleted")
    report.row("rehome_100_pods_default_timers_s", confirmed["seconds_from_event"], "s", 15,
               "lower")
    death = await rehome_run(redis_url, defaults, "dies")
    report.detail["rehome"] = {
        "fast_timers_from_fence": quick,
        "default_timers_from_node_deletion": confirmed,
        "default_timers_from_node_death": death,
        "note": "end to end through the API stand-in: fence, block moves, pod deletion, "
                "StatefulSet re-creation, scheduling, binding and Ready of all 100 pods. "
                "rehome_100_pods_s: fast timers, clock from the controller's own fence; "
                "rehome_100_pods_default_timers_s: default settings, clock from the Node's "
                "deletion (confirmed gone). From the node's death: the stand-in marks it "
                "NotReady at once; a real node controller adds its node-monitor-grace-period "
                "(40 s by default) before that",
    }


async def _seed(url: str, objs: list[dict[str, Any]], paths: list[str]) -> None:
    """POST objects to the stand-in, 32 at a time."""
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(url) as http:
        async def post(path: str, obj: dict[str, Any]) -> None:
            async with sem, http.post(path, json=obj) as r:
                if r.status >= 300:
                    raise RuntimeError(f"seeding {path}: {r.status} {await r.text()}")
        await asyncio.gather(*(post(p, o) for p, o in zip(paths, objs, strict=True)))


async def decisions_with_bind(redis_url: str, report: Report) -> None:
    """The whole scheduler (default settings) against the API stand-in, which runs in a
    process of its own as an API server does, with 5,000 nodes and a burst of pending
    pods: watched, decided, reserved (IPAM), annotated and bound (pods/binding). From
    the moment the scheduler's caches are synced to the last binding it has seen
    confirmed by the API (its watch)."""
    from plumbing.kube.client import KubeSettings, api_client
    from scheduler.app import SchedulerApp
    from scheduler.kubeapi import KubeApi

    ipam = RedisIpam(aioredis.Redis.from_url(redis_url), actor="bench")
    await ipam.redis.flushall()
    ipam.forget_pool_cache()
    await ipam.apply_pool(PoolSpec(name=POOL, cidr="10.0.0.0/12", block_size=26))
    returning, mixed = workload()
    await prepare_reservations(ipam)
    pods = mixed[:BIND_PODS]
    returning_uids = {r.uid for r in returning}
    standin = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubestandin", "--port", "0", stdout=asyncio.subprocess.PIPE)
    try:
        assert standin.stdout is not None
        url = (await standin.stdout.readline()).decode().strip()
        await _seed(url, [{"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "bench"}}], ["/api/v1/namespaces"])
        await _seed(url, [{"apiVersion": "v1", "kind": "Node", **node_json(i)}
                          for i in range(NODES)], ["/api/v1/nodes"] * NODES)
        bodies = [{"apiVersion": "v1", "kind": "Pod",
                   **pod_json(p.name, sts=p.statefulset or None, ordinal=max(p.ordinal, 0))}
                  for p in pods]
        await _seed(url, bodies, ["/api/v1/namespaces/bench/pods"] * len(bodies))
        settings = SchedulerSettings(identity="bench-bind")
        app = SchedulerApp(settings, KubeApi(api_client(KubeSettings(kube_host=url))), ipam)
        await app.start()
        try:
            await app.wait_synced(timeout=300)
            t0 = time.perf_counter()
            cpu0 = {"scheduler_process": cpu_seconds(os.getpid()),
                    "api_standin": cpu_seconds(standin.pid),
                    "redis_server": await redis_cpu(ipam)}

            def confirmed() -> int:
                c = app.cache
                return sum(1 for uid, p in c.pods.items()
                           if p.node_name and uid not in c.assumed and p.namespace == "bench")
            while confirmed() < len(bodies):
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError(f"only {confirmed()} of {len(bodies)} pods bound")
                await asyncio.sleep(0.02)
            dt = time.perf_counter() - t0
            cpu = {"scheduler_process": cpu_seconds(os.getpid()),
                   "api_standin": cpu_seconds(standin.pid),
                   "redis_server": await redis_cpu(ipam)}
        finally:
            await app.stop()
        async with aiohttp.ClientSession(url) as http, \
                http.get("/api/v1/namespaces/bench/pods") as r:
            listed = (await r.json())["items"]
    finally:
        standin.terminate()
        await standin.wait()
        await ipam.aclose()
    bound = [o for o in listed if o["spec"].get("nodeName")]
    sticky = [o for o in listed if o["metadata"]["labels"].get("stickyip.io/fixed-ip")]
    annotated = sum(1 for o in sticky if "stickyip.io/ip" in o["metadata"]["annotations"])
    assert len(bound) == len(bodies), f"{len(bodies) - len(bound)} pods not bound"
    assert sticky and annotated == len(sticky), (
        f"{len(sticky) - annotated} of {len(sticky)} fixed-IP pods not annotated")
    report.row("decisions_with_bind_per_s_5000_nodes", len(bodies) / dt, "1/s", 500, "higher")
    report.detail["decisions_with_bind"] = {
        "nodes": NODES, "pods": len(bodies), "fixed_ip_pods": len(sticky),
        "returning_to_a_reservation": sum(1 for p in pods if p.uid in returning_uids),
        "seconds": round(dt, 3),
        "cpu_seconds": {k: round(cpu[k] - cpu0[k], 3) for k in cpu},
        "cpu_ms_per_pod": {k: round((cpu[k] - cpu0[k]) / len(bodies) * 1000, 3) for k in cpu},
        "cores": os.cpu_count(),
        "path": "API watch -> decide (filter, score) -> IPAM claim -> PATCH annotations -> "
                "POST pods/binding, the scheduler's own code and default settings; the API "
                "stand-in in its own process (python -m kubestandin); clock from the synced "
                "caches (every pod pending) to the last binding the watch confirmed",
    }


async def main() -> None:
    report = Report("scheduler")
    with RedisServer() as server:
        ipam = RedisIpam(aioredis.Redis.from_url(server.url), actor="bench")
        await ipam.apply_pool(PoolSpec(name=POOL, cidr="10.0.0.0/12", block_size=26))
        await prepare_reservations(ipam)
        full = await decisions(ipam, ipam_step=True)
        baseline = await decisions(ipam, ipam_step=False)
        await ipam.redis.flushall()
        await ipam.apply_pool(PoolSpec(name=POOL, cidr="10.0.0.0/12", block_size=26))
        ipam.forget_pool_cache()
        await prepare_reservations(ipam)
        all_nodes = await decisions(ipam, ipam_step=True, percentage=100, limit=500)
        report.row("decisions_per_s_5000_nodes", full["per_s"], "1/s", 1000, "higher")
        report.detail["decisions"] = {
            "nodes": NODES, "pods": PODS,
            "mix": "2,500 StatefulSet pods returning to a reservation (home node), 2,500 first "
                   "placements (claim on the chosen node), 5,000 ephemeral pods; 5% of nodes "
                   "tainted, 2% NotReady",
            "with_ipam": full,
            "baseline_without_ipam_step": baseline,
            "ratio_to_baseline": round(full["per_s"] / baseline["per_s"], 3),
            "all_nodes_scored_500_pods": all_nodes,
            "note": "feasible nodes searched adaptively as kube-scheduler does "
                    "(percentageOfNodesToScore: 10% of 5,000 = 500)",
        }
        await ipam.redis.flushall()
        ipam.forget_pool_cache()
        await ipam.apply_pool(PoolSpec(name=POOL, cidr="10.0.0.0/12", block_size=26))
        await prepare_reservations(ipam)
        await extender_latency(ipam, report)
        await ipam.aclose()
        await decisions_with_bind(server.url, report)
        await rehome(server.url, report)
    report.write()


if __name__ == "__main__":
    asyncio.run(main())
