"""Node datapath benchmark (root): CNI ADD latency with a warm agent, agent cold start
with 200 pods to restore, and route convergence after a block move (direct and BGP).

Run with ``make bench-datapath-node``; writes ``bench/results/node.json``. Baselines
measured in the same run: a bare interpreter start and the plugin's VERSION command
(which never talks to the agent) bound what any Python CNI plugin can reach.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import Report, percentile
from datapath.cni import NODE_PYTHON
from ipam import ReservationKey, contract
from kubestandin import objects
from netbed.deployed import deployed_agent, deployed_testbed
from netbed.testbed import eventually

PODS = int(os.environ.get("STICKYIP_BENCH_PODS", "200"))
ROUNDS = int(os.environ.get("STICKYIP_BENCH_ROUNDS", "3"))
MOVES = 5


def _timed(cmd: list[str], env: dict[str, str] | None = None, stdin: bytes = b"") -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, input=stdin, env=env, capture_output=True, check=False)
    return time.perf_counter() - t0


def _first_line(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.readline().strip()


def sticky_pod(sts: str, ordinal: int, namespace: str, pool: str) -> dict[str, Any]:
    """A fixed-IP StatefulSet pod as the API server holds it once admitted (labels and
    owner the StatefulSet controller writes, the opt-in and the pool)."""
    name = f"{sts}-{ordinal}"
    body = objects.pod(name, namespace, labels={
        contract.LABEL_FIXED_IP: "true", contract.LABEL_POD_INDEX: str(ordinal),
        contract.LABEL_POD_NAME: name, "app": sts}, annotations={contract.ANN_POOL: pool})
    body["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                            "name": sts, "uid": f"uid-{sts}",
                                            "controller": True}]
    return body


async def cni_and_cold_start(report: Report) -> None:
    # The agent as the DaemonSet runs it (netbed.deployed): the features hook, the pod
    # lookup through the Kubernetes API (the stand-in), the agent's own poll interval,
    # and the plugin as the init container installs it (tb.installed_plugin).
    async with deployed_testbed(nodes=1, pool_cidr="10.240.0.0/16",
                                installed_plugin=True) as (tb, api):
        assert api is not None, "the DaemonSet's agent reads pods from the API"
        installed = str(tb.nodes["node-1"].dir / "cni-bin" / "stickyip-cni")
        # The interpreter the installed plugin runs on (its shebang), bare.
        base_py = [_timed([NODE_PYTHON, "-c", "pass"]) for _ in range(30)]
        base_py_s = [_timed([NODE_PYTHON, "-S", "-c", "pass"]) for _ in range(30)]
        base_ver = [_timed([installed], env={"CNI_COMMAND": "VERSION"}) for _ in range(30)]
        # Fixed-IP pods: admitted and scheduled before their ADD, as in a cluster (the
        # webhook claimed the reservation, the scheduler homed it on this node).
        for i in range(PODS // 2):
            await api.create(sticky_pod("db", i, "bench", tb.pool))
            await tb.ipam.claim(ReservationKey.of("bench", "db", i), pool=tb.pool,
                                node="node-1")
        # Ephemeral and fixed-IP pods take turns, so machine noise falls on both alike.
        adds: dict[str, list[float]] = {"ephemeral": [], "sticky": []}
        for i in range(PODS):
            netns = tb.new_pod_netns()
            if i % 2 == 0:
                kind, name = "ephemeral", f"web-{i // 2}"
                await api.create(objects.pod(name, "bench"))
            else:
                kind, name = "sticky", f"db-{i // 2}"
            t0 = time.perf_counter()
            pod = await tb.add_pod("node-1", "bench", name, netns=netns)
            adds[kind].append(time.perf_counter() - t0)
            if kind == "sticky":
                res = await tb.ipam.reservation(ReservationKey.of("bench", "db", i // 2))
                got = pod.result["ips"][0]["address"].split("/")[0]
                assert res is not None and str(res.address) == got and res.holder, (
                    f"{name} did not get its reservation ({got}, {res})")
        # The venv's console script, for comparison (not what a node runs).
        tb.installed_plugin = False
        console = []
        for i in range(30):
            await api.create(objects.pod(f"cs-{i}", "bench"))
            netns = tb.new_pod_netns()
            t0 = time.perf_counter()
            cs = await tb.add_pod("node-1", "bench", f"cs-{i}", netns=netns)
            console.append(time.perf_counter() - t0)
            await tb.del_pod(cs)  # the node keeps exactly PODS pods for the restart
        tb.installed_plugin = True
        ms = {k: {"p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000,
                  "max_ms": max(v) * 1000, "n": len(v)}
              for k, v in {**adds, "console_script": console}.items()}
        shipped = ms["ephemeral"]["p50_ms"]
        report.row("cni_add_p50_ms", shipped, "ms", 50, "lower")
        report.row("cni_add_shipped_p50_ms", shipped, "ms", 50, "lower")
        report.row("cni_add_sticky_p50_ms", ms["sticky"]["p50_ms"], "ms", 50, "lower")
        ver50 = percentile(base_ver, 50) * 1000
        deployed = deployed_agent()
        report.detail["agent"] = {"hooks": list(deployed.hooks), "flags": list(deployed.flags),
                                  "env": deployed.env, "plugin_shebang": _first_line(installed),
                                  "plugin": "installed by the agent as the init container "
                                            "does (datapath.cni.install)"}
        report.detail["cni_add"] = {
            "pods": PODS, "ephemeral": ms["ephemeral"], "sticky": ms["sticky"],
            "console_script_ephemeral": ms["console_script"],
            "baseline_python_start_p50_ms": percentile(base_py, 50) * 1000,
            "baseline_python_S_start_p50_ms": percentile(base_py_s, 50) * 1000,
            "baseline_plugin_version_p50_ms": ver50,
            "agent_share_ms": shipped - ver50,
            "add_over_version_ratio": shipped / ver50,
            "note": "ephemeral and fixed-IP pods take turns; a fixed-IP pod's reservation "
                    "exists and is homed on the node (webhook and scheduler did their part); "
                    "cni_add_p50_ms and cni_add_shipped_p50_ms are the same measurement",
        }

        starts = []
        for _ in range(ROUNDS):
            tb.kill_agent("node-1")
            t0 = time.perf_counter()
            await tb.start_agent("node-1")
            starts.append(time.perf_counter() - t0)
        eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]["endpoints"]
        assert len(eps) == PODS, f"restored {len(eps)} of {PODS} endpoints"
        cold = statistics.median(starts)
        report.row("agent_cold_start_s", cold, "s", 5, "lower")
        report.row("agent_cold_start_shipped_s", cold, "s", 5, "lower")
        report.detail["agent_cold_start"] = {
            "pods_restored": len(eps), "runs_s": starts, "statistic": "median of runs",
            "includes": "process start, the features hook's bcc compile and load, the "
                        "anti-spoofing program's compile, restoring every endpoint, the "
                        "first route sync, until the agent prints 'agent ready'"}


async def convergence(report: Report, routing: str) -> None:
    # The agent as deployed, at its own poll interval (not the test bed's faster one).
    async with deployed_testbed(nodes=3, routing=routing,
                                pool_cidr="10.241.0.0/16") as (tb, api):
        if api is not None:
            await api.create(objects.pod("seed", "bench"))
        await tb.add_pod("node-1", "bench", "seed")
        geo = (await tb.ipam.pool(tb.pool)).geo
        block = next(b for b in (await tb.ipam.routing_view()).blocks if b.node == "node-1")
        cidr = str(geo.block_cidr(block.index))
        if routing == "bgp":
            assert await tb.wait_route("node-3", cidr, "proto bird", within=60)
        else:
            assert await tb.wait_route("node-3", cidr, "via", within=10)
        samples = []
        here, there = "node-1", "node-2"
        for _ in range(MOVES):
            t0 = time.perf_counter()
            await tb.ipam.rehome_block(pool=tb.pool, block=block.index, from_node=here,
                                       to_node=there)
            want, old = f"via {tb.nodes[there].address}", f"via {tb.nodes[here].address}"

            def moved(w: str = want, o: str = old) -> bool:
                r = tb.route("node-3", cidr)
                return w in r and o not in r
            ok = await eventually(moved, within=60, every=0.01)
            samples.append(time.perf_counter() - t0 if ok else float("inf"))
            here, there = there, here
        name = f"route_convergence_{routing}_s"
        report.row(name, statistics.median(samples), "s", 1 if routing == "direct" else 5,
                   "lower")
        detail: dict[str, Any] = {"moves_s": samples, "sync_interval_s": tb.sync_interval}
        report.detail[name] = detail


async def main() -> None:
    if os.geteuid() != 0:
        print("bench.node needs root (network namespaces, eBPF, BIRD)", file=sys.stderr)
        sys.exit(2)
    report = Report("node")
    await cni_and_cold_start(report)
    await convergence(report, "direct")
    await convergence(report, "bgp")
    report.write()


if __name__ == "__main__":
    asyncio.run(main())
