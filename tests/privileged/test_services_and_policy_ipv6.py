"""Services and NetworkPolicy over IPv6 and dual-stack on the real eBPF datapath (root):
dual-stack pods on one node, real TCP and UDP connections. Services: an IPv6-only
ClusterIP, a dual-stack Service served per family by that family's backends, a
NodePort on the node's IPv6 address, ClientIP affinity, hairpin, and rejection (TCP
RST, ICMPv6 port unreachable) without endpoints. Policy: default deny, an IPv6 ipBlock
with except, an IPv4 ipBlock that admits the IPv4 traffic of a pod but not its IPv6
traffic, and a Service whose backend a policy restricts after DNAT.

A denial counts only when the policy program's drop counter for that policy rose by
the probe (never a timeout alone), and every denial has a positive control: the same
destination reached from an allowed source or over the allowed family."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from datapath.features.policy import NamespaceInfo, PodInfo, PolicyManager
from datapath.features.services import ServiceManager
from datapath.loader import FeaturePrograms
from netbed.pods import DROPPED
from netbed.topology import Pod, Topology
from tests.support.feature_programs import (
    load_on_every_pod,
    programs_on,
    remove_services,
    set_policies,
)

NODE_IP = "192.0.2.10"
NODE_IP6 = "2001:db8:7::10"
VIP4, VIP6 = "10.96.8.1", "fd00:96::8:1"
BACKENDS = ("b1", "b2", "b3")


class Bed:
    def __init__(self, topo: Topology, progs: FeaturePrograms, svc: ServiceManager,
                 pol: PolicyManager) -> None:
        self.topo, self.progs, self.svc, self.pol = topo, progs, svc, pol
        self.client = topo.pods["x/client"]
        self.other = topo.pods["x/other"]

    def pod(self, name: str) -> Pod:
        return self.topo.pods[f"y/{name}"]

    def service(self, name: str = "web", **spec: Any) -> None:
        body = {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "web"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 81}]}
        body.update(spec)
        self.svc.set_service({"metadata": {"name": name, "namespace": "y"}, "spec": body})

    def endpoints(self, names: list[str], family: int, name: str = "web") -> None:
        eps = [{"addresses": [str(self.pod(n).addresses[0 if family == 4 else 1])],
                "conditions": {"ready": True}, "nodeName": "n1"} for n in names]
        self.svc.set_slice({"metadata": {"name": f"{name}-{family}", "namespace": "y",
                                         "labels": {"kubernetes.io/service-name": name}},
                            "addressType": f"IPv{family}", "endpoints": eps,
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                      {"name": "dns", "port": 81, "protocol": "UDP"}]})

    def served(self, n: int, ip: str, *, port: int = 8080, proto: str = "tcp",
               src: Pod | None = None) -> Counter[str]:
        probes = [(src or self.client, ip, port, proto)] * n
        res = self.topo.probe_expecting(probes, [True] * n, timeout=1.0)
        assert all(ok for ok, _ in res), res
        return Counter(r for _, r in res)

    def refused(self, n: int, ip: str, *, port: int = 8080, proto: str = "tcp"
                ) -> list[tuple[bool, str]]:
        return self.topo.probe_many([(self.client, ip, port, proto)] * n, timeout=3.0)

    def policies(self, *pols: dict[str, Any]) -> None:
        set_policies(self.pol, *pols)

    def denied_by(self, src: Pod, ip: str, policy: str, *, port: int = 80) -> None:
        """The probe is dropped AND the policy's drop counter rose by it."""
        before = self.pol.denied().get(policy, 0)  # type: ignore[call-overload]
        (ok, reply), = self.topo.probe_many([(src, ip, port, "tcp")], timeout=1.0)
        assert not ok and reply == DROPPED, reply
        assert self.pol.denied().get(policy, 0) > before, "dropped, but not by the policy"  # type: ignore[call-overload]

    def allowed(self, src: Pod, ip: str, answer: str, *, port: int = 80) -> None:
        (ok, reply), = self.topo.probe_expecting([(src, ip, port, "tcp")], [True])
        assert ok and reply == answer, reply


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    topo = Topology(subnet="10.81.0.0/24", subnet6="fd00:81::/120")
    with programs_on(topo, "v6") as progs:
        topo.add_pod("x", "client")
        topo.add_pod("x", "other")
        for b in BACKENDS:
            topo.add_pod("y", b, {"app": "web"}, answer=b)
        load_on_every_pod(topo, progs)
        node = [ipaddress.ip_address(NODE_IP), ipaddress.ip_address(NODE_IP6)]
        svc = ServiceManager(progs, node_name="n1", node_addresses=node)
        pol = PolicyManager(progs, host_addresses=node)
        for ns in ("x", "y"):
            pol.set_namespace(NamespaceInfo(ns, {"ns": ns}))
        for pod in topo.pods.values():
            pol.set_pod(PodInfo(namespace=pod.namespace, name=pod.name,
                                addresses=pod.addresses, labels=dict(pod.labels),
                                named_ports={"web": [("TCP", 80)]}))
        pol.set_local({a for pod in topo.pods.values() for a in pod.addresses})
        yield Bed(topo, progs, svc, pol)


