"""Service + EndpointSlice -> ServicePort translation, Maglev, and per-service diffs."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from datapath.features.services import ServiceManager, maglev_table, translate
from datapath.features.services.models import Backend, Frontend
from datapath.maps import fields, lb_backends, lb_services
from datapath.maps.state import MemoryMaps

NODE_IP = ipaddress.IPv4Address("192.0.2.1")


def svc(name: str = "web", ns: str = "x", **spec: Any) -> Any:
    base = {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "type": "ClusterIP",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}]}
    base.update(spec)
    return {"metadata": {"name": name, "namespace": ns}, "spec": base}


def ep(addr: str, *, ready: bool | None = True, serving: bool | None = None,
       terminating: bool | None = None, node: str = "n1") -> dict[str, Any]:
    cond: dict[str, Any] = {}
    if ready is not None:
        cond["ready"] = ready
    if serving is not None:
        cond["serving"] = serving
    if terminating is not None:
        cond["terminating"] = terminating
    return {"addresses": [addr], "conditions": cond, "nodeName": node}


def eps(endpoints: list[dict[str, Any]], *, svc_name: str = "web", name: str = "web-1",
        ports: list[dict[str, Any]] | None = None) -> Any:
    return {"metadata": {"name": name, "namespace": "x",
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": ports if ports is not None else [
                {"name": "http", "port": 8080, "protocol": "TCP"}]}


def one(service: Any, slices: list[Any], node: str = "n1") -> Any:
    out = translate(service, slices, node_name=node, node_addresses=[NODE_IP])
    assert len(out) == 1
    return out[0]


def test_named_target_port_resolves_through_the_slice_port_of_the_same_name() -> None:
    sp = one(svc(), [eps([ep("10.0.0.1"), ep("10.0.0.2")])])
    assert sp.frontends == (Frontend(ipaddress.IPv4Address("10.96.0.10"), 80),)
    assert sp.backends == (Backend(ipaddress.IPv4Address("10.0.0.1"), 8080),
                           Backend(ipaddress.IPv4Address("10.0.0.2"), 8080))


def test_only_ready_endpoints_and_terminating_only_when_all_terminate() -> None:
    sp = one(svc(), [eps([ep("10.0.0.1"), ep("10.0.0.2", ready=False, serving=True,
                                               terminating=True)])])
    assert [str(b.address) for b in sp.backends] == ["10.0.0.1"]
    sp = one(svc(), [eps([ep("10.0.0.1", ready=False, serving=False, terminating=True),
                          ep("10.0.0.2", ready=False, serving=True, terminating=True),
                          ep("10.0.0.3", ready=False)])])
    assert [str(b.address) for b in sp.backends] == ["10.0.0.2"]


def test_readiness_fallback_spans_all_slices_of_the_service() -> None:
    sp = one(svc(), [eps([ep("10.0.0.1")], name="a"),
                     eps([ep("10.0.0.2", ready=False, serving=True, terminating=True)],
                         name="b")])
    assert [str(b.address) for b in sp.backends] == ["10.0.0.1"]


def test_node_port_adds_a_frontend_per_node_address() -> None:
    s = svc(type="NodePort")
    s["spec"]["ports"][0]["nodePort"] = 30080
    sp = one(s, [eps([ep("10.0.0.1")])])
    assert Frontend(NODE_IP, 30080) in sp.frontends and len(sp.frontends) == 2


def test_internal_traffic_policy_local_keeps_only_this_nodes_endpoints() -> None:
    s = svc(internalTrafficPolicy="Local")
    sl = [eps([ep("10.0.0.1", node="n1"), ep("10.0.0.2", node="n2")])]
    assert [str(b.address) for b in one(s, sl, node="n2").backends] == ["10.0.0.2"]
    assert one(s, sl, node="n3").backends == ()


def test_session_affinity_timeout_default_and_explicit() -> None:
    assert one(svc(sessionAffinity="ClientIP"), []).affinity_timeout_s == 10800
    s = svc(sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 5}})
    assert one(s, []).affinity_timeout_s == 5
    assert one(svc(), []).affinity_timeout_s == 0


def test_protocols_are_kept_apart_and_headless_is_skipped() -> None:
    s = svc(ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    sl = [eps([ep("10.0.0.1")], ports=[{"name": "dns", "port": 5353, "protocol": "UDP"}])]
    out = translate(s, sl, node_name="n1", node_addresses=[])
    assert [(p.protocol, len(p.backends)) for p in out] == [("UDP", 1), ("TCP", 0)]
    assert translate(svc(clusterIP="None", clusterIPs=["None"]), sl, node_name="n1",
                     node_addresses=[]) == []


def test_maglev_table_is_balanced_and_moves_few_slots_when_a_backend_goes() -> None:
    names = [f"10.0.0.{i}:80" for i in range(1, 8)]
    t = maglev_table(names, 251)
    counts = Counter(t)
    assert len(t) == 251 and set(counts) == set(range(7))
    assert max(counts.values()) - min(counts.values()) <= 2
    t2 = maglev_table(names[:3] + names[4:], 251)
    moved = sum(1 for a, b in zip(t, t2, strict=True)
                if names[a] != names[3] and names[a] != (names[:3] + names[4:])[b])
    assert moved < 251 * 0.1


def test_manager_writes_only_the_entries_of_the_changed_service() -> None:
    maps = MemoryMaps()
    m = ServiceManager(maps, node_name="n1", node_addresses=[NODE_IP])
    for i in range(50):
        s = svc(name=f"s{i}", clusterIP=f"10.96.1.{i}", clusterIPs=[f"10.96.1.{i}"])
        m.set_service(s)
        m.set_slice(eps([ep(f"10.1.{i}.1"), ep(f"10.1.{i}.2")], svc_name=f"s{i}",
                        name=f"s{i}-a"))
    assert len(maps.maps[lb_services.NAME]) == 50 and len(maps.maps[lb_backends.NAME]) == 100
    before = dict(maps.maps[lb_backends.NAME])
    maps.writes = 0
    r = m.set_slice(eps([ep("10.1.7.1")], svc_name="s7", name="s7-a"))
    # the service count, one slot and one backend: nothing else is rewritten
    assert r.ops == maps.writes == 3
    gone = set(before) - set(maps.maps[lb_backends.NAME])
    assert len(gone) == 1 and fields.from_be32(before[gone.pop()][0]) == ipaddress.IPv4Address(
        "10.1.7.2")
    key = (fields.be32("10.96.1.7"), fields.be16(80), 6, 0)
    assert maps.maps[lb_services.NAME][key][1] == 1


def test_service_without_endpoints_is_kept_with_zero_backends_then_deleted() -> None:
    maps = MemoryMaps()
    m = ServiceManager(maps, node_name="n1", node_addresses=[])
    m.set_service(svc())
    key = (fields.be32("10.96.0.10"), fields.be16(80), 6, 0)
    assert maps.maps[lb_services.NAME][key][1] == 0  # present with count 0: the program rejects
    m.set_slice(eps([ep("10.0.0.1")]))
    assert maps.maps[lb_services.NAME][key][1] == 1
    m.delete_service(next(iter(m.services)))
    assert all(not entries for entries in maps.maps.values())
    assert len(m.svc_ids) == 0 and len(m.backend_ids) == 0


def test_reconcile_removes_leftovers_of_a_previous_agent() -> None:
    maps = MemoryMaps()
    maps.update(lb_services.NAME, (1, 2, 6, 0), (99, 1, 0, 0, 0))
    m = ServiceManager(maps, node_name="n1", node_addresses=[])
    m.set_service(svc())
    m.reconcile()
    assert (1, 2, 6, 0) not in maps.maps[lb_services.NAME] and len(maps.maps[lb_services.NAME]) == 1


def test_sctp_is_served_only_without_port_remapping() -> None:
    """The datapath cannot recompute SCTP's CRC32c after a port rewrite."""
    ports = [{"name": "s", "port": 9000, "protocol": "SCTP", "nodePort": 30900}]
    same = one(svc(type="NodePort", ports=ports), [eps([ep("10.0.0.1")], ports=[
        {"name": "s", "port": 9000, "protocol": "SCTP"}])])
    # the ClusterIP frontend keeps its port; the NodePort would rewrite it
    assert same.frontends == (Frontend(ipaddress.IPv4Address("10.96.0.10"), 9000),)
    remapped = translate(svc(ports=ports), [eps([ep("10.0.0.1")], ports=[
        {"name": "s", "port": 9001, "protocol": "SCTP"}])], node_name="n1",
                         node_addresses=[NODE_IP])
    assert remapped == []


