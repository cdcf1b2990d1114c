"""CNI DEL never blocks teardown (issue 11.7), with the real plugin and the real agent
in a network namespace: while the agent is down, DEL succeeds and records the deletion
in the node's queue on disk; ADD keeps answering "try again" (11); the agent, once
started, replays the queue — the ephemeral lease freed, the sticky reservation unbound
(its address kept for the ordinal), veths and records gone — before it serves."""

from __future__ import annotations

import json
import signal

from ipam import ReservationKey
from netbed.shell import sh
from netbed.testbed import Testbed


async def test_del_while_the_agent_is_down_is_queued_and_replayed_at_start() -> None:
    async with Testbed(nodes=1, installed_plugin=True) as tb:  # the plugin the agent installs
        key = ReservationKey.of("default", "db", 0)
        await tb.ipam.claim(key, pool=tb.pool)
        plain = await tb.add_pod("node-1", "default", "plain")
        sticky = await tb.add_pod("node-1", "default", "db-0", uid="uid-db-0")
        bound = await tb.ipam.reservation(key)
        assert bound is not None and bound.holder == "uid-db-0"
        eph_owner = f"eph/{plain.container_id}/eth0"
        queue = tb.nodes["node-1"].delete_queue

        tb.kill_agent("node-1", signal.SIGKILL)
        for pod in (plain, sticky):
            call = await tb.del_pod(pod, remove_netns=True)  # the runtime then drops the netns
            assert (call.rc, call.out) == (0, None), call
        again = tb.cni("node-1", "DEL", container_id=plain.container_id, netns="")
        assert (again.rc, again.out) == (0, None), "a repeated DEL is queued once"
        entries = sorted(p.name for p in queue.glob("*.delete"))
        assert entries == sorted(f"{p.container_id}-eth0.delete" for p in (plain, sticky))
        queued = json.loads((queue / f"{plain.container_id}-eth0.delete").read_text())
        assert queued["containerId"] == plain.container_id and queued["ifname"] == "eth0"
        # nothing was released yet: the agent does that
        assert await tb.ipam.lease(pool=tb.pool, owner=eph_owner) is not None  # type: ignore[arg-type]

        netns = tb.new_pod_netns()
        add = tb.cni("node-1", "ADD", container_id="while-down", netns=f"/run/netns/{netns}",
                     args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=x;K8S_POD_UID=u")
        assert add.rc != 0 and add.out is not None and add.out["code"] == 11, add
        assert "not running" in add.out["msg"]

        await tb.start_agent("node-1")
        assert list(queue.glob("*.delete")) == []
        assert await tb.ipam.lease(pool=tb.pool, owner=eph_owner) is None  # type: ignore[arg-type]
        kept = await tb.ipam.reservation(key)
        assert kept is not None and kept.holder == "" and kept.address == bound.address
        eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]["endpoints"]
        assert eps == []
        links = sh("ip", "-n", tb.nodes["node-1"].netns, "-o", "link")
        for pod in (plain, sticky):
            assert pod.result["interfaces"][0]["name"] not in links
        log = tb.agent_log("node-1")
        assert log.count("queued deletion done") == 2

        # with the agent up, DEL goes to it again (nothing queued)
        third = await tb.add_pod("node-1", "default", "after")
        assert (await tb.del_pod(third)).rc == 0
        assert list(queue.glob("*.delete")) == []
