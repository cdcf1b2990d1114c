"""Three nodes on a fabric with direct routing: pods on different nodes reach each other
(real ping and TCP), and a fixed-IP pod keeps its address across delete and re-add."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ipam import ReservationKey
from netbed.testbed import Testbed

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tb() -> AsyncIterator[Testbed]:
    async with Testbed(nodes=3) as bed:
        yield bed


async def test_pods_on_three_nodes_ping_and_talk_tcp(tb: Testbed) -> None:
    pods = [await tb.add_pod(f"node-{i}", "default", f"web-{chr(96 + i)}") for i in (1, 2, 3)]
    nets = {ipaddress.IPv4Network(f"{p.address}/26", strict=False) for p in pods}
    assert len(nets) == 3, "each node allocates from its own block"
    servers = [tb.serve_tcp(p, 7000) for p in pods]
    try:
        for src in pods:
            for dst in pods:
                if src is dst:
                    continue
                assert await tb.wait_ping(src, dst.address), f"{src.name} -> {dst.name}"
                assert await tb.tcp_echo(src, dst.address, 7000, f"{src.name}>{dst.name}")
    finally:
        for s in servers:
            s.terminate()


async def test_direct_routes_point_at_the_owning_node(tb: Testbed) -> None:
    for blk in (await tb.ipam.routing_view()).blocks:
        owner = tb.nodes[blk.node]
        for name in tb.nodes:
            want = "blackhole" if name == blk.node else f"via {owner.address}"
            assert await tb.wait_route(name, str(blk.cidr), want), (name, blk)


async def test_fixed_ip_pod_keeps_its_address_when_re_added(tb: Testbed) -> None:
    key = ReservationKey.of("prod", "db", 0)
    res = await tb.ipam.claim(key, pool=tb.pool, node="node-2")
    assert res.address is not None
    first = await tb.add_pod("node-2", "prod", "db-0")
    assert first.address == str(res.address)
    other = await tb.add_pod("node-3", "default", "client")
    assert await tb.wait_ping(other, first.address)
    await tb.del_pod(first)
    kept = await tb.ipam.reservation(key)
    assert kept is not None and kept.address == res.address and kept.holder == ""
    again = await tb.add_pod("node-2", "prod", "db-0")
    assert again.address == first.address
    assert await tb.wait_ping(other, again.address)


async def test_fixed_ip_pod_is_refused_away_from_home(tb: Testbed) -> None:
    key = ReservationKey.of("prod", "cache", 0)
    await tb.ipam.claim(key, pool=tb.pool, node="node-1")
    netns = tb.new_pod_netns()
    call = tb.cni("node-3", "ADD", container_id="away", netns=f"/run/netns/{netns}",
                  args="K8S_POD_NAMESPACE=prod;K8S_POD_NAME=cache-0;K8S_POD_UID=u1")
    assert call.rc != 0 and call.out is not None
    assert call.out["code"] == 101 and "node-1" in call.out["msg"]
