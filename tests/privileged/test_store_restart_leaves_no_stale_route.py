"""The store restarts under real agents (issue 10.4): a block re-home the agents had
already applied is lost with the store's last writes (Redis comes back from an
AOF written before it), and no node keeps the route it had learned — every agent,
following the store or the bed's feed, sees another identity, takes a fresh view
and puts the block's routes back where the store now says, in the kernel. (The pod
fenced when its block moved stays fenced: a fence is never lifted by the agent.)"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from pathlib import Path

import pytest

from netbed.testbed import Testbed, eventually


@pytest.mark.parametrize("feed", [False, True], ids=["store", "feed"])
async def test_a_lost_rehome_leaves_no_stale_route(feed: bool) -> None:
    async with Testbed(nodes=3, feed=feed) as tb:
        assert tb.redis is not None
        web = await tb.add_pod("node-2", "default", "web")
        geo = (await tb.ipam.pool(tb.pool)).geo
        block = geo.block_of(geo.offset_of(web.address))
        cidr = str(geo.block_cidr(block))
        via2, via3 = (f"via {tb.nodes[n].address}" for n in ("node-2", "node-3"))
        assert await tb.wait_route("node-1", cidr, via2)

        # the store as it will come back: everything up to here (Redis writes the
        # AOF before it answers, so the files hold every acknowledged write)
        before = Path(tempfile.mkdtemp(prefix="stickyip-aof-"))
        try:
            shutil.copytree(tb.redis.dir, before, dirs_exist_ok=True)
            await tb.ipam.rehome_block(pool=tb.pool, block=block, from_node="node-2",
                                       to_node="node-3")
            assert await tb.wait_route("node-1", cidr, via3)
            assert await tb.wait_route("node-3", cidr, "blackhole")

            # the store dies and comes back without the re-home
            tb.redis.kill9()
            shutil.rmtree(tb.redis.dir)
            shutil.copytree(before, tb.redis.dir)
            tb.redis.start()
        finally:
            shutil.rmtree(before, ignore_errors=True)
        [b] = [x for x in await tb.ipam.blocks(tb.pool) if str(x.cidr) == cidr]
        assert b.node == "node-2"

        # no node keeps what it learned from the lost write
        for node, want in (("node-1", via2), ("node-3", via2), ("node-2", "blackhole")):
            assert await tb.wait_route(node, cidr, want, within=30), tb.agent_log(node)[-3000:]
        # the endpoint on node-2 was re-asserted against the new store: still its own
        ok = await eventually(lambda: "re-asserting this node's endpoints"
                              in tb.agent_log("node-2"), within=30)
        assert ok, tb.agent_log("node-2")[-3000:]
        held = await tb.ipam.owner_of(web.address)
        assert held is not None and held.node == "node-2"
        eps = tb.agent_call("node-2", {"command": "ENDPOINTS"})["result"]["endpoints"]
        assert [e["fenced"] for e in eps if web.address in e["addresses"]] == [True]
        # traffic goes where the store says: a new pod of node-2's block is reached
        api = await tb.add_pod("node-2", "default", "api")
        assert ipaddress.IPv4Address(api.address) in ipaddress.IPv4Network(cidr)
        client = await tb.add_pod("node-1", "default", "client")
        assert await tb.wait_ping(client, api.address)
