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
from kubestandin import objects
from netbed.deployed import deployed_agent, deployed_testbed
from netbed.testbed import BIN, eventually

PODS = int(os.environ.get("STICKYIP_BENCH_PODS", "200"))
MOVES = 5


def _timed(cmd: list[str], env: dict[str, str] | None = None, stdin: bytes = b"") -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, input=stdin, env=env, capture_output=True, check=False)
    return time.perf_counter() - t0


def _first_line(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.readline().strip()


async def cni_and_cold_start(report: Report) -> None:
    # The agent as the DaemonSet runs it (netbed.deployed): the features hook, the pod
    # lookup through the Kubernetes API (the stand-in), the agent's own poll interval.
    async with deployed_testbed(nodes=1, pool_cidr="10.240.0.0/16") as (tb, api):
        installed = str(tb.nodes["node-1"].dir / "cni-bin" / "stickyip-cni")
        # The interpreter the installed plugin runs on (its shebang), bare.
        base_py = [_timed([NODE_PYTHON, "-c", "pass"]) for _ in range(30)]
        base_py_s = [_timed([NODE_PYTHON, "-S", "-c", "pass"]) for _ in range(30)]
        base_ver = [_timed([installed], env={"CNI_COMMAND": "VERSION"}) for _ in range(30)]
        base_ver_console = [_timed([str(BIN / "stickyip-cni")], env={"CNI_COMMAND": "VERSION"})
                            for _ in range(30)]
        # Take turns: even pods through the plugin as installed on the node (what a
        # runtime runs from its CNI bin dir), odd ones through the venv console script.
        adds: dict[str, list[float]] = {"installed": [], "console": []}
        for i in range(PODS):
            netns = tb.new_pod_netns()
            kind = "installed" if i % 2 == 0 else "console"
            tb.installed_plugin = kind == "installed"
            if api is not None:
                await api.create(objects.pod(f"pod-{i}", "bench"))
            t0 = time.perf_counter()
            await tb.add_pod("node-1", "bench", f"pod-{i}", netns=netns)
            adds[kind].append(time.perf_counter() - t0)
        ms = {k: {"p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000,
                  "max_ms": max(v) * 1000, "n": len(v)} for k, v in adds.items()}
        p50 = ms["installed"]["p50_ms"]
        report.row("cni_add_p50_ms", p50, "ms", 50, "lower")
        ver50 = percentile(base_ver, 50) * 1000
        deployed = deployed_agent()
        shebang = _first_line(installed)
        report.detail["agent"] = {"hooks": list(deployed.hooks), "flags": list(deployed.flags),
                                  "env": deployed.env, "plugin_shebang": shebang}
        report.detail["cni_add"] = {
            "pods": PODS, "installed_plugin": ms["installed"], "console_script": ms["console"],
            "baseline_python_start_p50_ms": percentile(base_py, 50) * 1000,
            "baseline_python_S_start_p50_ms": percentile(base_py_s, 50) * 1000,
            "baseline_plugin_version_p50_ms": ver50,
            "baseline_console_version_p50_ms": percentile(base_ver_console, 50) * 1000,
            "agent_share_ms": p50 - ver50,
            "add_over_version_ratio": p50 / ver50,
        }

        starts = []
        for _ in range(3):
            tb.kill_agent("node-1")
            t0 = time.perf_counter()
            await tb.start_agent("node-1")
            starts.append(time.perf_counter() - t0)
        eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]["endpoints"]
        assert len(eps) == PODS, f"restored {len(eps)} of {PODS} endpoints"
        cold = statistics.median(starts)
        report.row("agent_cold_start_s", cold, "s", 5, "lower")
        report.detail["agent_cold_start"] = {"pods_restored": len(eps), "runs_s": starts}


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
            ok = await eventually(
                lambda w=want, o=old: w in (r := tb.route("node-3", cidr)) and o not in r,
                within=60, every=0.01)
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
