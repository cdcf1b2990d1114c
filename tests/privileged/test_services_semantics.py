"""Service load balancing on the real eBPF datapath: each semantic probed with real
TCP and UDP connections from a client pod (namespace x) to backend pods (namespace
y) through the service address. A probe that succeeds also proves reverse NAT: the
client's TCP stack and its connected UDP socket accept only answers from the VIP."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from datapath import maps
from datapath.features.services import ServiceManager
from datapath.features.services.models import ALGORITHM_ANNOTATION
from datapath.loader import FeaturePrograms
from datapath.maps import lb_backends, lb_maglev, lb_services, lb_slots
from netbed.topology import Pod, Topology
from tests.support.feature_programs import load_on_every_pod, programs_on, remove_services

NODE_IP = "192.0.2.10"
VIP = "10.96.7.1"
BACKENDS = ("b1", "b2", "b3")


class Bed:
    def __init__(self, topo: Topology, progs: FeaturePrograms, mgr: ServiceManager) -> None:
        self.topo, self.progs, self.mgr = topo, progs, mgr
        self.client = topo.pods["x/client"]

    def pod(self, name: str) -> Pod:
        return self.topo.pods[f"y/{name}"]

    def service(self, name: str = "web", vip: str = VIP, **spec: Any) -> None:
        body = {"clusterIP": vip, "clusterIPs": [vip], "type": "ClusterIP", "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "web"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 81}]}
        annotations = spec.pop("annotations", {})
        body.update(spec)
        self.mgr.set_service({"metadata": {"name": name, "namespace": "y",
                                           "annotations": annotations}, "spec": body})

    def endpoints(self, names: list[str], name: str = "web", **cond: Any) -> None:
        eps = [{"addresses": [str(self.pod(n).address)],
                "conditions": cond.get(n, {"ready": True}),
                "nodeName": "n1" if n != "b3" else "n2"} for n in names]
        self.mgr.set_slice({"metadata": {"name": f"{name}-abc", "namespace": "y",
                                         "labels": {"kubernetes.io/service-name": name}},
                            "addressType": "IPv4", "endpoints": eps,
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                      {"name": "dns", "port": 81, "protocol": "UDP"}]})

    def probe(self, n: int, *, src: Pod | None = None, ip: str = VIP, port: int = 8080,
              proto: str = "tcp") -> list[tuple[bool, str]]:
        """``n`` parallel probes expected to fail, each once (a rejection answers at
        once, so the generous timeout only matters if it wrongly does not)."""
        return self.topo.probe_many([(src or self.client, ip, port, proto)] * n, timeout=3.0)

    def served(self, n: int, *, src: Pod | None = None, ip: str = VIP, port: int = 8080,
               proto: str = "tcp") -> Counter[str]:
        """Which backends answered ``n`` parallel probes expected to succeed (those
        that fail on a loaded machine are retried a bounded number of times)."""
        probes = [(src or self.client, ip, port, proto)] * n
        return replies(self.topo.probe_expecting(probes, [True] * n, timeout=1.0))


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    topo = Topology(subnet="10.79.0.0/24")
    with programs_on(topo, "svc") as progs:
        topo.add_pod("x", "client")
        for b in BACKENDS:
            topo.add_pod("y", b)
        load_on_every_pod(topo, progs, policy=False)
        mgr = ServiceManager(progs, node_name="n1",
                             node_addresses=[ipaddress.IPv4Address(NODE_IP)])
        yield Bed(topo, progs, mgr)


@pytest.fixture
def clean(bed: Bed) -> Iterator[Bed]:
    yield bed
    remove_services(bed.mgr)


def replies(results: list[tuple[bool, str]]) -> Counter[str]:
    assert all(ok for ok, _ in results), results
    return Counter(r for _, r in results)


def test_cluster_ip_tcp_and_udp_with_named_and_numeric_target_ports(clean: Bed) -> None:
    clean.service()
    clean.endpoints(list(BACKENDS))
    tcp = clean.served(30)
    udp = clean.served(30, port=53, proto="udp")
    assert set(tcp) <= set(BACKENDS) and len(tcp) >= 2
    assert set(udp) <= set(BACKENDS) and len(udp) >= 2


def test_node_port_from_a_pod(clean: Bed) -> None:
    clean.service(type="NodePort", ports=[
        {"name": "http", "port": 8080, "protocol": "TCP", "nodePort": 30080}])
    clean.endpoints(["b2"])
    assert clean.served(5, ip=NODE_IP, port=30080) == Counter({"b2": 5})
    assert clean.served(5) == Counter({"b2": 5})


def test_backend_removal_moves_new_connections_away(clean: Bed) -> None:
    clean.service()
    clean.endpoints(list(BACKENDS))
    assert len(clean.served(30)) >= 2
    clean.endpoints(["b2", "b3"])
    got = clean.served(40)
    assert "b1" not in got and set(got) == {"b2", "b3"}


def test_not_ready_endpoints_are_skipped_terminating_used_only_when_all_terminate(
        clean: Bed) -> None:
    clean.service()
    clean.endpoints(["b1", "b2"], b1={"ready": False, "serving": True, "terminating": True})
    assert clean.served(10) == Counter({"b2": 10})
    clean.endpoints(["b1", "b2"], b1={"ready": False, "serving": True, "terminating": True},
                    b2={"ready": False, "serving": False, "terminating": True})
    assert clean.served(10) == Counter({"b1": 10})


def test_no_endpoints_rejects_instead_of_hanging(clean: Bed) -> None:
    clean.service()
    clean.endpoints([])
    tcp = clean.probe(3)
    udp = clean.probe(3, port=53, proto="udp")
    # refused (a TCP reset, an ICMP port unreachable), not timed out
    assert tcp == [(False, "refused")] * 3
    assert udp == [(False, "refused")] * 3


def test_session_affinity_sticks_then_expires(clean: Bed) -> None:
    timeout = 3
    clean.service(sessionAffinity="ClientIP",
                  sessionAffinityConfig={"clientIP": {"timeoutSeconds": timeout}})
    clean.endpoints(list(BACKENDS))
    seen: set[str] = set()
    for _ in range(10):
        started = time.monotonic()
        # one connection first: parallel first packets on two CPUs can both miss the
        # affinity entry and choose differently (the entry is then the last writer's),
        # as with any per-packet affinity table
        got = clean.served(1)
        got += clean.served(6)
        if time.monotonic() - started < timeout:
            # every connection of a burst shorter than the timeout gets the same backend
            # (a burst slowed past the timeout by a loaded machine proves nothing)
            assert len(got) == 1, got
        seen |= set(got)
        if len(seen) > 1:
            break
        time.sleep(timeout + 0.5)  # let the affinity expire
    assert len(seen) > 1  # after expiry a new choice is made (1 - (1/3)**9 likely)


def test_affinity_follows_backend_removal(clean: Bed) -> None:
    clean.service(sessionAffinity="ClientIP")
    clean.endpoints(list(BACKENDS))
    # single connections first: parallel first packets can race for the affinity entry
    first = next(iter(clean.served(1)))
    clean.endpoints([b for b in BACKENDS if b != first])
    got = clean.served(1)
    got += clean.served(6)
    assert len(got) == 1 and first not in got, got


def test_hairpin_a_backend_reaches_itself_through_its_service(clean: Bed) -> None:
    clean.service()
    clean.endpoints(["b1"])
    b1 = clean.pod("b1")
    assert clean.served(5, src=b1) == Counter({"b1": 5})
    assert clean.served(5, src=b1, port=53, proto="udp") == Counter({"b1": 5})


def test_internal_traffic_policy_local(clean: Bed) -> None:
    clean.service(internalTrafficPolicy="Local")
    clean.endpoints(["b1", "b3"])  # b3 is on node n2; this node is n1
    assert clean.served(10) == Counter({"b1": 10})
    clean.endpoints(["b3"])
    assert clean.probe(2) == [(False, "refused")] * 2


def test_maglev_spreads_and_only_removed_backends_flows_move(clean: Bed) -> None:
    clean.service(annotations={ALGORITHM_ANNOTATION: "maglev"})
    clean.endpoints(list(BACKENDS))
    assert len(clean.served(30)) >= 2
    key = next(iter(clean.mgr.ports))
    port = next(p for p in clean.mgr.ports[key] if p.protocol == "TCP")
    assert port.maglev
    entries = [k for k, _ in clean.progs.items(lb_maglev.NAME)]
    assert len(entries) == 2 * lb_maglev.MAGLEV_M  # the TCP and the UDP port


def test_one_change_touches_only_its_service(clean: Bed) -> None:
    for i in range(20):
        clean.service(name=f"s{i}", vip=f"10.96.8.{i + 1}")
        clean.endpoints(list(BACKENDS), name=f"s{i}")
    before = {name: dict(clean.progs.items(name))
              for name in (lb_services.NAME, lb_backends.NAME, lb_slots.NAME)}
    clean.endpoints(["b1"], name="s7")
    after = {name: dict(clean.progs.items(name)) for name in before}
    changed = sum(1 for name in before for k in set(before[name]) | set(after[name])
                  if before[name].get(k) != after[name].get(k))
    # two ports x (svc count + 2 slots + 2 backends) = 10 entries, of ~300
    assert changed == 10
    assert clean.served(5, ip="10.96.8.8") == Counter({"b1": 5})


def test_every_map_layout_matches_its_c_struct(bed: Bed) -> None:
    import ctypes

    for layout in maps.FEATURES:
        name, key, value = layout.name, layout.key, layout.value
        c_key, c_value = bed.progs.c_layout(name)
        assert ctypes.sizeof(c_key) == ctypes.sizeof(key), name
        assert ctypes.sizeof(c_value) == ctypes.sizeof(value), name
        assert [f[0] for f in c_key._fields_] == [f[0] for f in key._fields_], name
        assert [f[0] for f in c_value._fields_] == [f[0] for f in value._fields_], name


def test_a_reused_source_port_towards_another_service_gets_replies_from_that_vip(
        clean: Bed) -> None:
    # both services share backend b1, so their reverse entries share one key
    clean.service(name="one", vip="10.96.9.1")
    clean.endpoints(["b1"], name="one")
    clean.service(name="two", vip="10.96.9.2")
    clean.endpoints(["b1"], name="two")
    for vip in ("10.96.9.1", "10.96.9.2", "10.96.9.1"):
        got = clean.topo.probe_expecting([(clean.client, vip, 53, "udp")], [True],
                                         timeout=1.0, sport=40404)
        assert got == [(True, "b1")], vip


def test_conntrack_keeps_a_flow_on_its_backend_until_that_backend_goes(clean: Bed) -> None:
    clean.service()
    clean.endpoints(list(BACKENDS))

    def flow() -> str:
        """One UDP flow: the same source port, so the same 5-tuple, every time."""
        got = clean.topo.probe_expecting([(clean.client, VIP, 53, "udp")], [True],
                                         timeout=1.0, sport=40405)
        assert got[0][0], got
        return got[0][1]

    first = flow()
    # random choice per new flow: nine equal picks by chance would be (1/3)**8
    assert {flow() for _ in range(8)} == {first}
    other = next(b for b in BACKENDS if b != first)
    clean.endpoints([b for b in BACKENDS if b != other])  # another backend goes
    assert {flow() for _ in range(4)} == {first}
    clean.endpoints([b for b in BACKENDS if b != first])  # the flow's own backend goes
    moved = flow()
    assert moved != first and moved in BACKENDS
    assert {flow() for _ in range(4)} == {moved}
