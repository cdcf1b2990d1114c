"""Dual-stack pods on the bed (root): every pod gets one IPv4 and one IPv6 address from
the network config's two pools; pods reach each other over both families on the same
node and across nodes (direct routes via the nodes' IPv6 addresses, and BGP with IPv6
sessions); a fixed-IP pod keeps both addresses across delete and re-add; a pod cannot
send from an IPv6 address that is not its own (dropped and counted), while its own
addresses and the link-local ICMPv6 its kernel needs keep working."""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ipam import ReservationKey
from netbed.shell import run
from netbed.testbed import Testbed

pytestmark = pytest.mark.asyncio(loop_scope="module")

POOL6 = "fd00:244::/116"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tb() -> AsyncIterator[Testbed]:
    async with Testbed(nodes=2, pool6_cidr=POOL6) as bed:
        yield bed


def _spoofed(tb: Testbed, node: str, host_if: str) -> int:
    reply = tb.agent_call(node, {"command": "ENDPOINTS"})
    return int(reply["result"]["counters"].get(host_if, {}).get("spoofed_packets", 0))


async def test_pods_get_both_families_and_reach_each_other_over_both(tb: Testbed) -> None:
    a = await tb.add_pod("node-1", "default", "a")
    b = await tb.add_pod("node-1", "default", "b")  # same node
    c = await tb.add_pod("node-2", "default", "c")  # across nodes
    for p in (a, b, c):
        assert [ipaddress.ip_address(x).version for x in p.addresses] == [4, 6], p.result
        assert ipaddress.IPv6Address(p.address6) in ipaddress.IPv6Network(POOL6)
        assert p.result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                                      {"dst": "::/0", "gw": "fe80::1"}]
        # usable at once: not tentative (DAD is the agent's job, done before ADD returned)
        shown = tb.exec_in(p, ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout.decode()
        assert p.address6 in shown and "tentative" not in shown.split(p.address6)[1][:80]
    servers = [tb.serve_tcp(p, 7100) for p in (a, b, c)]
    try:
        for src, dst in ((a, b), (b, a), (a, c), (c, a), (b, c)):
            for addr in dst.addresses:
                assert await tb.wait_ping(src, addr), f"{src.name} -> {dst.name} {addr}"
                assert await tb.tcp_echo(src, addr, 7100, f"{src.name}>{addr}")
    finally:
        for s in servers:
            s.terminate()


async def test_direct_routes_of_ipv6_blocks_point_at_the_nodes_ipv6_address(
        tb: Testbed) -> None:
    view = await tb.ipam.routing_view()
    v6 = [b for b in view.blocks if b.cidr.version == 6]
    assert v6, view
    for blk in v6:
        owner = tb.nodes[blk.node]
        for name in tb.nodes:
            want = "blackhole" if name == blk.node else f"via {owner.address6}"
            assert await tb.wait_route(name, str(blk.cidr), want), (name, blk,
                                                                    tb.route(name, str(blk.cidr)))


async def test_a_dual_stack_fixed_ip_pod_keeps_both_addresses_when_re_added(
        tb: Testbed) -> None:
    key = ReservationKey.of("prod", "db", 0)
    res = await tb.ipam.claim(key, pools=[tb.pool, tb.pool6], node="node-2")
    want = sorted((str(a.address) for a in res.addresses), key=lambda a: ":" in a)
    first = await tb.add_pod("node-2", "prod", "db-0")
    assert first.addresses == want
    client = await tb.add_pod("node-1", "default", "client")
    assert await tb.wait_ping(client, first.address6)
    await tb.del_pod(first)
    again = await tb.add_pod("node-2", "prod", "db-0")
    assert again.addresses == want
    assert await tb.wait_ping(client, again.address6)
    assert await tb.wait_ping(client, again.address)


async def test_a_spoofed_ipv6_source_is_dropped_and_counted(tb: Testbed) -> None:
    a = await tb.add_pod("node-1", "default", "attacker6")
    b = await tb.add_pod("node-2", "default", "victim6")
    host_if = a.result["interfaces"][0]["name"]
    assert await tb.wait_ping(a, b.address6)
    before = _spoofed(tb, "node-1", host_if)
    for fake in (str(ipaddress.IPv6Network(POOL6)[77]), "2001:db8::7"):
        tb.exec_in(a, ["ip", "-6", "addr", "add", f"{fake}/128", "dev", "eth0", "nodad"],
                   check=True)
        sent = tb.exec_in(a, ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1",
                              "-I", fake, b.address6])
        assert sent.returncode != 0, "a spoofed ping must not get an answer"
        tb.exec_in(a, ["ip", "-6", "addr", "del", f"{fake}/128", "dev", "eth0"], check=True)
    assert _spoofed(tb, "node-1", host_if) - before >= 6
    # its own addresses still work
    assert await tb.ping(a, b.address6)
    assert await tb.ping(a, b.address)
    # neighbour discovery from the pod's link-local address passes, anything else from
    # it does not: without its permanent entry for the gateway, a ping from the
    # link-local address makes the pod solicit fe80::1 from fe80:: (answered: the
    # entry is learned) while the echo request itself is dropped as spoofed
    host_mac = a.result["interfaces"][0]["mac"]
    tb.exec_in(a, ["ip", "-6", "neigh", "del", "fe80::1", "dev", "eth0"], check=True)
    try:
        before = _spoofed(tb, "node-1", host_if)
        echo = tb.exec_in(a, ["ping", "-n", "-q", "-c", "1", "-W", "2", "fe80::1%eth0"])
        assert echo.returncode != 0
        learned = tb.exec_in(a, ["ip", "-6", "neigh", "show", "fe80::1", "dev", "eth0"])
        assert host_mac in learned.stdout.decode(), learned.stdout
        assert _spoofed(tb, "node-1", host_if) - before == 1
    finally:
        tb.exec_in(a, ["ip", "-6", "neigh", "replace", "fe80::1", "lladdr", host_mac, "dev",
                       "eth0", "nud", "permanent"], check=True)


