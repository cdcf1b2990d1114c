"""Row ``pods_per_s_1000_fixed_ip`` of ``make bench-scale`` (issue 10): fixed-IP pods
started per second, from creating their StatefulSets until every pod is Ready with
its reserved address.

The bed (root only): 10 nodes as network namespaces with their agents as the
DaemonSet runs them (:func:`netbed.deployed.deployed_testbed`: its features hook,
flags and settings, the routing feed, pod lookups through the API), one redis-server,
and the API stand-in (:class:`kubestandin.KubeStandIn`) with its StatefulSet
controller calling the real ``stickyip webhook`` over HTTPS (a fresh CA) on every
opted-in Pod CREATE, as the manifests' MutatingWebhookConfiguration says. The real
``stickyip scheduler`` (the manifest's arguments and settings) binds them, and the
stand-in kubelet (:mod:`netbed.kubelet`) starts every bound pod: a fresh network
namespace, the real ``stickyip-cni`` ADD as the agent installs it on its node, then
the pod Running and Ready with the address CNI returned as podIP. 10 StatefulSets
of 100 replicas (``podManagementPolicy: Parallel``) are created at once.

The row is pods / seconds from the first StatefulSet create to the last pod Ready.
``detail`` holds the per-pod latencies (created → bound → Ready, p50/p99), the
server-side means of each component (webhook request, scheduler decision, agent CNI
request) from their own metrics, the CPU seconds each process spent, and the
configuration. The run is checked, and the group fails (raises) otherwise: every
pod Ready, its podIP the address its reservation holds, running on that
reservation's home node, annotated as the webhook/scheduler wrote it, known to that
node's agent, and no address twice.

Smaller runs for development: ``STICKYIP_BENCH_SCALE_PODS`` (1000),
``STICKYIP_BENCH_SCALE_NODES`` (10), ``STICKYIP_BENCH_SCALE_STATEFULSETS`` (10).
Run alone: ``python -m bench.scale pods``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import ssl
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench.common import Report, cpu_seconds, percentile
from bench.scale_sched import deployed_scheduler
from demo.procs import Supervisor, free_port, stickyip_command
from demo.story import admitted
from demo.system import SCHEDULER, https_ok, wait_leader
from demo.tls import TlsFiles, make_webhook_pair
from ipam.contract import ANN_POOL, LABEL_FIXED_IP
from kubestandin import KubeStandIn, WebhookTarget, objects
from kubestandin.resources import BY_KIND
from kubestandin.store import Event
from netbed.deployed import deployed_agent, deployed_command, deployed_testbed
from netbed.kubelet import Kubelet, TestbedRuntime

REPO = Path(__file__).resolve().parents[1]
WEBHOOK_MANIFEST = REPO / "manifests" / "base" / "webhook.yaml"
HOOKS_MANIFEST = REPO / "manifests" / "base" / "webhook-configurations.yaml"
PODS = int(os.environ.get("STICKYIP_BENCH_SCALE_PODS", "1000"))
NODES = int(os.environ.get("STICKYIP_BENCH_SCALE_NODES", "10"))
STATEFULSETS = int(os.environ.get("STICKYIP_BENCH_SCALE_STATEFULSETS", "10"))
#: seconds the whole start may take before the group fails
WITHIN = float(os.environ.get("STICKYIP_BENCH_SCALE_PODS_WITHIN", "900"))
NAMESPACE = "bench-pods"
#: pods one node's kubelet starts at the same time (CNI ADD in flight)
PARALLEL_STARTS = 4
TARGET = 20.0
PODS_RES = BY_KIND[("v1", "Pod")]


def deployed_webhook(manifest: Path = WEBHOOK_MANIFEST) -> tuple[list[str], dict[str, str]]:
    """The webhook container as the Deployment runs it (netbed.deployed)."""
    return deployed_command(manifest, "Deployment", "webhook")


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag``'s value replaced (or the pair appended)."""
    if flag in args:
        i = args.index(flag)
        return [*args[:i + 1], value, *args[i + 2:]]
    return [*args, flag, value]


def deployed_pod_hook(url: str, ca: Path) -> WebhookTarget:
    """The manifests' mutating Pod webhook, reached at ``url``: its name, selectors,
    failure policy and timeout (the stand-in has no CEL matchConditions; every pod
    here is owned by a StatefulSet, which is what they select)."""
    for doc in yaml.safe_load_all(HOOKS_MANIFEST.read_text()):
        if doc and doc.get("kind") == "MutatingWebhookConfiguration":
            hook = next(h for h in doc["webhooks"] if h["clientConfig"]["service"]["path"]
                        == "/mutate-pods")
            return WebhookTarget(url=url, ca_file=str(ca), name=hook["name"],
                                 object_selector=hook.get("objectSelector"),
                                 namespace_selector=hook.get("namespaceSelector"),
                                 failure_policy=hook["failurePolicy"],
                                 timeout_seconds=float(hook["timeoutSeconds"]))
    raise LookupError(f"{HOOKS_MANIFEST}: no MutatingWebhookConfiguration")