# --------------------------------------------------------------- IPv6 and dual-stack

NODE_IP6 = ipaddress.IPv6Address("2001:db8::1")
V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address


def eps6(endpoints: list[dict[str, Any]], name: str = "web-6") -> Any:
    out = eps(endpoints, name=name)
    out["addressType"] = "IPv6"
    return out


def dual(**spec: Any) -> Any:
    return svc(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10", "fd00:96::10"],
               ipFamilies=["IPv4", "IPv6"], **spec)


def by_family(out: list[Any]) -> dict[int, Any]:
    assert len({sp.family for sp in out}) == len(out)
    return {sp.family: sp for sp in out}


def test_a_dual_stack_service_has_one_port_per_family_with_backends_of_that_family() -> None:
    slices = [eps([ep("10.0.0.1")]), eps6([ep("fd00::1"), ep("fd00::2")])]
    for policy in ("PreferDualStack", "RequireDualStack"):
        out = by_family(translate(dual(ipFamilyPolicy=policy, type="NodePort", ports=[
            {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]), slices,
            node_name="n1", node_addresses=[NODE_IP, NODE_IP6]))
        assert set(out[4].frontends) == {Frontend(V4("10.96.0.10"), 80),
                                         Frontend(NODE_IP, 30080)}
        assert out[4].backends == (Backend(V4("10.0.0.1"), 8080),)
        assert set(out[6].frontends) == {Frontend(V6("fd00:96::10"), 80),
                                         Frontend(NODE_IP6, 30080)}
        assert out[6].backends == (Backend(V6("fd00::1"), 8080), Backend(V6("fd00::2"), 8080))
        assert out[4].key != out[6].key


def test_single_stack_serves_only_its_family_even_beside_other_slices() -> None:
    slices = [eps([ep("10.0.0.1")]), eps6([ep("fd00::1")])]
    v6 = translate(svc(clusterIP="fd00:96::10", clusterIPs=["fd00:96::10"],
                       ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack", type="NodePort",
                       ports=[{"name": "http", "port": 80, "nodePort": 30080}]),
                   slices, node_name="n1", node_addresses=[NODE_IP, NODE_IP6])
    assert [(sp.family, set(sp.frontends), sp.backends) for sp in v6] == [
        (6, {Frontend(V6("fd00:96::10"), 80), Frontend(NODE_IP6, 30080)},
         (Backend(V6("fd00::1"), 8080),))]
    # SingleStack keeps the first family even when more cluster IPs were written
    first = translate(dual(ipFamilyPolicy="SingleStack"), slices, node_name="n1",
                      node_addresses=[])
    assert [sp.family for sp in first] == [4]
    # without ipFamilies (an older object), the cluster IPs tell the families
    implied = translate(svc(clusterIP="fd00:96::10", clusterIPs=["fd00:96::10"]), slices,
                        node_name="n1", node_addresses=[])
    assert [sp.family for sp in implied] == [6]


def test_ipv6_service_entries_go_to_the_ipv6_maps() -> None:
    maps = MemoryMaps()
    m = ServiceManager(maps, node_name="n1", node_addresses=[])
    m.set_service(dual(ipFamilyPolicy="PreferDualStack"))
    m.set_slice(eps([ep("10.0.0.1")]))
    m.set_slice(eps6([ep("fd00::1")]))
    key6 = (fields.be128("fd00:96::10"), fields.be16(80), 6, 0)
    assert maps.maps[lb_services.NAME6][key6][1] == 1
    (_bid6, value6), = maps.maps[lb_backends.NAME6].items()
    assert fields.from_be128(value6[0]) == V6("fd00::1") and value6[1] == fields.be16(8080)
    key4 = (fields.be32("10.96.0.10"), fields.be16(80), 6, 0)
    assert maps.maps[lb_services.NAME][key4][1] == 1
    assert maps.maps[lb_services.NAME][key4][0] != maps.maps[lb_services.NAME6][key6][0]
    assert fields.from_be32(maps.maps[lb_backends.NAME][next(iter(
        maps.maps[lb_backends.NAME]))][0]) == V4("10.0.0.1")
    m.delete_service(next(iter(m.services)))
    assert all(not entries for entries in maps.maps.values())
