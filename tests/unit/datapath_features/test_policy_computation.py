"""Pure NetworkPolicy computation: port ranges as prefixes, label selectors, and the
map entries checked by emulating the eBPF lookups (LPM ipcache, four LPM policy
lookups) against an independent, direct reading of the NetworkPolicy semantics on
randomly generated policies, over IPv4, IPv6 and dual-stack pods and ipBlocks of
both families."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datapath.features.policy import NamespaceInfo, PodInfo, PolicyManager, compute
from datapath.features.policy.compute import port_prefixes
from datapath.features.policy.errors import InvalidPolicy
from datapath.features.policy.models import LabelSelector, NetworkPolicyObject
from datapath.features.policy.selectors import matches
from datapath.maps import fields, ipcache, policy_denied, policy_endpoints, policy_rules
from datapath.maps.state import MapState, MemoryMaps

A = ipaddress.IPv4Address
A6 = ipaddress.IPv6Address
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@given(st.integers(0, 65535), st.integers(0, 2000))
def test_port_prefixes_cover_exactly_the_range(start: int, length: int) -> None:
    end = min(65535, start + length)
    covered: set[int] = set()
    for port, bits in port_prefixes(start, end):
        size = 1 << (16 - bits)
        assert port % size == 0  # aligned block
        block = set(range(port, port + size))
        assert not covered & block
        covered |= block
    assert covered == set(range(start, end + 1))


def test_bad_port_range_is_refused() -> None:
    with pytest.raises(InvalidPolicy):
        port_prefixes(90, 80)


def test_selector_operators() -> None:
    labels = {"app": "web", "tier": "fe"}
    assert matches({}, labels) and matches(None, labels)
    assert matches({"matchLabels": {"app": "web"}}, labels)
    assert not matches({"matchLabels": {"app": "db"}}, labels)
    expr = [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "env", "operator": "DoesNotExist"},
            {"key": "app", "operator": "Exists"},
            {"key": "app", "operator": "NotIn", "values": ["db"]}]
    assert matches(cast(LabelSelector, {"matchExpressions": expr}), labels)
    assert not matches({"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                              "values": ["fe"]}]}, labels)
    with pytest.raises(InvalidPolicy):
        matches({"matchExpressions": [{"key": "a", "operator": "Gt"}]}, labels)


# ---------------------------------------------------------------- emulation

NAMESPACES = [NamespaceInfo("x", {"ns": "x"}), NamespaceInfo("y", {"ns": "y"}),
              NamespaceInfo("z", {"ns": "z", "env": "prod"})]
NAMED = {"web": [("TCP", 80)], "dns": [("UDP", 53)]}


def _addresses(i: int, j: int) -> tuple[Addr, ...]:
    """Dual-stack pods, but z/a is IPv4-only and z/b IPv6-only."""
    v4, v6 = A(f"10.0.{i}.{j + 1}"), A6(f"fd00:{i}::{j + 1}")
    return {(2, 0): (v4,), (2, 1): (v6,)}.get((i, j), (v4, v6))


PODS = [PodInfo(ns, name, _addresses(i, j), {"pod": name}, NAMED)
        for i, ns in enumerate("xyz") for j, name in enumerate("abc")]
EXTERNAL: list[Addr] = [A("192.168.1.1"), A("192.168.1.200"), A("8.8.8.8"),
                        A6("fd00:99::1"), A6("2001:db8::1"), A6("fd00:1::200")]
PROBES = [(6, 80), (6, 81), (17, 53), (17, 80), (132, 80)]


def lpm(entries: Mapping[tuple[int, int], tuple[int, ...]], key_bits: int, data: int
        ) -> tuple[int, ...] | None:
    best: tuple[int, tuple[int, ...]] | None = None
    for k, v in entries.items():
        plen, value = k[0], k[1]
        if plen <= key_bits and (data >> (key_bits - plen)) == (value >> (key_bits - plen)) and (
                best is None or plen > best[0]):
            best = (plen, v)
    return best[1] if best else None


def _policy_bits(ep: int, ident: int, d: int, proto: int, port: int) -> int:
    return (ep << 64) | (ident << 32) | (d << 24) | (proto << 16) | port


def emulate(maps: MapState, src: Addr, dst: Addr, proto: int, port: int,
            endpoints: dict[Addr, int]) -> bool:
    """What the programs decide for a new connection src -> dst (both directions), on
    the maps of the packet's family."""
    v6 = src.version == 6
    bits = 128 if v6 else 32
    decode = fields.from_be128 if v6 else fields.from_be32
    ipc = {(k[0], int(decode(k[1]))): v
           for k, v in maps[ipcache.NAME6 if v6 else ipcache.NAME].items()}
    pol = {(k[0], _policy_bits(k[1], k[2], k[3], k[4], fields.from_be16(k[5]))): v
           for k, v in maps[policy_rules.NAME].items()}
    eps = {decode(k[0]): v
           for k, v in maps[policy_endpoints.NAME6 if v6 else policy_endpoints.NAME].items()}

    def ident(a: Addr) -> int:
        v = lpm(ipc, bits, int(a))
        return v[0] if v else ipcache.ID_WORLD

    def allowed(ep_addr: Addr, peer: Addr, d: int, flag: int) -> bool:
        ep = eps.get(ep_addr)
        if not ep or not ep[1] & flag:
            return True
        i = ident(peer)
        return any(lpm(pol, 96, _policy_bits(ep[0], ii, d, pr, pt)) is not None
                   for ii, pr, pt in ((i, proto, port), (i, 0, 0), (0, 0, 0), (0, proto, port)))

    return (allowed(src, dst, policy_rules.DIR_EGRESS, policy_endpoints.F_EGRESS_ENFORCED)
            and allowed(dst, src, policy_rules.DIR_INGRESS, policy_endpoints.F_INGRESS_ENFORCED))


