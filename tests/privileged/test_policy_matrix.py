"""NetworkPolicy on the real eBPF datapath, after the upstream Kubernetes e2e model:
namespaces x, y, z with pods a, b, c, each serving TCP and UDP on ports 80 and 81.
For every case all ordered pairs are probed (both protocols, both ports, in
parallel) and the whole reachability matrix is compared with one written down by
hand for that case (a pod always reaches itself: that never leaves its netns)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any, cast

import pytest

from datapath.features.policy import NamespaceInfo, PodInfo, PolicyManager
from datapath.features.policy.models import NetworkPolicyObject, PolicyKey
from datapath.loader import FeaturePrograms
from netbed.pods import DROPPED
from netbed.topology import Pod, Topology, policy_drops
from tests.support.feature_programs import load_on_every_pod, programs_on, set_policies

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = ((80, "tcp"), (81, "tcp"), (80, "udp"), (81, "udp"))
NAMED = {f"serve-{p}-{proto}": [(proto.upper(), p)] for p, proto in PORTS}
ALL = [f"{n}/{p}" for n in NAMESPACES for p in PODS]

Key = tuple[str, str, int, str]  # source pod, destination pod, port, protocol
Matrix = dict[Key, bool]
Outcomes = dict[Key, str]
ALLOWED = "allowed"
DENIED = "denied"


def outcomes(keys: list[Key], results: list[tuple[bool, str]]) -> Outcomes:
    """Name each probe's outcome: allowed only if the destination pod itself answered
    (every pod answers with its namespace/name), denied only if the packets vanished
    (a policy drops silently; "refused" would mean something else answered)."""
    out = {}
    for (s, d, port, proto), (ok, reply) in zip(keys, results, strict=True):
        if ok and reply == d:
            out[(s, d, port, proto)] = ALLOWED
        elif not ok and reply == DROPPED:
            out[(s, d, port, proto)] = DENIED
        else:
            out[(s, d, port, proto)] = f"{'answered' if ok else 'failed'}: {reply}"
    return out


def differences(got: Outcomes, want: Matrix) -> list[str]:
    return sorted(f"{s} -> {d} {proto}/{port}: got {got[k]}, want "
                  f"{ALLOWED if want[k] else DENIED}"
                  for k in want for (s, d, port, proto) in [k]
                  if got[k] != (ALLOWED if want[k] else DENIED))


class Bed:
    def __init__(self, topo: Topology, progs: FeaturePrograms, mgr: PolicyManager) -> None:
        self.topo = topo
        self.progs = progs
        self.mgr = mgr

    def pod(self, key: str) -> Pod:
        return self.topo.pods[key]

    def info(self, key: str, labels: dict[str, str] | None = None) -> PodInfo:
        p = self.pod(key)
        return PodInfo(namespace=p.namespace, name=p.name, addresses=p.addresses,
                       labels=labels if labels is not None else {"pod": p.name},
                       named_ports=NAMED)

    def policies(self, *pols: dict[str, Any]) -> None:
        set_policies(self.mgr, *pols)

    def matrix(self, want: Matrix) -> Outcomes:
        keys = list(want)
        probes = [(self.pod(s), str(self.pod(d).address), port, proto)
                  for s, d, port, proto in keys]
        res = self.topo.probe_expecting(probes, [want[k] for k in keys],
                                        denied=lambda: policy_drops(self.progs))
        return outcomes(keys, res)


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    topo = Topology(subnet="10.78.0.0/24")
    with programs_on(topo, "pol") as progs:
        for n in NAMESPACES:
            for p in PODS:
                topo.add_pod(n, p, {"pod": p}, answer=f"{n}/{p}")
        load_on_every_pod(topo, progs)
        mgr = PolicyManager(progs)
        for n in NAMESPACES:
            mgr.set_namespace(NamespaceInfo(n, {"ns": n}))
        b = Bed(topo, progs, mgr)
        for key in ALL:
            mgr.set_pod(b.info(key))
        mgr.set_local({p.address for p in topo.pods.values()})
        yield b


@pytest.fixture
def clean(bed: Bed) -> Iterator[Bed]:
    yield bed
    bed.policies()
    for key in ALL:
        bed.mgr.set_pod(bed.info(key))
    for n in NAMESPACES:
        bed.mgr.set_namespace(NamespaceInfo(n, {"ns": n}))


class Expect:
    """An expected matrix: start all-allowed or all-denied, then carve."""

    def __init__(self, default: bool = True) -> None:
        self.m = {(s, d, port, proto): default for s in ALL for d in ALL
                  for port, proto in PORTS}

    def set(self, ok: bool, *, src: list[str] | None = None, dst: list[str] | None = None,
            ports: tuple[tuple[int, str], ...] = PORTS) -> Expect:
        for s in src or ALL:
            for d in dst or ALL:
                for pp in ports:
                    self.m[(s, d, *pp)] = ok
        return self

    def result(self) -> Matrix:
        for s in ALL:
            for pp in PORTS:
                self.m[(s, s, *pp)] = True
        return self.m


def check(bed: Bed, expected: Expect) -> None:
    want = expected.result()
    wrong = differences(bed.matrix(want), want)
    assert not wrong, f"{len(wrong)} of {len(want)} probes differ:\n" + "\n".join(wrong[:40])


def pol(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


X = [f"x/{p}" for p in PODS]
Y = [f"y/{p}" for p in PODS]
Z = [f"z/{p}" for p in PODS]
ON_A = {"matchLabels": {"pod": "a"}}
TCP = ((80, "tcp"), (81, "tcp"))
UDP = ((80, "udp"), (81, "udp"))


def test_no_policy_allows_everything(clean: Bed) -> None:
    check(clean, Expect(True))


def test_default_deny_ingress(clean: Bed) -> None:
    clean.policies(pol("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    check(clean, Expect(True).set(False, dst=X))


def test_default_deny_all(clean: Bed) -> None:
    clean.policies(pol("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    check(clean, Expect(True).set(False, dst=X).set(False, src=X))


def test_allow_by_pod_selector_same_namespace_only(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=["x/b"], dst=["x/a"]))


def test_allow_by_namespace_selector(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=Y, dst=["x/a"]))


def test_pod_and_namespace_selector_in_one_peer_is_and(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                   "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=["y/b"], dst=["x/a"]))


def test_two_peers_are_or(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                  {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=[*Y, "x/b"], dst=["x/a"]))


def test_match_expressions_in_and_not_in(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "ns", "operator": "In", "values": ["y", "z"]}]},
                   "podSelector": {"matchExpressions": [
                       {"key": "pod", "operator": "NotIn", "values": ["c"]}]}}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"])
          .set(True, src=["y/a", "y/b", "z/a", "z/b"], dst=["x/a"]))


def test_port_only_rule_and_end_port_range(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"ports": [{"port": 81}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, dst=["x/a"], ports=((81, "tcp"),)))
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"], ports=UDP))


def test_named_port(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, dst=["x/a"], ports=((80, "udp"),)))


def test_protocol_only_rule_never_opens_another_protocol(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"ports": [{"protocol": "UDP"}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"], ports=TCP))


def test_egress_rule_and_replies_pass(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
         "ports": [{"port": "serve-81-tcp"}, {"port": 80, "protocol": "UDP"}]}]}))
    check(clean, Expect(True).set(False, src=["x/a"])
          .set(True, src=["x/a"], dst=Y, ports=((81, "tcp"), (80, "udp"))))


def test_egress_deny_overrides_ingress_allow(clean: Bed) -> None:
    clean.policies(
        pol("deny-egress", "x", {"podSelector": ON_A, "policyTypes": ["Egress"]}),
        pol("allow-all-in", "y", {"podSelector": {}, "ingress": [{}]}))
    check(clean, Expect(True).set(False, src=["x/a"]))


def test_ip_block_with_except(clean: Bed) -> None:
    yb = clean.pod("y/b").address
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.78.0.0/24", "except": [f"{yb}/32"]}}]}]}))
    check(clean, Expect(True).set(False, src=["y/b"], dst=["x/a"]))
    clean.policies(pol("p", "x", {"podSelector": ON_A, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": f"{yb}/32"}}]}]}))
    check(clean, Expect(True).set(False, src=["x/a"]).set(True, src=["x/a"], dst=["y/b"]))


def test_stacked_policies_are_a_union(clean: Bed) -> None:
    clean.policies(
        pol("one", "x", {"podSelector": ON_A, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
        pol("two", "x", {"podSelector": ON_A, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}},
                       "podSelector": {"matchLabels": {"pod": "c"}}}],
             "ports": [{"port": 80, "protocol": "UDP"}]}]}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=["x/b"], dst=["x/a"])
          .set(True, src=["z/c"], dst=["x/a"], ports=((80, "udp"),)))


def test_update_and_delete_a_policy_and_denies_are_counted(clean: Bed) -> None:
    p = pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    clean.policies(p)
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=["x/b"], dst=["x/a"]))
    assert clean.mgr.denied().get(PolicyKey("x/p"), 0) > 0
    p["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["pod"] = "c"
    clean.mgr.set_policy(cast(NetworkPolicyObject, p))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=["x/c"], dst=["x/a"]))
    clean.mgr.delete_policy("x/p")
    check(clean, Expect(True))


def test_relabel_pod_and_namespace(clean: Bed) -> None:
    clean.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                   "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    clean.mgr.set_pod(clean.info("y/c", {"pod": "b"}))
    check(clean, Expect(True).set(False, dst=["x/a"]).set(True, src=["y/b", "y/c"], dst=["x/a"]))
    clean.mgr.set_namespace(NamespaceInfo("z", {"ns": "y"}))
    check(clean, Expect(True).set(False, dst=["x/a"])
          .set(True, src=["y/b", "y/c", "z/b"], dst=["x/a"]))
    # the policy's target itself relabelled: no longer selected, so open again
    clean.mgr.set_pod(clean.info("x/a", {"pod": "other"}))
    check(clean, Expect(True))


def test_ipcache_holds_every_pod(bed: Bed) -> None:
    assert {ipaddress.IPv4Address(str(p.address)) for p in bed.topo.pods.values()} == set(
        bed.mgr.state.endpoints)
