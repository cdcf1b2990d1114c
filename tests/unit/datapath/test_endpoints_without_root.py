"""The agent's endpoint part on in-memory netlink, program and records (no root):
ADD sets up every piece and DEL removes it; a failure at ANY step of ADD undoes
every step before it (nothing left in the kernel, the maps, the records or IPAM,
and the retry succeeds); restore repairs only what differs from the records; GC
keeps exactly the valid attachments. IPAM is a real store (redis-server)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from datapath.config import AgentSettings
from datapath.endpoints import EndpointManager
from datapath.errors import (
    AddressConflict,
    CheckFailed,
    DatapathError,
    InterfaceExists,
    NotHome,
)
from datapath.fakes import (
    FakeNetlink,
    FakeProber,
    MemoryEndpointProgram,
    MemoryEndpointRecords,
    Steps,
)
from datapath.hooks import Endpoint
from datapath.interfaces import EndpointProgram, EndpointRecords, NetlinkOps
from datapath.maps import endpoints as endpoints_map
from datapath.maps import ep_counters
from datapath.podinfo import name_pod_lookup
from datapath.probe import Conflict, IPAddress
from ipam import LeaseKind, PoolSpec, RedisIpam, ReservationKey, ephemeral_owner

NODE = "node-a"
PREFIX = "sip"


class RecordingHook:
    """An endpoint hook that is itself a step of the journal."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.active: dict[str, Endpoint] = {}
        self.resynced: list[list[Endpoint]] = []

    async def endpoint_added(self, ep: Endpoint) -> None:
        self.steps("hook.added", RuntimeError)
        self.active[ep.host_ifname] = ep

    async def endpoint_removed(self, ep: Endpoint) -> None:
        self.active.pop(ep.host_ifname, None)

    async def resync(self, endpoints: list[Endpoint]) -> None:
        self.resynced.append(endpoints)


class Bed:
    def __init__(self, ipam: RedisIpam, pool: str, tmp: Path, *, fail_at: int | None = None,
                 netlink: FakeNetlink | None = None,
                 program: MemoryEndpointProgram | None = None,
                 records: MemoryEndpointRecords | None = None) -> None:
        self.ipam = ipam
        self.pool = pool
        self.steps = Steps(fail_at=fail_at)
        self.netlink = netlink or FakeNetlink()
        self.program = program or MemoryEndpointProgram()
        self.records = records or MemoryEndpointRecords()
        self.prober = FakeProber()
        for fake in (self.netlink, self.program, self.records, self.prober):
            fake.steps = self.steps
        self.conflicts: list[list[object]] = []
        self.hook = RecordingHook(self.steps)
        typed: tuple[NetlinkOps, EndpointProgram, EndpointRecords] = (
            self.netlink, self.program, self.records)
        self.settings = AgentSettings(node=NODE, default_pool=pool, host_prefix=PREFIX,
                                      state_dir=str(tmp), socket=str(tmp / "sock"))
        self.manager = EndpointManager(self.settings, ipam, netlink=typed[0],
                                       program=typed[1], records=typed[2],
                                       pods=name_pod_lookup(ipam), prober=self.prober,
                                       hooks=[self.hook],
                                       on_conflict=lambda found: self.conflicts.append(
                                           list(found)))

    def netns(self, name: str) -> str:
        path = f"/run/netns/{name}"
        self.netlink.namespaces.add(path)
        return path

    def request(self, command: str, cid: str, *, netns: str = "", pod: str = "web",
                namespace: str = "default", **config: Any) -> dict[str, Any]:
        return {"command": command, "containerId": cid, "ifname": "eth0", "netns": netns,
                "args": {"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": pod,
                         "K8S_POD_UID": f"uid-{cid}"},
                "config": config}

    async def add(self, cid: str, **kw: Any) -> dict[str, Any]:
        netns = self.netns(f"ns-{cid}")
        return await self.manager.add(self.request("ADD", cid, netns=netns, **kw))

    async def ephemeral_leases(self) -> list[str]:
        owners = set()
        for pool in self.pool.split(","):
            owners |= {str(lease.owner) for lease in await self.ipam.all_records(pool)
                       if lease.kind is LeaseKind.EPHEMERAL}
        return sorted(owners)

    async def assert_nothing_left(self) -> None:
        assert self.netlink.pod_veths(PREFIX) == []
        assert self.netlink.pods == {}
        assert self.netlink.kernel_routes == {}
        assert self.netlink.neighbours == {}
        assert self.netlink.tc == {}
        assert self.program.items(endpoints_map.NAME) == []
        assert self.program.items(ep_counters.NAME) == []
        assert self.records.saved == {} and self.records.all() == []
        assert self.hook.active == {}
        assert await self.ephemeral_leases() == []