@pytest.fixture
def clean(bed: Bed) -> Iterator[Bed]:
    yield bed
    bed.policies()
    remove_services(bed.svc)


def test_pods_talk_over_ipv6_without_any_service_or_policy(clean: Bed) -> None:
    b1 = clean.pod("b1")
    assert b1.address6 is not None
    clean.allowed(clean.client, str(b1.address6), "b1")


def test_ipv6_cluster_ip_tcp_and_udp(clean: Bed) -> None:
    clean.service(clusterIP=VIP6, clusterIPs=[VIP6], ipFamilies=["IPv6"],
                  ipFamilyPolicy="SingleStack")
    clean.endpoints(list(BACKENDS), 6)
    tcp = clean.served(30, VIP6)
    udp = clean.served(30, VIP6, port=53, proto="udp")
    assert set(tcp) <= set(BACKENDS) and len(tcp) >= 2, tcp
    assert set(udp) <= set(BACKENDS) and len(udp) >= 2, udp


def test_dual_stack_service_serves_each_family_from_that_familys_backends(clean: Bed) -> None:
    for policy in ("PreferDualStack", "RequireDualStack"):
        clean.service(clusterIP=VIP4, clusterIPs=[VIP4, VIP6], ipFamilies=["IPv4", "IPv6"],
                      ipFamilyPolicy=policy)
        clean.endpoints(["b1"], 4)
        clean.endpoints(["b2"], 6)
        assert clean.served(6, VIP4) == Counter({"b1": 6})
        assert clean.served(6, VIP6) == Counter({"b2": 6})
        assert clean.served(4, VIP6, port=53, proto="udp") == Counter({"b2": 4})


def test_node_port_on_the_nodes_ipv6_address(clean: Bed) -> None:
    clean.service(clusterIP=VIP6, clusterIPs=[VIP6], ipFamilies=["IPv6"], type="NodePort",
                  ports=[{"name": "http", "port": 8080, "protocol": "TCP", "nodePort": 30080,
                          "targetPort": "web"}])
    clean.endpoints(["b3"], 6)
    assert clean.served(5, NODE_IP6, port=30080) == Counter({"b3": 5})
    # the IPv4 node address serves no NodePort of an IPv6-only Service
    (ok, _), = clean.refused(1, NODE_IP, port=30080)
    assert not ok


def test_client_ip_affinity_over_ipv6(clean: Bed) -> None:
    clean.service(clusterIP=VIP6, clusterIPs=[VIP6], ipFamilies=["IPv6"],
                  sessionAffinity="ClientIP")
    clean.endpoints(list(BACKENDS), 6)
    got = clean.served(20, VIP6)
    assert len(got) == 1, got


def test_hairpin_over_ipv6(clean: Bed) -> None:
    clean.service(clusterIP=VIP6, clusterIPs=[VIP6], ipFamilies=["IPv6"])
    clean.endpoints(["b1"], 6)
    assert clean.served(3, VIP6, src=clean.pod("b1")) == Counter({"b1": 3})


