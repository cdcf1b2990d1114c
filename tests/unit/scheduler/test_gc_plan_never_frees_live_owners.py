from __future__ import annotations

import ipaddress

from ipam.models import Lease, LeaseKind, OwnerKey, PoolName, ReservationState
from scheduler.gc import GcOp, plan_gc
from scheduler.models import StatefulSetInfo
from tests.unit.scheduler.helpers import pod

NOW = 10_000.0
OLD = NOW - 3600


def eph(cid: str, *, holder: str = "", pod_ref: str = "", created: float = OLD) -> Lease:
    return Lease(owner=OwnerKey(f"eph/{cid}/eth0"), pool=PoolName("p"), kind=LeaseKind.EPHEMERAL,
                 address=ipaddress.IPv4Address("10.0.0.5"), holder=holder, pod=pod_ref,
                 created_at=created, updated_at=created)


def sticky(ordinal: int, *, state: ReservationState = ReservationState.BOUND,
           holder: str = "", expires: float = 0.0, updated: float = OLD) -> Lease:
    return Lease(owner=OwnerKey(f"sts/ns/db/{ordinal}"), pool=PoolName("p"),
                 kind=LeaseKind.STICKY, address=ipaddress.IPv4Address(f"10.0.0.{ordinal + 10}"),
                 state=state, holder=holder, expires_at=expires, created_at=OLD,
                 updated_at=updated)


def test_ephemeral_lease_freed_only_after_grace() -> None:
    records = [eph("c1", holder="uid-gone"), eph("c2", holder="uid-web")]
    pods = [pod("web", uid="uid-web")]
    first = plan_gc(records, pods=pods, statefulsets=[], now=NOW, grace=60)
    assert first.actions == []
    assert first.missing_since == {OwnerKey("eph/c1/eth0"): NOW}
    later = plan_gc(records, pods=pods, statefulsets=[], now=NOW + 61, grace=60,
                    missing_since=first.missing_since)
    assert [(a.op, a.owner, a.holder) for a in later.actions] == [
        (GcOp.RELEASE, "eph/c1/eth0", "uid-gone")]


def test_ephemeral_lease_by_pod_name_and_unknown_owner() -> None:
    records = [eph("c1", pod_ref="default/web"), eph("c2")]
    plan = plan_gc(records, pods=[pod("web")], statefulsets=[], now=NOW, grace=0)
    assert plan.actions == []  # c1's pod exists; c2 names no pod, so it is never guessed


def test_pod_that_came_back_clears_missing() -> None:
    records = [eph("c1", holder="uid-web")]
    plan = plan_gc(records, pods=[pod("web", uid="uid-web")], statefulsets=[], now=NOW,
                   grace=60, missing_since={OwnerKey("eph/c1/eth0"): NOW - 120})
    assert plan.actions == [] and plan.missing_since == {}


def test_retained_reservations_expire_only_when_due() -> None:
    records = [sticky(0, state=ReservationState.RETAINED, expires=NOW - 1),
               sticky(1, state=ReservationState.RETAINED, expires=NOW + 100),
               sticky(2, state=ReservationState.RETAINED, expires=-1)]
    plan = plan_gc(records, pods=[], statefulsets=[], now=NOW, grace=60)
    assert [(a.op, a.owner) for a in plan.actions] == [(GcOp.EXPIRE, "sts/ns/db/0")]


def test_scale_down_retains_ordinals_beyond_replicas_once_their_pod_is_gone() -> None:
    records = [sticky(0, holder="u0"), sticky(1, holder="u1"), sticky(2, holder="u2")]
    pods = [pod("db-0", namespace="ns", uid="u0", sts="db"),
            pod("db-2", namespace="ns", uid="u2", sts="db")]  # db-2 still terminating
    sts = [StatefulSetInfo(namespace="ns", name="db", replicas=1)]
    plan = plan_gc(records, pods=pods, statefulsets=sts, now=NOW, grace=60)
    assert [(a.op, a.owner) for a in plan.actions] == [(GcOp.RETAIN, "sts/ns/db/1")]


def test_deleted_statefulset_and_replaced_holder() -> None:
    records = [sticky(0, holder="old-uid"), sticky(1, holder="u1")]
    pods = [pod("db-0", namespace="ns", uid="new-uid", sts="db")]
    plan = plan_gc(records, pods=pods, statefulsets=[], now=NOW, grace=60)
    ops = {(a.op, a.owner) for a in plan.actions}
    assert ops == {(GcOp.UNBIND, "sts/ns/db/0"), (GcOp.RETAIN, "sts/ns/db/1")}


def test_young_reservations_are_left_alone() -> None:
    records = [sticky(5, updated=NOW - 1)]
    plan = plan_gc(records, pods=[], statefulsets=[], now=NOW, grace=60)
    assert plan.actions == []


def test_quarantined_reservation_is_freed_only_once_its_holder_is_gone() -> None:
    q = ReservationState.QUARANTINED
    records = [sticky(0, state=q, holder="u0"), sticky(1, state=q, holder="u1-gone"),
               sticky(2, state=q, holder="u2-gone", updated=NOW - 1)]
    # db-0's holder runs; the StatefulSet is gone, yet nothing is retained or released
    pods = [pod("db-0", namespace="ns", uid="u0", sts="db")]
    plan = plan_gc(records, pods=pods, statefulsets=[], now=NOW, grace=60)
    assert [(a.op, a.owner, a.holder) for a in plan.actions] == [
        (GcOp.HOLDER_GONE, "sts/ns/db/1", "u1-gone"),
        (GcOp.HOLDER_GONE, "sts/ns/db/2", "u2-gone")]  # age does not matter, the pod does