def histogram(text: str, name: str) -> dict[str, float]:
    """Sum and count of a Prometheus histogram (every label set added up)."""
    out = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}_(sum|count)(?:{{[^}}]*}})? (\S+)$", line)
        if m:
            out[m.group(1)] += float(m.group(2))
    return out


def mean_ms(h: dict[str, float]) -> float | None:
    return round(h["sum"] / h["count"] * 1000, 3) if h["count"] else None


class Timeline:
    """When (monotonic) each pod of the namespace was created, bound and Ready with a
    podIP, from the stand-in's own change stream."""

    def __init__(self, api: KubeStandIn) -> None:
        self.store = api.store
        self.created: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._queue = self.store.subscribe()
        self._task = asyncio.create_task(self._run(), name="bench-pods-timeline")

    async def _run(self) -> None:
        while True:
            ev: Event = await self._queue.get()
            now = time.monotonic()
            if ev.resource != PODS_RES or ev.type == "DELETED":
                continue
            meta, pod = ev.obj["metadata"], ev.obj
            if meta.get("namespace") != NAMESPACE:
                continue
            name = str(meta["name"])
            self.created.setdefault(name, now)
            if (pod.get("spec") or {}).get("nodeName"):
                self.bound.setdefault(name, now)
            status = pod.get("status") or {}
            if name not in self.ready and status.get("podIP") and any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or ()):
                self.ready[name] = now
                self.changed.set()

    async def close(self) -> None:
        self.store.unsubscribe(self._queue)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def statefulset(index: int, replicas: int, pool: str) -> dict[str, Any]:
    name = f"db{index:02d}"
    return objects.statefulset(name, NAMESPACE, replicas,
                               template_labels={"app": name, LABEL_FIXED_IP: "true"},
                               template_annotations={ANN_POOL: pool},
                               pod_management_policy="Parallel")


async def wait_all_ready(timeline: Timeline, pods: int, sup: Supervisor,
                         errors: list[str]) -> None:
    deadline = time.monotonic() + WITHIN
    while len(timeline.ready) < pods:
        sup.check_alive()
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{len(timeline.ready)} of {pods} pods Ready within "
                               f"{WITHIN:.0f} s; kubelet errors: {errors[-5:]}")
        timeline.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(timeline.changed.wait(), min(left, 5))


async def verify(api: KubeStandIn, bed: Any, pods: int) -> dict[str, Any]:
    """Every pod Ready at its reservation's address on its home node, as annotated,
    known to that node's agent, and no address twice; raises otherwise."""
    listed = await api.list("v1", "Pod", NAMESPACE)
    records = {(r.key.statefulset, r.key.ordinal): r
               for r in await bed.ipam.all_records(bed.pool)
               if r.key is not None and r.key.namespace == NAMESPACE}
    #: node -> the addresses of the sticky endpoints its agent set up
    endpoints: dict[str, set[str]] = {}
    for node in bed.nodes:
        eps = (await asyncio.to_thread(bed.agent_call, node, {"command": "ENDPOINTS"})
               )["result"]["endpoints"]
        endpoints[node] = {str(a) for e in eps if e.get("kind") == "sticky"
                           for a in e.get("addresses") or ()}
    problems: list[str] = []
    seen: dict[str, str] = {}
    for pod in listed:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        name, ip, node = meta["name"], status.get("podIP", ""), spec.get("nodeName", "")
        sts, _, ordinal = name.rpartition("-")
        rec = records.get((sts, int(ordinal)))
        if rec is None:
            problems.append(f"{name}: no reservation")
            continue
        if ip != str(rec.address):
            problems.append(f"{name}: podIP {ip!r}, reservation {rec.address}")
        if node != rec.node:
            problems.append(f"{name}: runs on {node!r}, reservation homed on {rec.node}")
        if not admitted(pod):
            problems.append(f"{name}: annotations/schedulerName disagree with where it runs")
        if ip not in endpoints.get(node, set()):
            problems.append(f"{name}: the agent on {node} has no sticky endpoint {ip}")
        if ip in seen:
            problems.append(f"{name}: address {ip} also held by {seen[ip]}")
        seen[ip] = name
    if len(listed) != pods or len(records) != pods:
        problems.append(f"{len(listed)} pods and {len(records)} reservations, want {pods}")
    if problems:
        raise AssertionError(f"{len(problems)} problems, e.g. {problems[:10]}")
    per_node = {n: sum(1 for p in listed if p["spec"].get("nodeName") == n) for n in bed.nodes}
    return {"pods_checked": len(listed), "distinct_addresses": len(seen),
            "pods_per_node": per_node}


