"""Rows of ``make bench-scale`` about the scheduler at size (issue 10, item 3):

- ``scheduler_ready_s_100k_reservations``: the real ``stickyip scheduler`` process
  (the manifest's command, arguments and settings) starts against a real redis-server
  holding 100,000 sticky reservations and the API stand-in holding 5,000 nodes, the
  100,000 running pods of those reservations (1,000 StatefulSets of 100) and one of
  them re-created Pending; the row is the time from spawning the process to that pod
  bound to its home node with its reserved address.
- ``gc_stats_redis_cores_100k``: the same process then runs at the default periods
  (GC 60 s, statistics 30 s, failover 5 s); Redis CPU (INFO ``used_cpu_sys`` +
  ``used_cpu_user``) over a window holding two GC passes, per second of wall time.
  It includes Redis's own idle cost; the idle baseline (no client) is measured in
  the same run and given in ``detail``.

``detail`` also holds the cost of each pass at 100,000 records, measured in this
process with the product's code on the same store (docs/scheduler.md quotes them),
and the cost of reading every record (what the statistics, failover and GC passes
did before) as the baseline.

Run alone: ``python -m bench.scale sched`` (writes bench/results/scale.json with only
these rows); as a group of ``bench.scale``: ``run(report)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc as pygc
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import Report, percentile, redis_cpu
from ipam import NodeName, PoolSpec, RedisIpam, ReservationKey
from ipam.connection import open_redis
from ipam.contract import LABEL_FIXED_IP, written_annotations
from kubestandin import KubeStandIn, objects
from kubestandin.standin import KubeStandInThread
from netbed.deployed import deployed_command
from scheduler import ipam_stats
from scheduler.cache import ClusterCache
from scheduler.cluster_check import check_against_cluster
from scheduler.config import SchedulerSettings
from scheduler.controllers import FailoverController, GcController
from scheduler.metrics import Metrics
from scheduler.reconciler import Reconciler
from scheduler.scheduling import Scheduler
from tests.support.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "manifests" / "base" / "scheduler.yaml"
NODES = 5000
STATEFULSETS, REPLICAS = 1000, 100
POOL = "scale"
NAMESPACE = "bench"
#: the pod re-created Pending whose placement is timed
VICTIM = (42, 7)
#: seconds of the Redis CPU window: two GC passes (60 s) and four statistics passes
WINDOW = 125.0
IDLE_WINDOW = 25.0


def deployed_scheduler(manifest: Path = MANIFEST) -> tuple[list[str], dict[str, str]]:
    """The scheduler container as the Deployment runs it (netbed.deployed)."""
    return deployed_command(manifest, "Deployment", "scheduler")


def sts_name(s: int) -> str:
    return f"sts-{s:04d}"


def node_name(i: int) -> str:
    return f"node-{i:04d}"


def home_of(s: int, o: int) -> str:
    return node_name((s * REPLICAS + o) % NODES)


def pod_body(s: int, o: int, sts_uid: str, *, bound: bool) -> dict[str, Any]:
    name = f"{sts_name(s)}-{o}"
    labels = {"app": sts_name(s), LABEL_FIXED_IP: "true",
              "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": str(o)}
    body = objects.pod(name, NAMESPACE, labels=labels,
                       annotations={"stickyip.io/pool": POOL},
                       scheduler_name="stickyip-scheduler", cpu="100m", memory="128Mi",
                       node_name=home_of(s, o) if bound else None)
    body["metadata"]["ownerReferences"] = [{
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts_name(s), "uid": sts_uid,
        "controller": True, "blockOwnerDeletion": True}]
    if bound:
        body["status"] = {"phase": "Running"}
    return body


async def fill_api(api: KubeStandIn) -> dict[tuple[int, int], str]:
    """Nodes, StatefulSets and their running pods; returns each pod's UID."""
    for i in range(NODES):
        await api.create(objects.node(node_name(i), cpu="64", memory="256Gi", pods="250"))
    uids: dict[tuple[int, int], str] = {}
    for s in range(STATEFULSETS):
        body = objects.statefulset(
            sts_name(s), NAMESPACE, REPLICAS,
            template_labels={"app": sts_name(s), LABEL_FIXED_IP: "true"},
            template_annotations={"stickyip.io/pool": POOL},
            scheduler_name="stickyip-scheduler", pod_management_policy="Parallel")
        sts = await api.create(body)
        for o in range(REPLICAS):
            pod = await api.create(pod_body(s, o, sts["metadata"]["uid"], bound=True))
            uids[(s, o)] = pod["metadata"]["uid"]
    return uids


