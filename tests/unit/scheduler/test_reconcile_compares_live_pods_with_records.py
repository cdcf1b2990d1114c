"""Running pods against IPAM records: every verdict, and which pods can be restored."""

from __future__ import annotations

import ipaddress
from typing import Any

from ipam.models import Lease, LeaseAddress, LeaseKind, OwnerKey, PoolName, ReservationState
from ipam.ranges import IPAddress
from scheduler.reconcile import LivePod, Verdict, compare, live_pod, restorable

A, B, C, D = (ipaddress.ip_address(f"10.0.0.{i}") for i in (1, 2, 3, 4))
A6 = ipaddress.ip_address("fd00::1")


def rec(owner: str, *addrs: IPAddress, kind: LeaseKind = LeaseKind.STICKY, holder: str = "",
        pod: str = "", state: ReservationState = ReservationState.BOUND) -> Lease:
    return Lease(owner=OwnerKey(owner), pool=PoolName("p"), kind=kind,
                 address=addrs[0] if addrs else None,
                 addresses=tuple(LeaseAddress(pool=PoolName("p"), address=a, block=0)
                                 for a in addrs),
                 holder=holder, pod=pod, state=state)


def sticky(name: str, *addrs: IPAddress, uid: str = "") -> LivePod:
    ordinal = name.rsplit("-", 1)[1]
    return LivePod(ref=f"ns/{name}", uid=uid or f"u-{name}", node="n1",
                   owner=OwnerKey(f"sts/ns/db/{ordinal}"), addresses=addrs)


def plain(name: str, *addrs: IPAddress) -> LivePod:
    return LivePod(ref=f"ns/{name}", uid=f"u-{name}", node="n1", owner=None, addresses=addrs)


def test_every_verdict() -> None:
    ok = sticky("db-0", A)
    lost = sticky("db-1", B)
    moved = sticky("db-2", C)
    web = plain("web", D)
    outside = plain("other", ipaddress.ip_address("192.168.0.9"))
    holders: dict[IPAddress, Lease | None] = {
        A: rec("sts/ns/db/0", A), B: None, C: rec("sts/ns/db/9", C, holder="u-x"), D: None}
    own: dict[OwnerKey, Lease | None] = {OwnerKey("sts/ns/db/1"): None}
    found = compare([ok, lost, moved, web, outside], holders, own)
    assert [(f.verdict, f.pod.ref, f.address) for f in found] == [
        (Verdict.MISSING, "ns/db-1", B),
        (Verdict.CONFLICT, "ns/db-2", C),
        (Verdict.UNKNOWN, "ns/web", D)]
    assert "gives it to sts/ns/db/9 (sticky, bound, pod UID u-x)" in found[1].message
    assert restorable(found) == {OwnerKey("sts/ns/db/1"): lost}


def test_mismatch_duplicate_and_ephemeral_ownership() -> None:
    stale = sticky("db-1", B)  # its reservation holds C now
    twin_a, twin_b = plain("a", D), plain("b", D)
    mine = plain("eph", A)
    holders: dict[IPAddress, Lease | None] = {
        B: None, D: rec("eph/c1/eth0", D, kind=LeaseKind.EPHEMERAL, holder="u-a"),
        A: rec("eph/c2/eth0", A, kind=LeaseKind.EPHEMERAL, pod="ns/eph")}
    own: dict[OwnerKey, Lease | None] = {OwnerKey("sts/ns/db/1"): rec("sts/ns/db/1", C)}
    found = compare([stale, twin_a, twin_b, mine], holders, own)
    assert [(f.verdict, f.pod.ref) for f in found] == [
        (Verdict.MISMATCH, "ns/db-1"),
        (Verdict.DUPLICATE, "ns/a"),
        (Verdict.DUPLICATE, "ns/b"),
        (Verdict.CONFLICT, "ns/b")]  # a holds the lease by UID; b does not
    assert "holds 10.0.0.3" in found[0].message
    assert restorable(found) == {}


def test_a_dual_stack_pod_is_restored_only_when_both_addresses_are_missing() -> None:
    half = sticky("db-0", A, A6)
    both = sticky("db-1", B, ipaddress.ip_address("fd00::2"))
    holders: dict[IPAddress, Lease | None] = {
        A: None, A6: rec("sts/ns/other/0", A6, holder="u-o"),
        B: None, ipaddress.ip_address("fd00::2"): None}
    own: dict[OwnerKey, Lease | None] = {OwnerKey("sts/ns/db/0"): None,
                                         OwnerKey("sts/ns/db/1"): None}
    found = compare([half, both], holders, own)
    assert restorable(found) == {OwnerKey("sts/ns/db/1"): both}


def pod_obj(name: str, **kw: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"u-{name}",
                            "labels": kw.get("labels", {}),
                            "annotations": kw.get("annotations", {})}
    if kw.get("sts"):
        meta["ownerReferences"] = [{"kind": "StatefulSet", "name": kw["sts"],
                                    "controller": True, "apiVersion": "apps/v1", "uid": "s"}]
    return {"metadata": meta, "spec": {"nodeName": kw.get("node", "n1")},
            "status": {"phase": kw.get("phase", "Running"), "podIPs": kw.get("ips", [])}}


def test_live_pods_from_the_api() -> None:
    fixed = {"stickyip.io/fixed-ip": "true"}
    s = live_pod(pod_obj("db-2", sts="db", labels=fixed, annotations={
        "stickyip.io/ip": "10.0.0.3,fd00::3", "stickyip.io/epoch": "4"},
        ips=[{"ip": "10.9.9.9"}]))
    assert s is not None and s.owner == "sts/ns/db/2" and s.epoch == 4
    assert s.addresses == (C, ipaddress.ip_address("fd00::3"))  # the annotation wins
    e = live_pod(pod_obj("web", ips=[{"ip": "10.0.0.4"}]))
    assert e is not None and e.owner is None and e.addresses == (D,)
    assert live_pod(pod_obj("done", ips=[{"ip": "10.0.0.4"}], phase="Succeeded")) is None
    assert live_pod(pod_obj("pending", ips=[{"ip": "10.0.0.4"}], node="")) is None
    assert live_pod(pod_obj("noip")) is None
