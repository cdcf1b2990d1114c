"""BGP mode with a configured router outside the node mesh (STICKYIP_AGENT_BGP_PEERS,
as overlays/bgp sets it): every node opens an eBGP session to it and it learns every
node's block, as a top-of-rack router would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from netbed.testbed import Testbed, eventually

ROOT = str(Path(__file__).resolve().parents[2])
TOR_AS = 64513


def _tor_config(address: str, nodes: list[str]) -> str:
    lines = [f"router id {address};", "protocol device { scan time 10; }",
             "protocol kernel { ipv4 { import none; export all; }; scan time 10; }"]
    for i, node in enumerate(nodes):
        lines += [f"protocol bgp node{i} {{", f"  local as {TOR_AS};",
                  f"  neighbor {node} as 64512;", "  direct;", "  connect retry time 1;",
                  "  ipv4 { import all; export none; };", "}"]
    return "\n".join(lines) + "\n"


def _start_router(work: Path, netns: str, address: str,
                  nodes: list[str]) -> subprocess.Popen[bytes]:
    conf = work / "tor.conf"
    conf.write_text(_tor_config(address, nodes))
    with open(work / "tor.log", "wb") as log:
        return subprocess.Popen(["ip", "netns", "exec", netns, "bird", "-f", "-c", str(conf),
                                 "-s", str(work / "tor.ctl"), "-P", str(work / "tor.pid")],
                                stdout=log, stderr=log)


def _routes(netns: str) -> str:
    return subprocess.run(["ip", "-n", netns, "route", "show", "proto", "bird"],
                          capture_output=True, text=True).stdout


def _protocols(work: Path) -> str:
    return subprocess.run(["birdc", "-s", str(work / "tor.ctl"), "show", "protocols", "all"],
                          capture_output=True, text=True).stdout


async def test_every_node_announces_its_block_to_the_configured_router(tmp_path: Path) -> None:
    async with Testbed(nodes=2, routing="bgp", agent_env={"PYTHONPATH": ROOT}) as tb:
        await tb.add_pod("node-1", "default", "a")
        await tb.add_pod("node-2", "default", "b")
        # The router: one more namespace on the nodes' network (removed with the bed).
        _, tor, tor_address = tb.fabric.add_node()
        bird = _start_router(tmp_path, tor, tor_address, [n.address for n in tb.nodes.values()])
        try:
            # The agents, restarted with the router as their external peer.
            tb.agent_env["STICKYIP_AGENT_BGP_PEERS"] = json.dumps([f"{tor_address} {TOR_AS}"])
            for name in tb.nodes:
                tb.kill_agent(name)
                await tb.start_agent(name)
            blocks = [str(b.cidr) for b in (await tb.ipam.routing_view()).blocks]
            assert len(blocks) == 2
            assert await eventually(lambda: all(c in _routes(tor) for c in blocks),
                                    within=60), _protocols(tmp_path)
        finally:
            bird.terminate()
            bird.wait(timeout=30)
