"""Address conflicts on the bed (root): the agents' real raw-socket probes against real
kernels on the fabric. A squatter namespace holding a fixed-IP pod's IPv4 or IPv6
address (it answers the ARP probe, or the DAD solicitation, itself) makes CNI ADD fail
with code 104 naming the address, the squatter's MAC and the node link it answered
on, and leaves nothing behind; a squatter that appears while the pod runs is found by
the periodic re-check (metric up, then down when it leaves); and a neighbour on the
node network that holds entries for a fixed-IP pod's addresses points them at the new
node, for both families, within 1 s of the ADD on the node it was re-homed to."""

from __future__ import annotations

import asyncio
import json
import os
import select
import sys
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ipam import ReservationKey
from netbed.agents import pod_args
from netbed.shell import netns_path, sh
from netbed.testbed import Testbed, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

POOL6 = "fd00:245::/116"
METRICS = ("import urllib.request;"
           "print(urllib.request.urlopen('http://127.0.0.1:9402/metrics').read().decode())")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tb() -> AsyncIterator[Testbed]:
    env = {"STICKYIP_AGENT_CONFLICT_RECHECK_INTERVAL": "0.3"}
    async with Testbed(nodes=2, pool6_cidr=POOL6, agent_env=env) as bed:
        yield bed


def _host(tb: Testbed) -> tuple[str, str]:
    """Another host on the node network: a namespace on the fabric (no agent)."""
    _, netns, _ = tb.fabric.add_node()
    mac = json.loads(sh("ip", "-j", "-n", netns, "link", "show", "fab0"))[0]["address"]
    return netns, mac


def _metric(tb: Testbed, node: str, name: str, **labels: str) -> float:
    text = tb.exec_in(node, [sys.executable, "-c", METRICS]).stdout.decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


async def _reserve(tb: Testbed, name: str, node: str) -> tuple[ReservationKey, list[str]]:
    key = ReservationKey.of("prod", name, 0)
    res = await tb.ipam.claim(key, pools=[tb.pool, tb.pool6], node=node)
    return key, sorted((str(a.address) for a in res.addresses), key=lambda a: ":" in a)


@pytest.mark.parametrize("family", [4, 6])
async def test_a_squatter_makes_add_fail_cleanly(tb: Testbed, family: int) -> None:
    key, (v4, v6) = await _reserve(tb, f"sq{family}", "node-1")
    squatter, squatter_mac = _host(tb)
    taken = v4 if family == 4 else v6
    if family == 4:
        sh("ip", "-n", squatter, "addr", "add", f"{taken}/32", "dev", "fab0")
    else:
        sh("ip", "-n", squatter, "-6", "addr", "add", f"{taken}/128", "dev", "fab0", "nodad")
    netns = tb.new_pod_netns()
    before = _metric(tb, "node-1", "stickyip_datapath_address_conflicts_total",
                     phase="add", family=str(family))
    call = await asyncio.to_thread(tb.cni, "node-1", "ADD", container_id=f"c-sq{family}",
                                   netns=netns_path(netns),
                                   args=pod_args("prod", f"sq{family}-0", "uid-sq"))
    assert call.rc == 1 and call.out is not None, call
    assert call.out["code"] == 104, call.out
    assert f"{taken} answered from {squatter_mac} on fab0" in call.out["msg"], call.out
    assert _metric(tb, "node-1", "stickyip_datapath_address_conflicts_total",
                   phase="add", family=str(family)) == before + 1
    # nothing left behind: no veth, no host routes, no record, the pod side untouched
    node = tb.nodes["node-1"].netns
    assert [x for x in sh("ip", "-n", node, "-o", "link").splitlines() if " sip" in x
            and "c-sq" in x] == []
    for addr in (v4, v6):
        assert tb.route("node-1", addr) == ""
    eps = tb.agent_call("node-1", {"command": "ENDPOINTS"})["result"]["endpoints"]
    assert all(key.owner != e["owner"] for e in eps)
    assert "eth0" not in sh("ip", "-n", netns, "-o", "link")
    kept = await tb.ipam.reservation(key)
    assert kept is not None and kept.holder == "" and kept.node == "node-1"
    # the squatter leaves: the same ADD now succeeds with both addresses
    sh("ip", "-n", squatter, "addr", "flush", "dev", "fab0", "scope", "global")
    pod = await tb.add_pod("node-1", "prod", f"sq{family}-0", netns=netns)
    assert pod.addresses == [v4, v6]


