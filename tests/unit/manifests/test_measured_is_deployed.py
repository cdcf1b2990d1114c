"""What ships is what is measured: the demo and the node benchmark run the agent
with the hooks, flags and settings of the DaemonSet (read by netbed.deployed from
the manifest), and every installed CNI plugin is the same file, whoever installs it.
Any drift between the manifest and what they run fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import netbed.deployed as deployed_mod
import netbed.testbed
from datapath import cni
from demo.datapath import Datapath, Node
from netbed.deployed import deployed_agent
from tests.unit.manifests.conftest import ROOT, agent_cni_install, find, rendered


def test_netbed_reads_what_kustomize_renders(tmp_path: Path) -> None:
    """The manifest file netbed reads says what the rendered DaemonSet says."""
    ds = find(rendered("default"), "DaemonSet", "stickyip-agent")
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(ds))
    ours = deployed_agent()
    assert deployed_agent(tmp_path / "agent.yaml") == ours
    assert ours.hooks == ("datapath.features.hook:hook",)
    assert ours.kube


def test_the_demo_runs_the_deployed_agent(tmp_path: Path) -> None:
    agent = deployed_agent()
    settings = agent.settings()
    dp = Datapath(fast=False)
    node = Node(name="node-1", index=1, netns="n1", address="192.0.2.1", dir=tmp_path,
                socket_dir=tmp_path)
    cmd = dp._agent_command(node)
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--hook"] == list(agent.hooks)
    assert cmd[cmd.index("--sync-interval") + 1] == str(settings.sync_interval)
    assert cmd[cmd.index("--metrics-port") + 1] == str(settings.metrics_port)
    for flag in agent.flags:
        assert flag in cmd
    env = dp.agent_env("http://127.0.0.1:1")
    assert agent.env.items() <= env.items()


class _Captured(Exception):
    pass


async def test_the_benchmark_bed_is_the_deployed_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """deployed_testbed hands the Testbed the DaemonSet's hooks, flags, settings and
    an API for its pod lookup."""
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)
            raise _Captured

    monkeypatch.setattr(netbed.testbed, "Testbed", Recorder)
    with pytest.raises(_Captured):
        async with deployed_mod.deployed_testbed(nodes=1):
            pass
    agent = deployed_agent()
    assert tuple(seen["hooks"]) == agent.hooks
    assert tuple(seen["agent_args"]) == agent.flags
    assert seen["sync_interval"] == agent.settings().sync_interval
    assert seen["feed"] is agent.feed is True  # the DaemonSet's agents follow the feed
    assert agent.env.items() <= seen["agent_env"].items()
    assert seen["agent_env"]["STICKYIP_KUBE_HOST"].startswith("http://127.0.0.1:")
    assert seen["relay"] is not None


def test_the_node_benchmark_starts_every_bed_as_deployed() -> None:
    tree = ast.parse((ROOT / "bench" / "node.py").read_text())
    calls = [n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "Testbed" not in calls, "bench/node.py starts a bed that is not the deployed agent"
    beds = {f.name for f in ast.walk(tree) if isinstance(f, ast.AsyncFunctionDef)
            and any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                    and c.func.id == "deployed_testbed" for c in ast.walk(f))}
    assert {"cni_and_cold_start", "convergence"} <= beds


def test_every_installer_writes_the_same_plugin_file(tmp_path: Path) -> None:
    """The DaemonSet's init step, the agent's --cni-bin-dir and the benchmarks all
    write the plugin with datapath.cni.install: the node's Python, with -S."""
    _, init, _ = agent_cni_install(rendered("default"))
    node = tmp_path / "node"
    script = init["args"][0].replace("/host/", f"{node}/").replace(
        "/etc/stickyip/cni/10-stickyip.conflist", str(tmp_path / "conflist"))
    (tmp_path / "conflist").write_text("{}")
    (node / "opt/cni/bin").mkdir(parents=True)
    (node / "etc/cni/net.d").mkdir(parents=True)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    subprocess.run(["sh", "-ec", script], env=env, check=True, capture_output=True, timeout=60)
    by_agent = Path(cni.install(str(tmp_path / "agent")))
    deployed = (node / "opt/cni/bin/stickyip-cni").read_bytes()
    assert deployed == by_agent.read_bytes()
    assert deployed.splitlines()[0] == f"#!{cni.NODE_PYTHON} -S".encode()