async def fill_store(ipam: RedisIpam, uids: dict[tuple[int, int], str]
                     ) -> dict[tuple[int, int], tuple[str, str, int]]:
    """A bound reservation per pod: (address, home, epoch)."""
    await ipam.apply_pools([PoolSpec(name=POOL, cidr="10.64.0.0/12", block_size=26)])

    async def one(k: tuple[int, int]) -> tuple[tuple[int, int], tuple[str, str, int]]:
        s, o = k
        r = await ipam.claim(ReservationKey.of(NAMESPACE, sts_name(s), o), pool=POOL,
                             node=home_of(s, o), holder=uids[k],
                             pod=f"{NAMESPACE}/{sts_name(s)}-{o}")
        assert r.node is not None
        return k, (str(r.address), r.node, r.epoch)

    out = dict(await ipam.gather_limited([one(k) for k in sorted(uids)], 128))
    return out


async def annotate(api: KubeStandIn, placed: dict[tuple[int, int], tuple[str, str, int]]
                   ) -> None:
    """What the scheduler wrote when it bound them: stickyip.io/ip, node, epoch."""
    for (s, o), (ip, node, epoch) in placed.items():
        await api.patch("v1", "Pod", f"{sts_name(s)}-{o}", {"metadata": {
            "annotations": written_annotations([ipaddress.ip_address(ip)], node, epoch)}},
            namespace=NAMESPACE)


async def recreate_victim(api: KubeStandIn) -> dict[str, Any]:
    s, o = VICTIM
    name = f"{sts_name(s)}-{o}"
    old = await api.get("v1", "Pod", name, NAMESPACE)
    assert old is not None
    sts_uid = old["metadata"]["ownerReferences"][0]["uid"]
    await api.delete("v1", "Pod", name, NAMESPACE)
    return await api.create(pod_body(s, o, sts_uid, bound=False))


