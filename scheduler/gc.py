"""Garbage collection of addresses: ephemeral leases whose pod is gone, retained
reservations past their time, and ordinals a StatefulSet no longer has. Pure.

The caller must read the IPAM records *before* it lists pods and StatefulSets:
a pod always exists before its address is allocated or claimed, so any record
read first whose owner still exists shows up in the later listing, and the
plan never frees an address whose owner exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ipam.models import Lease, LeaseKind, OwnerKey, PoolName, ReservationKey, ReservationState
from scheduler.models import PodInfo, StatefulSetInfo


class GcOp(StrEnum):
    #: Free an ephemeral lease (its pod is gone).
    RELEASE = "release"
    #: Free a retained reservation whose retain time has passed.
    EXPIRE = "expire"
    #: The ordinal is gone: keep per ``stickyip.io/retain`` or free at once.
    RETAIN = "retain"
    #: The holder pod is gone but the ordinal is not: keep the address, clear the holder.
    UNBIND = "unbind"
    #: A quarantined reservation's holder pod is gone: its addresses may be freed now.
    HOLDER_GONE = "holder_gone"


@dataclass(frozen=True, slots=True)
class GcAction:
    op: GcOp
    pool: PoolName
    owner: OwnerKey
    key: ReservationKey | None
    holder: str
    reason: str


@dataclass(slots=True)
class GcPlan:
    actions: list[GcAction]
    #: Ephemeral owners whose pod is missing, and since when (carry to the next run).
    missing_since: dict[OwnerKey, float]


def plan_gc(records: Sequence[Lease], *, pods: Sequence[PodInfo],
            statefulsets: Sequence[StatefulSetInfo], now: float, grace: float,
            missing_since: Mapping[OwnerKey, float] | None = None) -> GcPlan:
    live = [p for p in pods if not p.terminated]
    uids = {p.uid for p in live}
    refs = {p.ref for p in live}
    all_refs = {p.ref for p in pods}
    sts = {(s.namespace, s.name): s for s in statefulsets}
    previous = dict(missing_since or {})
    missing: dict[OwnerKey, float] = {}
    actions: list[GcAction] = []
    for r in records:
        young = max(r.created_at, r.updated_at) > now - grace
        if r.kind is LeaseKind.EPHEMERAL:
            if not r.holder and not r.pod:
                continue  # nothing names its pod: never guess
            alive = (r.holder in uids) if r.holder else (r.pod in refs)
            if alive:
                continue
            since = previous.get(r.owner, now)
            missing[r.owner] = since
            if now - since >= grace and not young:
                who = f"pod {r.pod or r.holder}"
                actions.append(GcAction(GcOp.RELEASE, r.pool, r.owner, None, r.holder,
                                        f"{who} has been gone for {now - since:.0f}s"))
            continue
        key = r.key
        if key is None:
            continue
        if r.state is ReservationState.QUARANTINED:
            # Released by force (or in conflict) while a pod held it: freed only once
            # that very pod is gone, never by age.
            if r.holder and r.holder not in uids:
                actions.append(GcAction(GcOp.HOLDER_GONE, r.pool, r.owner, key, r.holder,
                                        f"its holder pod {r.pod or r.holder} is gone"))
            continue
        if r.state is ReservationState.RETAINED:
            if 0 <= r.expires_at <= now:
                actions.append(GcAction(GcOp.EXPIRE, r.pool, r.owner, key, "",
                                        "its retain time has passed"))
            continue
        if young:
            continue
        pod_ref = key.pod_ref
        owner_sts = sts.get((key.namespace, key.statefulset))
        if pod_ref in all_refs:
            if r.state is ReservationState.BOUND and r.holder and r.holder not in uids:
                actions.append(GcAction(GcOp.UNBIND, r.pool, r.owner, key, r.holder,
                                        "its holder pod was replaced"))
            continue
        if owner_sts is None:
            actions.append(GcAction(GcOp.RETAIN, r.pool, r.owner, key, "",
                                    f"StatefulSet {key.namespace}/{key.statefulset} is gone"))
        elif key.ordinal >= owner_sts.replicas:
            actions.append(GcAction(GcOp.RETAIN, r.pool, r.owner, key, "",
                                    f"ordinal {key.ordinal} is beyond spec.replicas="
                                    f"{owner_sts.replicas}"))
        elif r.state is ReservationState.BOUND and r.holder:
            actions.append(GcAction(GcOp.UNBIND, r.pool, r.owner, key, r.holder,
                                    "its pod was deleted and is being re-created"))
    return GcPlan(actions=actions, missing_since=missing)