def test_no_endpoints_refuses_at_once_over_ipv6(clean: Bed) -> None:
    clean.service(clusterIP=VIP6, clusterIPs=[VIP6], ipFamilies=["IPv6"])
    assert clean.refused(3, VIP6) == [(False, "refused")] * 3  # TCP RST built in eBPF
    # ICMPv6 port unreachable: a connected UDP socket reports it as refused
    assert clean.refused(3, VIP6, port=53, proto="udp") == [(False, "refused")] * 3


def test_default_deny_over_ipv6_counts_its_drops(clean: Bed) -> None:
    b1, b2 = clean.pod("b1"), clean.pod("b2")
    clean.policies({"metadata": {"name": "deny", "namespace": "y"},
                    "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                             "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"podSelector": {}}]}]}})
    clean.denied_by(clean.client, str(b1.address6), "y/deny")
    clean.denied_by(clean.client, str(b1.address), "y/deny")
    clean.allowed(b2, str(b1.address6), "b1")  # positive control: same namespace allowed


def test_ipv6_ipblock_with_except(clean: Bed) -> None:
    b1 = clean.pod("b1")
    assert clean.client.address6 is not None
    clean.policies({"metadata": {"name": "block6", "namespace": "y"},
                    "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                             "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"ipBlock": {
                                 "cidr": "fd00:81::/120",
                                 "except": [f"{clean.client.address6}/128"]}}]}]}})
    clean.denied_by(clean.client, str(b1.address6), "y/block6")
    clean.allowed(clean.other, str(b1.address6), "b1")


def test_an_ipv4_ipblock_admits_ipv4_but_not_ipv6_of_the_same_pod(clean: Bed) -> None:
    b1 = clean.pod("b1")
    clean.policies({"metadata": {"name": "block4", "namespace": "y"},
                    "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                             "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"ipBlock": {"cidr": "10.81.0.0/24"}}]}]}})
    clean.allowed(clean.client, str(b1.address), "b1")
    clean.denied_by(clean.client, str(b1.address6), "y/block4")


def test_policy_applies_to_ipv6_service_traffic_after_dnat(clean: Bed) -> None:
    clean.service(clusterIP=VIP6, clusterIPs=[VIP6], ipFamilies=["IPv6"])
    clean.endpoints(["b1"], 6)
    clean.policies({"metadata": {"name": "only-other", "namespace": "y"},
                    "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                             "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"namespaceSelector": {
                                 "matchLabels": {"ns": "x"}}, "podSelector": {
                                 "matchLabels": {"role": "other"}}}]}]}})
    clean.pol.set_pod(PodInfo(namespace="x", name="other",
                              addresses=clean.other.addresses, labels={"role": "other"}))
    try:
        clean.denied_by(clean.client, VIP6, "y/only-other", port=8080)
        assert clean.served(3, VIP6, src=clean.other) == Counter({"b1": 3})
    finally:
        clean.pol.set_pod(PodInfo(namespace="x", name="other",
                                  addresses=clean.other.addresses, labels={}))


@pytest.mark.parametrize("family", [4, 6])
def test_a_direct_connection_reusing_a_service_flows_port_is_not_reverse_natted(
        clean: Bed, family: int) -> None:
    """The client's kernel may reuse a source port a service flow used: the replies of
    a new direct connection to the backend must not be rewritten to come from the VIP
    by that old flow's reverse entry (it would time out)."""
    b1 = clean.pod("b1")
    if family == 4:
        clean.service(clusterIP=VIP4, clusterIPs=[VIP4], ipFamilies=["IPv4"])
    else:
        clean.service(clusterIP=VIP6, clusterIPs=[VIP6], ipFamilies=["IPv6"])
    clean.endpoints(["b1"], family)
    vip, direct = (VIP4, str(b1.address)) if family == 4 else (VIP6, str(b1.address6))
    sport = 40500 + family
    via = clean.topo.probe_expecting([(clean.client, vip, 8080, "tcp")], [True],
                                     timeout=1.0, sport=sport)
    assert via == [(True, "b1")]
    again = clean.topo.probe_expecting([(clean.client, direct, 80, "tcp")], [True],
                                       timeout=1.0, sport=sport)
    assert again == [(True, "b1")]
