"""The periodic re-check of running fixed-IP pods: a conflict that appears is counted
once, sets the gauge and records one Warning Event on the pod; while it lasts nothing
more is recorded; when it goes away the gauge drops and a Normal Event says so.
Ephemeral and fenced endpoints are not re-checked. On the fakes, IPAM a real store."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from datapath.config import AgentSettings
from datapath.endpoints import EndpointManager
from datapath.fakes import FakeNetlink, FakeProber, MemoryEndpointProgram, MemoryEndpointRecords
from datapath.metrics import AgentMetrics
from datapath.podinfo import name_pod_lookup
from datapath.recheck import REASON, RESOLVED, ConflictMonitor
from ipam import PoolSpec, RedisIpam, ReservationKey


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str, str, bool]] = []

    async def post(self, *, namespace: str, pod: str, uid: str, reason: str, message: str,
                   warning: bool = True) -> None:
        self.posted.append((f"{namespace}/{pod}", uid, reason, message, warning))


def _value(metrics: AgentMetrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


async def test_a_conflict_appearing_and_going_away(ipam: RedisIpam, tmp_path: Path) -> None:
    await ipam.apply_pool(PoolSpec(name="p4", cidr="10.31.0.0/24", block_size=28))
    await ipam.apply_pool(PoolSpec(name="p6", cidr="fd00:31::/116", block_size=124))
    settings = AgentSettings(node="n1", default_pool="p4,p6", state_dir=str(tmp_path),
                             socket=str(tmp_path / "s"), conflict_recheck_interval=60)
    netlink, prober = FakeNetlink(), FakeProber()
    manager = EndpointManager(settings, ipam, netlink=netlink, program=MemoryEndpointProgram(),
                              records=MemoryEndpointRecords(), pods=name_pod_lookup(ipam),
                              prober=prober)
    metrics = AgentMetrics(manager.drop_counters)
    events = Events()
    monitor = ConflictMonitor(settings, prober=prober, endpoints=manager, metrics=metrics,
                              events=events)

    async def add(cid: str, pod: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        netlink.namespaces.add(f"/run/netns/{cid}")
        out = await manager.add({"containerId": cid, "ifname": "eth0",
                                 "netns": f"/run/netns/{cid}", "config": {},
                                 "args": {"K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": pod,
                                          "K8S_POD_UID": f"uid-{cid}"}})
        return [ipaddress.ip_address(ip["address"].split("/")[0]) for ip in out["ips"]]

    await ipam.claim(ReservationKey.of("prod", "db", 0), pools=["p4", "p6"], node="n1")
    db = await add("c-db", "db-0")
    web = await add("c-web", "web-x")  # ephemeral: not re-checked
    assert await monitor.check() == []
    prober.probed.clear()

    squat = prober.squat(db[1], mac="02:de:ad:be:ef:02", link="fab0")
    prober.squat(web[0])
    assert await monitor.check() == [squat]
    assert set(prober.probed) == set(db), "only fixed-IP pods' addresses are probed"
    assert _value(metrics, "stickyip_datapath_address_conflicts_total",
                  phase="recheck", family="6") == 1
    assert _value(metrics, "stickyip_datapath_conflicting_endpoints") == 1
    assert [(p, u, r, w) for p, u, r, _, w in events.posted] == [
        ("prod/db-0", "uid-c-db", REASON, True)]
    assert f"{db[1]} answered from 02:de:ad:be:ef:02 on fab0" in events.posted[0][3]

    await monitor.check()  # still there: nothing new counted or recorded
    assert _value(metrics, "stickyip_datapath_address_conflicts_total",
                  phase="recheck", family="6") == 1
    assert len(events.posted) == 1

    del prober.squatters[db[1]]
    assert await monitor.check() == []
    assert _value(metrics, "stickyip_datapath_conflicting_endpoints") == 0
    assert [(r, w) for _, _, r, _, w in events.posted] == [(REASON, True), (RESOLVED, False)]

    prober.squat(db[0])
    manager.fence(db[0])  # re-homed elsewhere: not this node's business any more
    assert await monitor.check() == []