@pytest.fixture
async def pool(ipam: RedisIpam) -> str:
    await ipam.apply_pool(PoolSpec(name="pods", cidr="10.30.0.0/24", block_size=28))
    return "pods"


@pytest.fixture
async def dual(ipam: RedisIpam, pool: str) -> str:
    """The agent's pools for dual-stack pods: one IPv4, one IPv6."""
    await ipam.apply_pool(PoolSpec(name="pods6", cidr="fd00:30::/116", block_size=124))
    return f"{pool},pods6"


async def test_add_sets_up_every_piece_and_del_removes_them(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    bed = Bed(ipam, pool, tmp_path)
    result = await bed.add("c1")
    address = ipaddress.IPv4Address(result["ips"][0]["address"].split("/")[0])
    host = result["interfaces"][0]["name"]
    idx = bed.netlink.links[host].index
    assert bed.netlink.links[host].up
    pod = bed.netlink.pods[("/run/netns/ns-c1", "eth0")]
    assert pod.up and str(address) in pod.addresses and pod.gateways == {"169.254.1.1"}
    assert bed.netlink.neighbours[(idx, address)] == pod.mac
    assert [f.prio for f in bed.netlink.tc[idx]] == [1]
    assert endpoints_map.read(bed.program, idx) == ((address,), False)
    route = bed.netlink.kernel_routes[ipaddress.IPv4Network(f"{address}/32")][0]
    assert (route.kind, route.target) == ("dev", host)
    assert bed.hook.active[host].address == address
    lease = await ipam.lease(pool=pool, owner=ephemeral_owner("c1", "eth0"))
    assert lease is not None and lease.address == address and lease.node == NODE
    await bed.manager.check(bed.request("CHECK", "c1", netns="/run/netns/ns-c1"))
    with pytest.raises(InterfaceExists):
        await bed.manager.add(bed.request("ADD", "c1", netns="/run/netns/ns-c1"))

    await bed.manager.delete(bed.request("DEL", "c1"))
    await bed.assert_nothing_left()
    await bed.manager.delete(bed.request("DEL", "c1"))  # idempotent


@pytest.mark.parametrize("stack", ["ipv4", "dual"])
async def test_a_failure_at_any_step_of_add_undoes_every_step_before_it(
        ipam: RedisIpam, dual: str, tmp_path: Path, stack: str) -> None:
    pool = dual if stack == "dual" else dual.split(",")[0]
    counting = Bed(ipam, pool, tmp_path)
    await counting.add("count")
    steps = list(counting.steps.calls)
    await counting.manager.delete(counting.request("DEL", "count"))
    assert len(steps) > 10, steps

    for k, call in enumerate(steps):
        bed = Bed(ipam, pool, tmp_path, fail_at=k)
        cid = f"k{k}"
        with pytest.raises((DatapathError, OSError, RuntimeError), match="injected failure"):
            await bed.add(cid)
        assert bed.steps.calls[k] == call  # the same path as the counting run up to k
        try:
            await bed.assert_nothing_left()
        except AssertionError as e:
            raise AssertionError(f"failure at step {k} ({call}) left state behind") from e
        # Nothing blocks the runtime's retry of the same ADD.
        bed.steps.fail_at = None
        await bed.manager.add(bed.request("ADD", cid, netns=f"/run/netns/ns-{cid}"))
        await bed.manager.delete(bed.request("DEL", cid))
        await bed.assert_nothing_left()


async def test_a_reservation_homed_elsewhere_is_refused_before_any_plumbing(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    key = ReservationKey.of("prod", "db", 0)
    await ipam.claim(key, pool=pool, node="node-b", holder="old")
    bed = Bed(ipam, pool, tmp_path)
    with pytest.raises(NotHome, match="node-b"):
        await bed.add("s1", pod="db-0", namespace="prod")
    await bed.assert_nothing_left()
    held = await ipam.reservation(key, pool=pool)
    assert held is not None and held.node == "node-b" and held.holder == "old"


async def test_restore_repairs_only_what_differs(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    before = Bed(ipam, pool, tmp_path)
    results = {cid: await before.add(cid) for cid in ("ok", "broken", "gone")}
    hosts = {cid: r["interfaces"][0]["name"] for cid, r in results.items()}
    netlink, program, records = before.netlink, before.program, before.records

    # While the agent is down: one pod loses pieces, one pod's netns goes away,
    # a veth nobody recorded appears, and a map entry outlives its link.
    broken = netlink.links[hosts["broken"]]
    broken.up = False
    netlink.pods[("/run/netns/ns-broken", "eth0")].addresses.clear()
    netlink.tc.pop(broken.index)
    netlink.clsact.discard(broken.index)
    endpoints_map.remove(program, broken.index)
    netlink.namespaces.discard("/run/netns/ns-gone")
    netlink.links[f"{PREFIX}0123456789ab"] = type(broken)(index=99, mac="02:99")
    endpoints_map.write(program, 77, [ipaddress.IPv4Address("10.30.0.200")])
    ok_link = netlink.links[hosts["ok"]]
    ok_pod = netlink.pods[("/run/netns/ns-ok", "eth0")]
    ok_state = (ok_link.up, set(ok_pod.addresses), list(netlink.tc[ok_link.index]))

    after = Bed(ipam, pool, tmp_path, netlink=netlink, program=program, records=records)
    await after.manager.restore()

    mutations = [c for c in after.steps.calls
                 if c.split(".")[1] in ("create_veth", "set_up", "configure_pod",
                                        "ensure_neigh", "ensure_clsact", "attach_bpf",
                                        "delete_link", "update", "delete", "put")]
    forget = [f"program.delete.{endpoints_map.NAME}", f"program.delete.{ep_counters.NAME}"]
    assert sorted(mutations) == sorted([
        # the broken pod, piece by piece
        "netlink.set_up", "netlink.configure_pod", "netlink.ensure_clsact",
        "netlink.attach_bpf", f"program.update.{endpoints_map.NAME}",
        # the pod whose netns is gone: link, record and map entries
        "netlink.delete_link", "records.delete", *forget,
        # the orphan veth, and the map entry that outlived its link
        "netlink.delete_link", *forget])
    assert (ok_link.up, ok_pod.addresses, netlink.tc[ok_link.index]) == (
        ok_state[0], ok_state[1], ok_state[2])
    for cid in ("ok", "broken"):
        await after.manager.check(after.request("CHECK", cid, netns=f"/run/netns/ns-{cid}"))
    assert hosts["gone"] not in netlink.links and f"{PREFIX}0123456789ab" not in netlink.links
    assert sorted(endpoints_map.read_all(program)) == sorted(
        netlink.links[hosts[c]].index for c in ("ok", "broken"))
    assert await after.ephemeral_leases() == sorted(
        str(ephemeral_owner(c, "eth0")) for c in ("broken", "ok"))
    assert [sorted(e.host_ifname for e in eps) for eps in after.hook.resynced] == [
        sorted([hosts["ok"], hosts["broken"]])]
    assert {r.container_id for r in records.all()} == {"ok", "broken"}


async def test_check_fails_on_each_missing_piece(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    bed = Bed(ipam, pool, tmp_path)
    result = await bed.add("c1")
    host = result["interfaces"][0]["name"]
    req = bed.request("CHECK", "c1", netns="/run/netns/ns-c1")
    idx = bed.netlink.links[host].index
    bed.netlink.tc.pop(idx)
    with pytest.raises(CheckFailed, match="anti-spoofing"):
        await bed.manager.check(req)
    bed.manager.fence(ipaddress.IPv4Address(result["ips"][0]["address"].split("/")[0]))
    await bed.manager.restore()  # re-attaches the filter, keeps the endpoint fenced
    with pytest.raises(CheckFailed, match="fenced"):
        await bed.manager.check(req)
    assert endpoints_map.read(bed.program, idx) is not None
    assert endpoints_map.read(bed.program, idx)[1] is True  # type: ignore[index]


async def test_gc_keeps_exactly_the_valid_attachments(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    bed = Bed(ipam, pool, tmp_path)
    await bed.add("keep")
    await bed.add("drop")
    stray = ephemeral_owner("stray", "eth0")
    await ipam.allocate(pool=pool, node=NODE, owner=stray)
    other = ephemeral_owner("other", "eth0")
    await ipam.allocate(pool=pool, node="node-b", owner=other)
    out = await bed.manager.gc({"command": "GC", "config": {
        "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}})
    assert sorted(out["removed"]) == sorted(["drop/eth0", str(stray)])
    assert [r.container_id for r in bed.records.all()] == ["keep"]
    assert await bed.ephemeral_leases() == sorted([str(ephemeral_owner("keep", "eth0")),
                                                   str(other)])


async def test_dual_stack_add_sets_up_both_families_and_del_removes_them(
        ipam: RedisIpam, dual: str, tmp_path: Path) -> None:
    bed = Bed(ipam, dual, tmp_path)
    result = await bed.add("c1")
    v4 = ipaddress.IPv4Address(result["ips"][0]["address"].split("/")[0])
    v6 = ipaddress.IPv6Address(result["ips"][1]["address"].split("/")[0])
    assert v4 in ipaddress.IPv4Network("10.30.0.0/24") and v6 in ipaddress.IPv6Network(
        "fd00:30::/116")
    assert result["ips"] == [
        {"address": f"{v4}/32", "gateway": "169.254.1.1", "interface": 1},
        {"address": f"{v6}/128", "gateway": "fe80::1", "interface": 1}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                                {"dst": "::/0", "gw": "fe80::1"}]
    host = result["interfaces"][0]["name"]
    idx = bed.netlink.links[host].index
    assert bed.netlink.links[host].addresses == {"fe80::1"}  # the pods' IPv6 gateway
    pod = bed.netlink.pods[("/run/netns/ns-c1", "eth0")]
    assert pod.addresses == {str(v4), str(v6)} and pod.gateways == {"169.254.1.1", "fe80::1"}
    assert bed.netlink.neighbours[(idx, v4)] == bed.netlink.neighbours[(idx, v6)] == pod.mac
    assert endpoints_map.read(bed.program, idx) == ((v4, v6), False)
    for net in (ipaddress.ip_network(f"{v4}/32"), ipaddress.ip_network(f"{v6}/128")):
        route = bed.netlink.kernel_routes[net][0]
        assert (route.kind, route.target) == ("dev", host)
    assert bed.hook.active[host].addresses == (v4, v6)
    lease = await ipam.lease(owner=ephemeral_owner("c1", "eth0"))
    assert lease is not None and {a.address for a in lease.addresses} == {v4, v6}
    await bed.manager.check(bed.request("CHECK", "c1", netns="/run/netns/ns-c1",
                                        prevResult=result))
    with pytest.raises(CheckFailed, match="differ"):  # a prevResult missing one family
        await bed.manager.check(bed.request("CHECK", "c1", netns="/run/netns/ns-c1",
                                            prevResult={"ips": result["ips"][:1]}))
    pod.addresses.discard(str(v6))
    with pytest.raises(CheckFailed, match="lacks"):
        await bed.manager.check(bed.request("CHECK", "c1", netns="/run/netns/ns-c1"))
    await bed.manager.restore()  # puts the IPv6 address back
    await bed.manager.check(bed.request("CHECK", "c1", netns="/run/netns/ns-c1"))

    await bed.manager.delete(bed.request("DEL", "c1"))
    await bed.assert_nothing_left()
    assert await ipam.lease(owner=ephemeral_owner("c1", "eth0")) is None


async def test_an_ipv6_only_pod_gets_no_ipv4_gateway_or_route(
        ipam: RedisIpam, dual: str, tmp_path: Path) -> None:
    bed = Bed(ipam, "pods6", tmp_path)
    result = await bed.add("c6")
    assert [ip["gateway"] for ip in result["ips"]] == ["fe80::1"]
    assert result["routes"] == [{"dst": "::/0", "gw": "fe80::1"}]
    pod = bed.netlink.pods[("/run/netns/ns-c6", "eth0")]
    assert pod.gateways == {"fe80::1"}
    assert all(net.version == 6 for net in bed.netlink.kernel_routes)
    await bed.manager.delete(bed.request("DEL", "c6"))
    await bed.assert_nothing_left()


async def test_a_dual_stack_reservation_brings_both_its_addresses(
        ipam: RedisIpam, dual: str, tmp_path: Path) -> None:
    key = ReservationKey.of("prod", "db", 0)
    held = await ipam.claim(key, pools=dual.split(","), node=NODE)
    want = sorted((a.address for a in held.addresses), key=lambda a: a.version)
    assert [a.version for a in want] == [4, 6]
    bed = Bed(ipam, dual.split(",")[0], tmp_path)  # the agent's own default is IPv4 only
    result = await bed.add("s1", pod="db-0", namespace="prod")
    assert [ip["address"] for ip in result["ips"]] == [f"{want[0]}/32", f"{want[1]}/128"]
    bound = await ipam.reservation(key)
    assert bound is not None and bound.holder == "uid-s1" and bound.node == NODE
    await bed.manager.delete(bed.request("DEL", "s1"))
    kept = await ipam.reservation(key)  # the ordinal keeps both addresses
    assert kept is not None and kept.holder == "" and \
        sorted((a.address for a in kept.addresses), key=lambda a: a.version) == want


async def test_fencing_one_family_fences_the_whole_endpoint(
        ipam: RedisIpam, dual: str, tmp_path: Path) -> None:
    bed = Bed(ipam, dual, tmp_path)
    result = await bed.add("c1")
    v6 = ipaddress.IPv6Address(result["ips"][1]["address"].split("/")[0])
    idx = bed.netlink.links[result["interfaces"][0]["name"]].index
    bed.manager.fence(v6)
    assert endpoints_map.read(bed.program, idx) is not None
    assert endpoints_map.read(bed.program, idx)[1] is True  # type: ignore[index]
    assert [ep.fenced for ep in bed.manager.local()] == [True]


async def test_restore_replaces_a_filter_running_an_older_program(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    before = Bed(ipam, pool, tmp_path)
    result = await before.add("c1")
    idx = before.netlink.links[result["interfaces"][0]["name"]].index
    assert [f.name for f in before.netlink.tc[idx]] == ["antispoof_ingress"]
    # the restarted agent loaded other code (an upgrade): its name carries another tag
    before.program.name, before.program.fd = "antispoof_ingress-0123", 4
    after = Bed(ipam, pool, tmp_path, netlink=before.netlink, program=before.program,
                records=before.records)
    await after.manager.restore()
    assert [(f.name, f.prog_id) for f in after.netlink.tc[idx]] == [("antispoof_ingress-0123",
                                                                     4)]
    again = Bed(ipam, pool, tmp_path, netlink=after.netlink, program=after.program,
                records=after.records)
    await again.manager.restore()  # the same code again: the filter is left alone
    assert "netlink.attach_bpf" not in again.steps.calls


async def test_a_squatted_address_refuses_add_naming_it_and_leaves_nothing_behind(
        ipam: RedisIpam, dual: str, tmp_path: Path) -> None:
    bed = Bed(ipam, dual, tmp_path)
    # the address IPAM hands out first, held by another host on the node's network
    probe_lease = await ipam.allocate(pools=dual.split(","), node=NODE,
                                      owner=ephemeral_owner("peek", "eth0"))
    v6 = probe_lease.address6
    assert v6 is not None
    await ipam.release(owner=probe_lease.owner)
    squat = bed.prober.squat(v6, mac="02:de:ad:be:ef:01", link="fab0")
    with pytest.raises(AddressConflict) as e:
        await bed.add("c1")
    assert e.value.code == 104
    assert f"{v6} answered from 02:de:ad:be:ef:01 on fab0" in str(e.value)
    assert bed.conflicts == [[squat]]
    assert bed.prober.announced == []
    await bed.assert_nothing_left()  # no veth, route, map entry, record, nor lease
    # plumbed while probing, then undone: never announced
    assert bed.steps.calls.index("netlink.create_veth") < bed.steps.calls.index(
        "netlink.delete_link", bed.steps.calls.index("netlink.create_veth"))

    del bed.prober.squatters[v6]  # the other host is gone: the retry succeeds
    result = await bed.manager.add(bed.request("ADD", "c1", netns="/run/netns/ns-c1"))
    addresses = [ipaddress.ip_address(ip["address"].split("/")[0]) for ip in result["ips"]]
    assert addresses[1] == v6
    assert bed.prober.announced == addresses  # announced once it is up


async def test_a_squatted_fixed_address_keeps_its_reservation(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    key = ReservationKey.of("prod", "db", 0)
    held = await ipam.claim(key, pool=pool, node=NODE)
    assert held.address is not None
    bed = Bed(ipam, pool, tmp_path)
    bed.prober.squat(held.address)
    with pytest.raises(AddressConflict, match=str(held.address)):
        await bed.add("s1", pod="db-0", namespace="prod")
    await bed.assert_nothing_left()
    kept = await ipam.reservation(key)
    assert kept is not None and kept.address == held.address and kept.holder == ""


class GatedProber(FakeProber):
    """A prober whose probes wait at a gate, as real ones wait on the network."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.all_waiting = asyncio.Event()
        self.expect = 1

    async def probe(self, addresses: Sequence[IPAddress]) -> list[Conflict]:
        self.waiting += 1
        if self.waiting >= self.expect:
            self.all_waiting.set()
        await self.gate.wait()
        return await super().probe(addresses)


async def _held_in_the_probe(bed: Bed, *containers: str
                             ) -> tuple[GatedProber, list[asyncio.Task[dict[str, Any]]]]:
    """Start an ADD of each container with the conflict probe gated; return once every
    one of them waits in the probe."""
    gated = GatedProber()
    gated.steps = bed.steps
    gated.expect = len(containers)
    bed.prober = gated
    bed.manager.prober = gated
    adds = [asyncio.create_task(bed.add(c)) for c in containers]
    await asyncio.wait_for(gated.all_waiting.wait(), 5)
    return gated, adds


async def test_adds_probe_at_the_same_time_without_holding_the_agents_lock(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    bed = Bed(ipam, pool, tmp_path)
    gated, adds = await _held_in_the_probe(bed, "p0", "p1", "p2")  # all three at once
    assert not bed.manager.lock.locked()
    async with bed.manager.lock:  # e.g. a route sync runs meanwhile
        pass
    gated.gate.set()
    results = await asyncio.gather(*adds)
    assert len({r["ips"][0]["address"] for r in results}) == 3


async def test_a_del_during_the_probe_cancels_the_add(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    bed = Bed(ipam, pool, tmp_path)
    gated, [adding] = await _held_in_the_probe(bed, "c1")
    with pytest.raises(InterfaceExists, match="being added"):
        await bed.manager.add(bed.request("ADD", "c1", netns="/run/netns/ns-c1"))
    out = await bed.manager.gc({"command": "GC", "config": {
        "cni.dev/valid-attachments": []}})
    assert out["removed"] == [], "the probing ADD's lease is not a leak"
    async with bed.manager.lock:
        await bed.manager.delete(bed.request("DEL", "c1"))
    gated.gate.set()
    with pytest.raises(DatapathError, match="deleted while being added"):
        await adding
    await bed.assert_nothing_left()


async def test_the_pod_is_plumbed_while_the_probe_waits_and_announced_only_after(
        ipam: RedisIpam, pool: str, tmp_path: Path) -> None:
    bed = Bed(ipam, pool, tmp_path)
    gated, [adding] = await _held_in_the_probe(bed, "c1")
    for _ in range(1000):  # let the plumbing run (fakes: no real waiting)
        if bed.records.get("c1", "eth0") is not None and not bed.manager.lock.locked():
            break
        await asyncio.sleep(0)
    assert "netlink.attach_bpf" in bed.steps.calls, "nothing plumbed while probing"
    assert bed.prober.announced == [], "announced before the probe passed"
    gated.gate.set()
    result = await adding
    assert bed.prober.announced == [ipaddress.ip_address(result["ips"][0]["address"]
                                                         .split("/")[0])]