async def test_bgp_carries_ipv6_blocks_over_ipv6_sessions() -> None:
    async with Testbed(nodes=2, routing="bgp", pool6_cidr=POOL6) as tb:
        a = await tb.add_pod("node-1", "default", "a")
        b = await tb.add_pod("node-2", "default", "b")
        view = await tb.ipam.routing_view()
        v6 = {blk.node: str(blk.cidr) for blk in view.blocks if blk.cidr.version == 6}
        assert await tb.wait_route("node-1", v6["node-2"], "proto bird", within=30), \
            tb.birdc("node-1", "show", "protocols")
        assert f"via {tb.nodes['node-2'].address6}" in tb.route("node-1", v6["node-2"])
        assert "Established" in tb.birdc("node-1", "show", "protocols", "all", "peer6_node_2")
        assert await tb.wait_ping(a, b.address6)
        assert await tb.wait_ping(b, a.address6)
        tb.serve_tcp(b, 7300)
        assert await tb.tcp_echo(a, b.address6, 7300)


async def test_an_agent_upgraded_from_the_ipv4_only_layout_recreates_its_map() -> None:
    """The endpoint map's value grew (IPv6 address and family flags): a restarted agent
    that finds the old, smaller map pinned unpins it, starts a fresh one, rewrites every
    endpoint into it and replaces the filters still reading the old map."""
    async with Testbed(nodes=2) as tb:
        a = await tb.add_pod("node-1", "default", "a")
        b = await tb.add_pod("node-2", "default", "b")
        host_if = a.result["interfaces"][0]["name"]
        assert await tb.wait_ping(a, b.address)
        tb.kill_agent("node-1")
        pin = f"{tb.nodes['node-1'].pin_root}/stickyip_endpoints"
        os.unlink(pin)
        run("bpftool", "map", "create", pin, "type", "hash", "key", "4", "value", "8",
            "entries", "16384", "name", "stickyip_endpoi")
        assert _map(pin)["bytes_value"] == 8
        await tb.start_agent("node-1")
        fresh = _map(pin)
        assert fresh["bytes_value"] == 24
        assert "pinned map has an old layout" in tb.agent_log("node-1")
        filters = run("tc", "-n", tb.nodes["node-1"].netns, "filter", "show", "dev", host_if,
                      "ingress").stdout.decode()
        assert f"-{fresh['id']} " in filters or filters.rstrip().endswith(f"-{fresh['id']}"), \
            filters  # the filter now reads the fresh map
        assert await tb.wait_ping(a, b.address)
        eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]
        assert [e["addresses"] for e in eps["endpoints"]] == [[a.address]]


def _map(pin: str) -> dict[str, int]:
    shown = json.loads(run("bpftool", "-j", "map", "show", "pinned", pin).stdout)
    return {"bytes_value": int(shown["bytes_value"]), "id": int(shown["id"])}
