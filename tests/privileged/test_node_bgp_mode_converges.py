"""BGP routing: each node's agent generates a BIRD 2 config and reloads it; BIRD
speakers (one per node netns, own -c/-s/-P) peer, converge, carry pod traffic, and
follow a block re-home (aggregated blocks, /32 only for migrated addresses)."""

from __future__ import annotations

import asyncio

from ipam import ReservationKey
from netbed.testbed import Testbed, eventually


async def test_bgp_speakers_converge_carry_traffic_and_follow_a_rehome() -> None:
    async with Testbed(nodes=3, routing="bgp") as tb:
        a = await tb.add_pod("node-1", "default", "a")
        b = await tb.add_pod("node-2", "default", "b")
        c = await tb.add_pod("node-3", "default", "c")
        view = await tb.ipam.routing_view()
        by_node = {blk.node: str(blk.cidr) for blk in view.blocks}
        for src in ("node-1", "node-2", "node-3"):
            for dst, cidr in by_node.items():
                if dst != src:
                    assert await tb.wait_route(src, cidr, "proto bird", within=30), \
                        (src, cidr, tb.birdc(src, "show", "protocols"))
        assert "Established" in tb.birdc("node-1", "show", "protocols", "all", "peer_node_2")
        for src, dst in ((a, b), (b, c), (c, a)):
            assert await tb.wait_ping(src, dst.address), (src.name, dst.name)
            tb.serve_tcp(dst, 7200)
            assert await tb.tcp_echo(src, dst.address, 7200)
        # BIRD owns the inter-node routes: the agent installed none of them.
        assert "proto 201" not in tb.route("node-1", by_node["node-2"])

        # A /32 re-homed alone is announced as a /32 by its new node only.
        key = ReservationKey.of("prod", "db", 0)
        res = await tb.ipam.claim(key, pool=tb.pool, node="node-1")
        db = await tb.add_pod("node-1", "prod", "db-0")
        assert res.address is not None and db.address == str(res.address)
        await tb.ipam.rehome_reservation(key, pool=tb.pool, to_node="node-3")
        tb.pods.pop("prod/db-0")
        moved = await tb.add_pod("node-3", "prod", "db-0")
        assert moved.address == db.address
        assert await tb.wait_route("node-2", f"{db.address}/32", "proto bird", within=30)
        assert await tb.wait_route("node-2", f"{db.address}/32",
                                   f"via {tb.nodes['node-3'].address}")
        assert await tb.wait_ping(b, moved.address)
        # node-1 fenced its stale copy: it neither routes to it locally nor announces it.
        assert await eventually(
            lambda: tb.nodes["node-3"].address in tb.route("node-1", f"{db.address}/32"),
            within=30)
        conf = await asyncio.to_thread(_read, tb.nodes["node-3"].bird_config)
        assert f"route {db.address}/32 blackhole;" in conf
        assert f"{db.address}/32" not in await asyncio.to_thread(
            _read, tb.nodes["node-1"].bird_config)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