async def test_the_recheck_finds_a_squatter_that_appears_while_the_pod_runs(
        tb: Testbed) -> None:
    _, (_, v6) = await _reserve(tb, "late", "node-2")
    await tb.add_pod("node-2", "prod", "late-0")
    count = _metric(tb, "node-2", "stickyip_datapath_address_conflicts_total",
                    phase="recheck", family="6")
    assert _metric(tb, "node-2", "stickyip_datapath_conflicting_endpoints") == 0
    squatter, squatter_mac = _host(tb)
    sh("ip", "-n", squatter, "-6", "addr", "add", f"{v6}/128", "dev", "fab0", "nodad")
    assert await eventually(lambda: _metric(
        tb, "node-2", "stickyip_datapath_conflicting_endpoints") == 1, within=10)
    assert _metric(tb, "node-2", "stickyip_datapath_address_conflicts_total",
                   phase="recheck", family="6") == count + 1
    found = tb.agent_call("node-2", {"command": "RECHECK"})["result"]["conflicts"]
    assert found == [{"address": v6, "mac": squatter_mac, "link": "fab0",
                      "how": "neighbor-advert"}]
    assert "address conflict on a running pod" in tb.agent_log("node-2")
    sh("ip", "-n", squatter, "-6", "addr", "flush", "dev", "fab0", "scope", "global")
    assert await eventually(lambda: _metric(
        tb, "node-2", "stickyip_datapath_conflicting_endpoints") == 0, within=10)
    assert _metric(tb, "node-2", "stickyip_datapath_address_conflicts_total",
                   phase="recheck", family="6") == count + 1  # counted once


async def test_a_neighbour_points_at_the_new_node_within_a_second_of_a_rehome(
        tb: Testbed) -> None:
    neighbour, _ = _host(tb)
    # a router on the node network that learns from announcements (Linux creates an
    # entry from an unsolicited advertisement only on a forwarding interface)
    sh("ip", "netns", "exec", neighbour, "sysctl", "-qw", "net.ipv4.conf.fab0.arp_accept=1",
       "net.ipv6.conf.fab0.forwarding=1", "net.ipv6.conf.fab0.accept_untracked_na=1")
    macs = {n: json.loads(sh("ip", "-j", "-n", tb.nodes[n].netns, "link", "show", "fab0"))[0]
            ["address"] for n in ("node-1", "node-2")}
    key, (v4, v6) = await _reserve(tb, "moving", "node-1")
    first = await tb.add_pod("node-1", "prod", "moving-0")

    def holds(mac: str) -> bool:
        shown = {a: sh("ip", "-n", neighbour, "neigh", "show", a, "dev", "fab0")
                 for a in (v4, v6)}
        return all(mac in line for line in shown.values())

    assert await eventually(lambda: holds(macs["node-1"]), within=5), "first announcement"
    await tb.ipam.rehome_reservation(key, to_node="node-2")
    await tb.del_pod(first)
    monitor = tb.popen_in(neighbour, ["ip", "-o", "monitor", "neigh"])
    try:
        assert monitor.stdout is not None
        fd, text = monitor.stdout.fileno(), ""
        # the monitor listens once it reports a marker entry (changed until it does: the
        # monitor may subscribe after the first change), before the re-homed pod starts
        deadline = time.monotonic() + 10
        n = 0
        while "192.0.2.99" not in text:
            assert time.monotonic() < deadline, "ip monitor reported nothing"
            sh("ip", "-n", neighbour, "neigh", "replace", "192.0.2.99", "lladdr",
               f"02:00:00:00:00:{n % 100:02d}", "dev", "fab0")
            n += 1
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                text += os.read(fd, 65536).decode()
        # The clock starts when the re-homed pod's ADD has returned: the agent announces
        # its addresses at the end of ADD, and how long ADD itself takes (a plugin
        # process, the conflict probe, a loaded machine) is not what this measures.
        await tb.add_pod("node-2", "prod", "moving-0")
        start = time.monotonic()
        seen: set[str] = set()
        while seen != {v4, v6}:
            left = 1.0 - (time.monotonic() - start)
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                break
            text += os.read(fd, 65536).decode()
            for line in text.splitlines():
                for a in (v4, v6):
                    if line.startswith(f"{a} ") and f"lladdr {macs['node-2']}" in line:
                        seen.add(a)
        elapsed = time.monotonic() - start
    finally:
        monitor.terminate()
        monitor.wait()
    assert seen == {v4, v6}, f"after {elapsed:.2f}s the neighbour saw {seen}"
    assert holds(macs["node-2"])