def semantic(policies: list[dict[str, Any]], src: Addr, dst: Addr, proto: int,
             port: int) -> bool:
    """The NetworkPolicy spec read directly, independently of compute.py."""
    pods = {a: p for p in PODS for a in p.addresses}
    nss = {n.name: {**n.labels, "kubernetes.io/metadata.name": n.name} for n in NAMESPACES}
    pname = {6: "TCP", 17: "UDP", 132: "SCTP"}[proto]

    def sel(s: dict[str, Any] | None, labels: dict[str, str]) -> bool:
        return matches(cast(LabelSelector | None, s), labels)  # selectors are unit-tested above

    def within(addr: Addr, cidr: str) -> bool:
        net = ipaddress.ip_network(cidr)
        return net.version == addr.version and addr in net

    def peer_ok(peer: dict[str, Any], addr: Addr, pol_ns: str) -> bool:
        if "ipBlock" in peer:
            b = peer["ipBlock"]
            return within(addr, b["cidr"]) and not any(
                within(addr, e) for e in b.get("except", []))
        p = pods.get(addr)
        if p is None:
            return False
        if "namespaceSelector" in peer:
            if not sel(peer["namespaceSelector"], nss[p.namespace]):
                return False
        elif p.namespace != pol_ns:
            return False
        return "podSelector" not in peer or sel(peer["podSelector"], p.labels)

    def port_ok(ports: list[dict[str, Any]], target: PodInfo | None) -> bool:
        if not ports:
            return True
        for pp in ports:
            if pp.get("protocol", "TCP") != pname:
                continue
            p = pp.get("port")
            if p is None:
                return True
            if isinstance(p, str):
                if target and any(pr == pname and n == port
                                  for pr, n in target.named_ports.get(p, [])):
                    return True
                continue
            if p <= port <= pp.get("endPort", p):
                return True
        return False

    def side(ep: Addr, peer: Addr, direction: str, field: str) -> bool:
        pod = pods.get(ep)
        if pod is None:
            return True
        sel_pols = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                    and sel(p["spec"]["podSelector"], pod.labels)
                    and direction in p["spec"]["policyTypes"]]
        if not sel_pols:
            return True
        for p in sel_pols:
            for rule in p["spec"].get(direction.lower(), []):
                peers = rule.get(field) or []
                target = pod if direction == "Ingress" else pods.get(peer)
                if (not peers or any(peer_ok(x, peer, pod.namespace) for x in peers)) and \
                        port_ok(rule.get("ports") or [], target):
                    return True
        return False

    return side(src, dst, "Egress", "to") and side(dst, src, "Ingress", "from")