async def run(report: Report) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("bench.scale_pods needs root (network namespaces, eBPF)")
    replicas = PODS // STATEFULSETS
    pods = replicas * STATEFULSETS
    work = Path(tempfile.mkdtemp(prefix="stickyip-bench-pods-"))
    detail: dict[str, Any] = {"pods": pods, "statefulsets": STATEFULSETS,
                              "replicas": replicas, "nodes": NODES, "cores": os.cpu_count()}
    report.detail["pods"] = detail
    tls = make_webhook_pair(work)
    port = free_port()
    hook = deployed_pod_hook(f"https://127.0.0.1:{port}/mutate-pods", tls.ca)
    # The agents' pod lookups, webhook calls, bindings, status writes and Events add
    # up to ~10 changes per pod: keep the whole run in the watch history.
    standin = {"statefulset_controller": True, "mutating_webhooks": [hook],
               "history_size": max(20000, 30 * pods)}
    try:
        async with deployed_testbed(nodes=NODES, pool_cidr="10.242.0.0/16",
                                    installed_plugin=True, standin=standin) as (bed, api):
            assert api is not None
            sup = Supervisor(work)
            kubelet: Kubelet | None = None
            timeline: Timeline | None = None
            try:
                kubelet, timeline = await measure(report, detail, bed, api, sup, tls, port,
                                                  hook, pods, replicas)
            finally:
                # Before the bed goes (it removes every pod namespace, agent and Redis).
                if timeline is not None:
                    await timeline.close()
                if kubelet is not None:
                    await kubelet.stop(remove_pods=False)
                sup.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def measure(report: Report, detail: dict[str, Any], bed: Any, api: KubeStandIn,
                  sup: Supervisor, tls: TlsFiles, port: int, hook: WebhookTarget,
                  pods: int, replicas: int) -> tuple[Kubelet, Timeline]:
    env = {"PYTHONPATH": str(REPO), "STICKYIP_REDIS_URL": bed.redis_url,
           "STICKYIP_KUBE_HOST": api.url}
    wargs, wenv = deployed_webhook()
    wargs = with_flag(with_flag(with_flag(wargs, "--cert", str(tls.cert)),
                                "--key", str(tls.key)), "--port", str(port))
    webhook = sup.start("webhook", [*stickyip_command(), *wargs, "--host", "127.0.0.1"],
                        env=env | wenv)
    await sup.wait_until(webhook, lambda: https_ok(port, tls.ca, "/readyz"),
                         within=60, what="ready (/readyz)")
    await api.create(objects.namespace(NAMESPACE))
    for name, node in bed.nodes.items():
        await api.create(objects.node(name, internal_ip=node.address, pods="250"))
    sargs, senv = deployed_scheduler()
    metrics_port = free_port()
    scheduler = sup.start("scheduler", [*stickyip_command(), *sargs], env=env | senv | {
        "STICKYIP_SCHEDULER_METRICS_PORT": str(metrics_port),
        "STICKYIP_SCHEDULER_IDENTITY": "stickyip-scheduler-bench-0"})
    await wait_leader(api, scheduler, name=SCHEDULER)
    errors: list[str] = []
    # Each node's kubelet starts its pods in parallel (a pod worker each): the runtime's
    # namespace and CNI calls run in threads, as many as the nodes' kubelets would run
    # together, not the loop's default pool (CPUs + 4 threads for the whole cluster).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=PARALLEL_STARTS * NODES,
                           thread_name_prefix="kubelet"))
    kubelet = Kubelet(api, TestbedRuntime(bed), list(bed.nodes), on_error=errors.append)
    kubelet.start()
    timeline = Timeline(api)
    procs: dict[str, list[int]] = {
        "webhook": [webhook.proc.pid], "scheduler": [scheduler.proc.pid],
        "agents": [n.agent.pid for n in bed.nodes.values() if n.agent is not None],
        "redis": [bed.redis.proc.pid] if bed.redis and bed.redis.proc else [],
        "feed": [bed.feed_proc.pid] if bed.feed_proc is not None else [],
    }
    cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
    own0 = os.times()

    t0 = time.monotonic()
    for i in range(STATEFULSETS):
        await api.create(statefulset(i, replicas, bed.pool))
    await wait_all_ready(timeline, pods, sup, errors)
    elapsed = max(timeline.ready.values()) - t0
    rate = pods / elapsed

    own1 = os.times()
    cpu = {k: round(sum(cpu_seconds(p) for p in v) - cpu0[k], 2) for k, v in procs.items()}
    cpu["bench_process"] = round(own1.user + own1.system - own0.user - own0.system, 2)
    cpu["children"] = round(own1.children_user + own1.children_system
                            - own0.children_user - own0.children_system, 2)
    detail.update({"start_seconds": round(elapsed, 2), "pods_per_s": round(rate, 2)})
    print(f"{pods} pods Ready in {elapsed:.1f} s: {rate:.1f} pods/s; verifying", flush=True)
    detail["verified"] = await verify(api, bed, pods)
    report.row("pods_per_s_1000_fixed_ip", rate, "1/s", TARGET, "higher")

    names = list(timeline.ready)

    def lat(xs: list[float]) -> dict[str, float]:
        return {"p50_s": round(percentile(xs, 50), 3), "p99_s": round(percentile(xs, 99), 3),
                "max_s": round(max(xs), 3)}

    web = await scrape(f"https://127.0.0.1:{port}/metrics", tls.ca)
    sch = await scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    agent_cni = {"sum": 0.0, "count": 0.0}
    for name in bed.nodes:
        text = (await asyncio.to_thread(
            bed.exec_in, name, ["curl", "-s", "http://127.0.0.1:9402/metrics"])
                ).stdout.decode(errors="replace")
        h = histogram(text, "stickyip_datapath_cni_request_seconds")
        agent_cni = {k: agent_cni[k] + h[k] for k in agent_cni}
    agent = deployed_agent()
    detail.update({
        "first_ready_s": round(min(timeline.ready.values()) - t0, 2),
        "last_created_s": round(max(timeline.created.values()) - t0, 2),
        "created_to_ready": lat([timeline.ready[n] - timeline.created[n] for n in names]),
        "created_to_bound": lat([timeline.bound[n] - timeline.created[n] for n in names]),
        "bound_to_ready": lat([timeline.ready[n] - timeline.bound[n] for n in names]),
        "server_side_mean_ms": {
            "webhook_request": mean_ms(histogram(
                web, "stickyip_webhook_request_duration_seconds")),
            "scheduler_decision": mean_ms(histogram(sch, "stickyip_scheduler_decision_seconds")),
            "agent_cni_request": mean_ms(agent_cni),
        },
        "cpu_seconds": cpu,
        "cpu_seconds_note": "bench_process: the API stand-in, its StatefulSet controller, "
                            "the kubelet and the relays; children: every stickyip-cni run "
                            "and 'ip netns add'",
        "kubelet_errors": errors[-5:],
        "configuration": {
            "api": "kubestandin.KubeStandIn in the bench process (StatefulSet controller, "
                   "podManagementPolicy Parallel; calls the mutating webhook over HTTPS on "
                   "every opted-in Pod CREATE)",
            "webhook": f"stickyip webhook process with the manifest's arguments, HTTPS with "
                       f"a fresh CA; {hook.name} failurePolicy {hook.failure_policy}, "
                       f"timeout {hook.timeout_seconds:g} s",
            "scheduler": f"stickyip scheduler process, the manifest's arguments {sargs}",
            "agents": f"{NODES} stickyip agent processes in node namespaces, the DaemonSet's "
                      f"profile: hooks {list(agent.hooks)}, env {agent.env}, "
                      f"routing feed {agent.feed}",
            "kubelet": "netbed.kubelet.Kubelet with TestbedRuntime: a fresh netns per pod, "
                       "the installed stickyip-cni ADD, then Ready with the podIP CNI "
                       f"returned (no container is started); up to {PARALLEL_STARTS * NODES} "
                       "pod starts in flight",
            "store": "redis-server (AOF everysec)",
        },
    })
    c2r = detail["created_to_ready"]
    print(f"created->ready p50 {c2r['p50_s']} s, p99 {c2r['p99_s']} s; "
          f"server-side means {detail['server_side_mean_ms']}; cpu s {cpu}", flush=True)
    return kubelet, timeline


async def scrape(url: str, ca: Path | None = None) -> str:
    """GET a metrics page from this process's loopback."""

    def get() -> str:
        ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return str(r.read().decode())

    return await asyncio.to_thread(get)