class LogWatch:
    """Tails the scheduler's log file; records when (monotonic) each line appeared."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pos = 0
        buf = b""
        while not self._stop.is_set():
            with contextlib.suppress(OSError), open(self.path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos += len(chunk)
                buf += chunk
            now = time.monotonic()
            *done, buf = buf.split(b"\n")
            for line in done:
                with contextlib.suppress(ValueError):
                    d = json.loads(line)
                    if isinstance(d, dict):
                        self.lines.append((now, d))
            self._stop.wait(0.005)

    def first(self, msg: str) -> float | None:
        return next((t for t, d in self.lines if d.get("msg") == msg), None)

    def count(self, msg: str, since: float, until: float) -> int:
        return sum(1 for t, d in self.lines if d.get("msg") == msg and since <= t <= until)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``stickyip ARGS`` as the container runs it, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "stickyip.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def get_pod(standin: KubeStandInThread, name: str) -> dict[str, Any]:
    pod = await asyncio.wrap_future(standin.submit(
        lambda api: api.get("v1", "Pod", name, NAMESPACE)))
    assert pod is not None, f"pod {name} is gone"
    return pod


async def wait_for(check: Callable[[], Awaitable[bool] | bool], within: float,
                   what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got if isinstance(got, bool) else await got:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within:.0f} s")
        await asyncio.sleep(0.01)


async def per_pass(ipam: RedisIpam, name: str, fn: Callable[[], Awaitable[Any]], n: int,
                   out: dict[str, Any]) -> None:
    await fn()  # warm: scripts loaded
    c0 = await redis_cpu(ipam)
    walls = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        walls.append(time.perf_counter() - t0)
    spent = (await redis_cpu(ipam) - c0) / n
    out[name] = {"redis_ms": round(spent * 1000, 3), "wall_ms_p50": round(
        percentile(walls, 50) * 1000, 2), "passes": n}
    print(f"  {name:34s} redis {spent * 1000:9.3f} ms/pass   wall p50 "
          f"{percentile(walls, 50) * 1000:9.1f} ms", flush=True)


async def pass_costs(url: str, pods: list[dict[str, Any]], nodes: list[dict[str, Any]],
                     sts: list[dict[str, Any]]) -> dict[str, Any]:
    """Each periodic pass at 100,000 records, in this process, on the same store."""
    client, _ = await open_redis(url, max_connections=64)
    ipam = RedisIpam(client, actor="bench")
    cache = ClusterCache()
    cache.replace("nodes", nodes)
    cache.replace("pods", pods)
    cache.replace("statefulsets", sts)
    pygc.freeze()
    settings = SchedulerSettings(identity="bench")  # the defaults the manifest keeps
    sched = Scheduler(settings, cache, ipam, None)
    out: dict[str, Any] = {}
    m = Metrics()
    await per_pass(ipam, "statistics", lambda: ipam_stats.collect(ipam, m, cache), 20, out)
    gcc = GcController(settings, ipam, None, cache)
    await per_pass(ipam, "gc", gcc.run_once, 6, out)
    out["gc"]["records_per_pass"] = gcc.last_visited
    total = sum((await ipam.stats(nodes=False)).records.values())
    out["gc"]["records"] = total
    out["gc"]["passes_per_cycle"] = -(-total // max(gcc.last_visited, 1))
    fo = FailoverController(settings, cache, ipam, None, sched)
    await fo.run_once()
    await per_pass(ipam, "failover_all_nodes_ready", fo.run_once, 20, out)
    rec = Reconciler(settings, cache, ipam, sched)
    await per_pass(ipam, "reconcile", lambda: check_against_cluster(ipam, rec.live_pods()),
                   2, out)
    await per_pass(ipam, "address_view", lambda: ipam.address_view(POOL), 20, out)

    # a node confirmed gone: only its 20 reservations are read and moved
    gone = node_name(0)
    cache.remove_node(NodeName(gone))
    c0, t0 = await redis_cpu(ipam), time.perf_counter()
    report = await fo.run_once()
    out["failover_one_node_gone"] = {
        "redis_ms": round((await redis_cpu(ipam) - c0) * 1000, 3),
        "wall_ms": round((time.perf_counter() - t0) * 1000, 1),
        "reservations_moved": len(report.moved)}
    print(f"  failover (one node gone)           {out['failover_one_node_gone']}", flush=True)

    # the baseline: what each statistics / failover / GC pass read before (every record)
    async def every_record() -> int:
        return len(await ipam.all_records(POOL))
    await per_pass(ipam, "baseline_read_every_record", every_record, 2, out)
    await ipam.aclose()
    pygc.unfreeze()
    return out


async def run(report: Report) -> None:
    args, env_literals = deployed_scheduler()
    detail: dict[str, Any] = {"nodes": NODES, "reservations": STATEFULSETS * REPLICAS,
                              "pods_running": STATEFULSETS * REPLICAS,
                              "manifest_args": args, "manifest_env": env_literals}
    tmp = Path(tempfile.mkdtemp(prefix="stickyip-bench-sched-"))
    with RedisServer() as server, KubeStandInThread(statefulset_controller=False) as standin:
        client, _ = await open_redis(server.url, max_connections=200)
        ipam = RedisIpam(client, actor="bench")
        t0 = time.monotonic()
        uids = await asyncio.wrap_future(standin.submit(fill_api))
        placed = await fill_store(ipam, uids)
        await asyncio.wrap_future(standin.submit(lambda api: annotate(api, placed)))
        victim = await asyncio.wrap_future(standin.submit(recreate_victim))
        home = placed[VICTIM][1]
        print(f"populated {len(placed)} reservations, {NODES} nodes, {len(uids)} pods in "
              f"{time.monotonic() - t0:.0f} s", flush=True)
        st = await ipam.stats(nodes=False)
        assert sum(st.records.values()) == STATEFULSETS * REPLICAS, st.records

        # Redis idle, nothing connected but this client
        c0, w0 = await redis_cpu(ipam), time.monotonic()
        await asyncio.sleep(IDLE_WINDOW)
        idle = (await redis_cpu(ipam) - c0) / (time.monotonic() - w0)

        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), **env_literals,
               "STICKYIP_SCHEDULER_METRICS_PORT": str(port),
               "STICKYIP_SCHEDULER_IDENTITY": "stickyip-scheduler-bench-0",
               "STICKYIP_SCHEDULER_LEASE_NAMESPACE": "stickyip-system",
               "STICKYIP_REDIS_URL": server.url, "STICKYIP_KUBE_HOST": standin.url}
        log_path = tmp / "scheduler.log"
        log_path.touch()
        watch = LogWatch(log_path)
        name = f"{sts_name(VICTIM[0])}-{VICTIM[1]}"

        async def bound() -> bool:
            return bool((await get_pod(standin, name))["spec"].get("nodeName"))

        t_spawn = time.monotonic()
        proc = spawn(args, env, log_path)
        try:
            await wait_for(bound, 120, "the first sticky decision")
            t_bound = time.monotonic()
            pod = await get_pod(standin, name)
            ann = pod["metadata"]["annotations"]
            correct = (pod["spec"]["nodeName"] == home
                       and ann.get("stickyip.io/ip") == placed[VICTIM][0]
                       and pod["metadata"]["uid"] == victim["metadata"]["uid"])
            ready = t_bound - t_spawn
            phases = {m: round(t - t_spawn, 3) for m in (
                "Kubernetes API server answers", "scheduler started", "pod bound",
                "reconciled the IPAM with the running pods") if (t := watch.first(m))}
            print(f"first sticky decision {ready:.2f} s after the process started "
                  f"(correct: {correct}); {phases}", flush=True)

            await wait_for(lambda: watch.first(
                "reconciled the IPAM with the running pods") is not None, 120,
                "the first reconciliation pass")
            detail["reconcile_at_start_s"] = round(
                (watch.first("reconciled the IPAM with the running pods") or 0) - t_spawn, 2)
            # the window: two GC passes (the first 60 s after start) and the rest
            c0, w0 = await redis_cpu(ipam), time.monotonic()
            await asyncio.sleep(WINDOW)
            w1 = time.monotonic()
            spent = await redis_cpu(ipam) - c0
            cores = spent / (w1 - w0)
            gc_passes = watch.count("gc pass", w0, w1)
            print(f"Redis at the default periods: {cores:.5f} cores over {w1 - w0:.0f} s "
                  f"({gc_passes} GC passes); idle Redis {idle:.5f} cores", flush=True)
            assert proc.poll() is None, "the scheduler exited"
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
            watch.stop()

        detail["ready"] = {"seconds": round(ready, 3), "correct": correct, "home": home,
                           "phases_s_after_spawn": phases}
        detail["window"] = {"seconds": round(w1 - w0, 1), "redis_cpu_s": round(spent, 4),
                            "gc_passes": gc_passes, "redis_idle_cores": round(idle, 5),
                            "periods": {"gc": 60, "statistics": 30, "failover": 5}}
        gc_lines = [d for _, d in watch.lines if d.get("msg") == "gc pass"]
        detail["gc_passes_logged"] = gc_lines[-3:]

        # each pass at 100,000 records, in this process
        objs = await asyncio.wrap_future(standin.submit(_everything))
        await ipam.aclose()
        detail["per_pass_at_100k"] = await pass_costs(server.url, *objs)
    report.row("scheduler_ready_s_100k_reservations", ready if correct else float("inf"),
               "s", 10, "lower")
    report.row("gc_stats_redis_cores_100k", cores, "cores", 0.05, "lower")
    report.detail["sched"] = detail


async def _everything(api: KubeStandIn) -> tuple[list[Any], list[Any], list[Any]]:
    return (await api.list("v1", "Pod"), await api.list("v1", "Node"),
            await api.list("apps/v1", "StatefulSet"))