label_sel = st.one_of(
    st.just({}),
    st.builds(lambda v: {"matchLabels": {"pod": v}}, st.sampled_from("abc")),
    st.builds(lambda op, vs: {"matchExpressions": [{"key": "pod", "operator": op,
                                                    "values": vs}]},
              st.sampled_from(["In", "NotIn"]), st.lists(st.sampled_from("abc"), min_size=1)))
ns_sel = st.one_of(st.just({}), st.builds(lambda v: {"matchLabels": {"ns": v}},
                                          st.sampled_from("xyz")),
                   st.just({"matchLabels": {"env": "prod"}}))
peer_st = st.one_of(
    st.builds(lambda s: {"podSelector": s}, label_sel),
    st.builds(lambda s: {"namespaceSelector": s}, ns_sel),
    st.builds(lambda a, b: {"namespaceSelector": a, "podSelector": b}, ns_sel, label_sel),
    st.sampled_from([{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}},
                     {"ipBlock": {"cidr": "10.0.1.2/32"}},
                     {"ipBlock": {"cidr": "192.168.1.0/24", "except": ["192.168.1.128/25"]}},
                     {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}},
                     {"ipBlock": {"cidr": "fd00::/16", "except": ["fd00:1::/32"]}},
                     {"ipBlock": {"cidr": "fd00:1::2/128"}},
                     {"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}}]))
port_st = st.sampled_from([{"port": 80}, {"port": 81, "protocol": "TCP"},
                           {"port": 53, "protocol": "UDP"}, {"protocol": "UDP"},
                           {"port": 79, "endPort": 81}, {"port": "web"},
                           {"port": "dns", "protocol": "UDP"}, {"protocol": "SCTP"}])
rule_st = st.fixed_dictionaries({}, optional={"peers": st.lists(peer_st, max_size=2),
                                              "ports": st.lists(port_st, max_size=2)})


@st.composite
def policy_st(draw: Any) -> dict[str, Any]:
    types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    spec: dict[str, Any] = {"podSelector": draw(label_sel), "policyTypes": types}
    for t, f in (("Ingress", "from"), ("Egress", "to")):
        if t in types:
            rules = []
            for r in draw(st.lists(rule_st, max_size=2)):
                rule: dict[str, Any] = {}
                if "peers" in r:
                    rule[f] = r["peers"]
                if "ports" in r:
                    rule["ports"] = r["ports"]
                rules.append(rule)
            spec[t.lower()] = rules
    return {"metadata": {"name": f"p{draw(st.integers(0, 10**6))}",
                         "namespace": draw(st.sampled_from("xyz"))}, "spec": spec}


@settings(max_examples=60, deadline=None)
@given(st.lists(policy_st(), min_size=1, max_size=3))
def test_emulated_datapath_agrees_with_the_spec(policies: list[dict[str, Any]]) -> None:
    local = [a for p in PODS for a in p.addresses]
    state = compute(policies=cast(list[NetworkPolicyObject], policies),
                    namespaces=NAMESPACES, pods=PODS, local=local)
    addrs = local + EXTERNAL
    for src in addrs:
        for dst in addrs:
            if src == dst or (src in EXTERNAL and dst in EXTERNAL) \
                    or src.version != dst.version:
                continue
            for proto, port in PROBES:
                want = semantic(policies, src, dst, proto, port)
                got = emulate(state.maps, src, dst, proto, port, state.endpoints)
                assert got == want, (src, dst, proto, port)


def test_manager_writes_only_changes_and_attributes_denies_per_policy() -> None:
    maps = MemoryMaps()
    m = PolicyManager(maps)
    for n in NAMESPACES:
        m.set_namespace(n)
    for p in PODS:
        m.set_pod(p)
    m.set_local({a for p in PODS for a in p.addresses})
    deny = {"metadata": {"name": "deny", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]}}
    ops = m.set_policy(cast(NetworkPolicyObject, deny))
    assert len(ops) == 2  # x/a's two endpoint entries (one per family), no allow entries
    ep_id = m.state.endpoints[PODS[0].address]
    maps.update(policy_denied.NAME, (ep_id, policy_rules.DIR_INGRESS), (7,))
    assert m.denied() == {"x/deny": 7}
    assert len(m.set_pod(PODS[5])) == 0  # nothing changed, nothing written
    assert len(m.delete_policy("x/deny")) == 2


def test_egress_named_port_to_anyone_opens_only_pods_serving_it() -> None:
    """A named port is a port of the destination pod: "any peer" on a named port must
    not open that number towards addresses that are no pod (found by hypothesis)."""
    pol = {"metadata": {"name": "p", "namespace": "x"},
           "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "web"}, {"port": 443}]}]}}
    state = compute(policies=[cast(NetworkPolicyObject, pol)], namespaces=NAMESPACES,
                    pods=PODS, local=[a for p in PODS for a in p.addresses])
    src, pod, outside = PODS[0].address, PODS[4].address, EXTERNAL[0]
    assert emulate(state.maps, src, pod, 6, 80, state.endpoints)  # y/b serves web on 80
    assert not emulate(state.maps, src, outside, 6, 80, state.endpoints)
    assert not emulate(state.maps, src, pod, 6, 81, state.endpoints)
    assert emulate(state.maps, src, outside, 6, 443, state.endpoints)  # numeric: anyone


def test_a_dual_stack_pod_is_one_endpoint_with_one_identity_per_family() -> None:
    pol = {"metadata": {"name": "p", "namespace": "x"},
           "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.1.0/24"}}]},
                                {"from": [{"ipBlock": {"cidr": "fd00:2::/32"}}]}]}}
    xa, yb, zc = PODS[0], PODS[4], PODS[8]
    state = compute(policies=[cast(NetworkPolicyObject, pol)], namespaces=NAMESPACES,
                    pods=PODS, local=[a for p in PODS for a in p.addresses])
    v4, v6 = xa.addresses
    assert state.endpoints[v4] == state.endpoints[v6]  # one endpoint: rules and counters
    ipc4 = {k[1]: v[0] for k, v in state.maps[ipcache.NAME].items() if k[0] == 32}
    ipc6 = {k[1]: v[0] for k, v in state.maps[ipcache.NAME6].items() if k[0] == 128}
    assert ipc4[fields.be32(yb.addresses[0])] != ipc6[fields.be128(yb.addresses[1])]
    # an IPv4 ipBlock admits y/b's IPv4 address, not its IPv6 one, and the reverse
    assert emulate(state.maps, yb.addresses[0], v4, 6, 80, state.endpoints)
    assert not emulate(state.maps, yb.addresses[1], v6, 6, 80, state.endpoints)
    assert emulate(state.maps, zc.addresses[1], v6, 6, 80, state.endpoints)
    assert not emulate(state.maps, zc.addresses[0], v4, 6, 80, state.endpoints)
    # the host: hairpin addresses of both families and link-local sources (its gateway)
    host6 = {ipaddress.IPv6Network((fields.from_be128(k[1]), k[0])): v[0]
             for k, v in state.maps[ipcache.NAME6].items()}
    assert host6[ipaddress.IPv6Network("fe80::/10")] == ipcache.ID_HOST
    assert host6[ipaddress.IPv6Network("fdff:ffff:ffff:ffff::2a01/128")] == ipcache.ID_HOST
    assert host6[ipaddress.IPv6Network("::/0")] == ipcache.ID_WORLD6


