"""The agent, run with the hooks the DaemonSet gives it, serves every metric the
shipped alert rules and dashboard read that docs/observability.md assigns to the
agent: among them the fill level of every pinned eBPF map (entries and capacity,
for StickyipBpfMapNearlyFull) and the datapath's drops by reason."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from datapath import maps
from netbed.testbed import Testbed
from tests.support.monitoring import monitored, served
from tests.unit.manifests.conftest import find, rendered
from tests.unit.manifests.test_manifest_invariants import named_container

ROOT = str(Path(__file__).resolve().parents[2])
METRICS = ("import urllib.request;"
           "print(urllib.request.urlopen('http://127.0.0.1:9402/metrics').read().decode())")


def _deployed_hooks() -> list[str]:
    pod = find(rendered("default"), "DaemonSet", "stickyip-agent")["spec"]["template"]["spec"]
    args = named_container(pod, "agent")["args"]
    return [args[i + 1] for i, a in enumerate(args) if a == "--hook"]


async def test_the_agent_serves_every_metric_the_monitoring_reads() -> None:
    hooks = _deployed_hooks()
    assert hooks, "the DaemonSet runs the agent without its features hook"
    async with Testbed(nodes=1, hooks=hooks, agent_env={"PYTHONPATH": ROOT}) as tb:
        await tb.add_pod("node-1", "default", "web")
        text = tb.exec_in("node-1", [sys.executable, "-c", METRICS]).stdout.decode()

    missing = monitored("agent") - served(text)
    assert not missing, f"the monitoring reads metrics the agent does not serve: {missing}"

    families = {f.name: f for f in text_string_to_metric_families(text)}
    entries = {s.labels["map"]: s.value for s in families["stickyip_bpf_map_entries"].samples}
    capacity = {s.labels["map"]: s.value
                for s in families["stickyip_bpf_map_max_entries"].samples}
    # Every pinned map of the anti-spoofing and the feature programs, with its size.
    assert set(entries) == set(capacity) == set(maps.ALL)
    assert all(capacity[m] > 0 and 0 <= entries[m] <= capacity[m] for m in maps.ALL)
    assert entries["stickyip_endpoints"] == 1  # the one pod
    drops = {s.labels["reason"] for s in families["stickyip_datapath_drops"].samples
             if s.name == "stickyip_datapath_drops_total"}
    assert {"spoofed", "fenced", "other", "policy"} <= drops
