"""Killing the agent with SIGKILL and starting it again keeps established TCP
connections alive (programs stay attached, maps stay pinned), and the start-up diff
repairs only what differs (a deleted route and a detached filter come back; nothing
that was intact is recreated)."""

from __future__ import annotations

import os
import signal

from netbed.shell import sh
from netbed.testbed import Testbed, eventually


def _section(log: str, start: int) -> str:
    return log[log.find(f"--- start {start} ---"):]


async def test_kill9_restart_keeps_tcp_and_repairs_only_what_differs() -> None:
    async with Testbed(nodes=2) as tb:
        a = await tb.add_pod("node-1", "default", "client")
        b = await tb.add_pod("node-2", "default", "server")
        host_if = a.result["interfaces"][0]["name"]
        ifindex = tb.exec_in("node-1", ["cat", f"/sys/class/net/{host_if}/ifindex"])
        idx_before = tb.exec_in("node-1", ["ip", "-o", "link", "show", host_if]).stdout
        assert await tb.wait_ping(a, b.address)
        tb.serve_tcp(b, 7100)
        session = tb.tcp_session(a, b.address, 7100)
        pins = os.listdir(tb.nodes["node-1"].pin_root)
        assert {"stickyip_endpoints", "stickyip_ep_counters"} <= set(pins)

        tb.kill_agent("node-1", signal.SIGKILL)
        assert session.roundtrip("while-down")
        assert await tb.ping(a, b.address)
        await tb.start_agent("node-1")
        assert session.roundtrip("after-restart")
        log = _section(tb.agent_log("node-1"), 2)
        for word in ("veth created", "repairing", "re-attached", "routes synced"):
            assert word not in log, f"restart changed something intact: {word}"
        idx_after = tb.exec_in("node-1", ["ip", "-o", "link", "show", host_if]).stdout
        assert idx_after.split(b":")[0] == idx_before.split(b":")[0]
        del ifindex

        # Break two things while the agent is down; the next start repairs them.
        tb.kill_agent("node-1", signal.SIGKILL)
        tb.exec_in("node-1", ["ip", "route", "del", f"{a.address}/32"], check=True)
        tb.exec_in("node-1", ["tc", "filter", "del", "dev", host_if, "ingress", "pref", "1"],
                   check=True)
        assert tb.route("node-1", f"{a.address}/32") == ""
        await tb.start_agent("node-1")
        assert await eventually(lambda: host_if in tb.route("node-1", f"{a.address}/32"))
        filters = tb.exec_in("node-1", ["tc", "filter", "show", "dev", host_if, "ingress"])
        assert b"antispoof_ingress" in filters.stdout
        log = _section(tb.agent_log("node-1"), 3)
        assert "re-attached" in log and "veth created" not in log
        assert session.roundtrip("after-repair", timeout=20)
        session.close()


async def test_restart_drops_endpoints_whose_pod_is_gone_and_orphan_veths() -> None:
    async with Testbed(nodes=1) as tb:
        keep = await tb.add_pod("node-1", "default", "keep")
        gone = await tb.add_pod("node-1", "default", "gone")
        gone_owner = f"eph/{gone.container_id}/eth0"
        tb.kill_agent("node-1", signal.SIGKILL)
        # The runtime lost a pod while the agent was down, and someone left a veth
        # named like ours behind.
        tb.exec_in("node-1", ["ip", "link", "add", "sip0123456789ab", "type", "veth",
                              "peer", "name", "junk0"], check=True)
        tb.exec_in("node-1", ["ip", "link", "del", gone.result["interfaces"][0]["name"]],
                   check=True)
        sh("ip", "netns", "del", gone.netns)
        await tb.start_agent("node-1")
        eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]["endpoints"]
        assert [e["container_id"] for e in eps] == [keep.container_id]
        assert await tb.ipam.lease(pool=tb.pool, owner=gone_owner) is None  # type: ignore[arg-type]
        links = tb.exec_in("node-1", ["ip", "-o", "link"]).stdout.decode()
        assert "sip0123456789ab" not in links
        assert keep.result["interfaces"][0]["name"] in links
        assert await tb.ping("node-1", keep.address)