def test_pod_addresses_come_from_pod_ips() -> None:
    from datapath.features.policy.models import pod_info

    info = pod_info({"metadata": {"name": "p", "namespace": "x"},
                     "status": {"podIP": "10.0.0.1",
                                "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}})
    assert info is not None and info.addresses == (A("10.0.0.1"), A6("fd00::1"))
    only = pod_info({"metadata": {"name": "p"}, "status": {"podIP": "fd00::2"}})
    assert only is not None and only.addresses == (A6("fd00::2"),)
    assert pod_info({"metadata": {"name": "p"}, "status": {}}) is None


def test_manager_computes_only_when_an_input_changed() -> None:
    """Most pod events change nothing the policy reads (scheduled, bound, Ready, no
    address yet): every agent would otherwise recompute every pod of the cluster for
    each of them. Skipped, the maps still equal those of a manager that computes
    after every event."""
    maps, every_maps = MemoryMaps(), MemoryMaps()
    m, every = PolicyManager(maps), PolicyManager(every_maps)
    deny = cast(NetworkPolicyObject, {
        "metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}})
    relabelled = PodInfo(PODS[1].namespace, PODS[1].name, PODS[1].addresses,
                         {"pod": "b", "tier": "new"}, NAMED)
    events: list[tuple[str, Any, bool]] = [  # (method, argument, changes an input)
        ("set_local", set(), True),  # the first computation always runs
        *[("set_namespace", n, True) for n in NAMESPACES],
        *[("set_pod", p, True) for p in PODS],
        ("set_local", {a for p in PODS[:4] for a in p.addresses}, True),
        ("set_policy", deny, True),
        # replays of what is known, and deletions of what never was
        *[("set_namespace", NamespaceInfo(n.name, dict(n.labels)), False) for n in NAMESPACES],
        *[("set_pod", PodInfo(p.namespace, p.name, p.addresses, dict(p.labels), NAMED),
           False) for p in PODS],
        ("set_policy", cast(NetworkPolicyObject, dict(deny)), False),
        ("delete_pod", "x/never-had-an-address", False),
        ("delete_policy", "x/none", False),
        ("delete_namespace", "none", False),
        ("set_local", {a for p in PODS[:4] for a in p.addresses}, False),
        # real changes
        ("set_pod", relabelled, True),
        ("delete_pod", PODS[2].key, True),
        ("delete_policy", "x/deny", True),
    ]
    for method, arg, changes in events:
        before = m.syncs
        getattr(m, method)(arg)
        getattr(every, method)(arg)
        every.sync()
        assert m.syncs == before + int(changes), (method, arg)
        assert maps.maps == every_maps.maps, (method, arg)
        assert m.state.endpoints == every.state.endpoints


def test_deferred_changes_are_computed_once_by_flush() -> None:
    maps, every_maps = MemoryMaps(), MemoryMaps()
    m, every = PolicyManager(maps), PolicyManager(every_maps)
    m.set_local({a for p in PODS[:2] for a in p.addresses})
    every.set_local({a for p in PODS[:2] for a in p.addresses})
    for n in NAMESPACES:
        m.set_namespace(n, defer=True)
        every.set_namespace(n)
    for p in PODS:
        assert len(m.set_pod(p, defer=True)) == 0
        every.set_pod(p)
    assert m.pending and m.syncs == 1
    m.flush()
    assert not m.pending and m.syncs == 2
    assert maps.maps == every_maps.maps
    assert len(m.flush()) == 0 and m.syncs == 2  # nothing pending: nothing computed
    m.delete_pod(PODS[3].key, defer=True)
    every.delete_pod(PODS[3].key)
    m.set_local({a for p in PODS[:3] for a in p.addresses})  # not deferred: covers it
    every.set_local({a for p in PODS[:3] for a in p.addresses})
    assert not m.pending and maps.maps == every_maps.maps


def test_a_policy_changed_in_place_and_set_again_is_computed() -> None:
    m = PolicyManager(MemoryMaps())
    pol: dict[str, Any] = {"metadata": {"name": "p", "namespace": "x"},
                           "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                                    "policyTypes": ["Ingress"]}}
    m.set_policy(cast(NetworkPolicyObject, pol))
    before = m.syncs
    pol["spec"]["podSelector"]["matchLabels"]["pod"] = "b"
    m.set_policy(cast(NetworkPolicyObject, pol))
    assert m.syncs == before + 1
