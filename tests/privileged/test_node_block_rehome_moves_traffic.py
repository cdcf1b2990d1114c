"""A block re-homed to another node (``RedisIpam.rehome_block``, as the failover
controller does): every node's route for it moves, the old node fences the addresses
it served, and the re-created pod is reached on its new node."""

from __future__ import annotations

import ipaddress

from ipam import ReservationKey
from netbed.testbed import Testbed, eventually


async def test_block_rehome_moves_routes_fences_old_node_and_traffic_follows() -> None:
    async with Testbed(nodes=3) as tb:
        key = ReservationKey.of("prod", "db", 0)
        res = await tb.ipam.claim(key, pool=tb.pool, node="node-1")
        assert res.address is not None
        db = await tb.add_pod("node-1", "prod", "db-0")
        client = await tb.add_pod("node-3", "default", "client")
        assert await tb.wait_ping(client, db.address)

        geo = (await tb.ipam.pool(tb.pool)).geo
        block = geo.block_of(geo.offset_of(db.address))
        cidr = str(geo.block_cidr(block))
        moved = await tb.ipam.rehome_block(pool=tb.pool, block=block, from_node="node-1",
                                           to_node="node-2")
        assert key.owner in moved

        assert await tb.wait_route("node-3", cidr, f"via {tb.nodes['node-2'].address}")
        assert await tb.wait_route("node-1", cidr, f"via {tb.nodes['node-2'].address}")
        assert await tb.wait_route("node-2", cidr, "blackhole")
        # node-1 fenced the address it served: its /32 is gone and its pod is cut off.
        ok = await eventually(lambda: tb.route("node-1", f"{db.address}/32") == "")
        assert ok, tb.agent_log("node-1")[-3000:]
        eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]["endpoints"]
        assert [e["fenced"] for e in eps if db.address in e["addresses"]] == [True]
        assert not await tb.ping(client, db.address)

        # The pod comes back on its new home with the same address; traffic follows.
        netns_old = db.netns
        tb.pods.pop("prod/db-0")
        again = await tb.add_pod("node-2", "prod", "db-0")
        assert again.address == db.address
        assert ipaddress.IPv4Address(again.address) in ipaddress.IPv4Network(cidr)
        assert await tb.wait_ping(client, again.address)
        assert netns_old != again.netns
