"""Node failure: deciding that a node is *confirmed* gone (docs/design.md §2), and
planning where its sticky reservations go. Pure: returns verdicts and a plan.

A node is gone when its Node object is deleted, when it carries the
``node.kubernetes.io/out-of-service`` taint, or when it has been NotReady longer
than the grace *and* its agent's heartbeat has expired. A NotReady node whose
agent still beats is merely slow (partitioned from the API server, kubelet
stuck): moving its addresses would put one address on two live nodes, so it
keeps everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ipam.models import (
    Lease,
    NodeFailurePolicy,
    NodeHealth,
    NodeName,
    OwnerKey,
    PoolName,
    ReservationKey,
    ReservationState,
)
from scheduler.models import TAINT_OUT_OF_SERVICE, NodeInfo


@dataclass(frozen=True, slots=True)
class NodeVerdict:
    node: NodeName
    gone: bool
    #: Why, in words an operator can act on.
    reason: str


def judge_node(name: NodeName, node: NodeInfo | None, health: NodeHealth, *, now: float,
               not_ready_since: float, grace: float, heartbeat_ttl: float) -> NodeVerdict:
    """Is ``name`` confirmed gone? ``node`` is None when its Node object is deleted
    (the caller must only say so from a synced cache). ``not_ready_since`` is when
    the node was first seen NotReady (0 when Ready)."""
    if node is None:
        return NodeVerdict(name, True, f"node {name} was deleted")
    if node.out_of_service:
        return NodeVerdict(name, True, f"node {name} is tainted {TAINT_OUT_OF_SERVICE}")
    if node.ready:
        return NodeVerdict(name, False, f"node {name} is Ready")
    down = now - not_ready_since if not_ready_since > 0 else 0.0
    if down < grace:
        return NodeVerdict(name, False, f"node {name} has been NotReady for {down:.0f}s "
                           f"(grace {grace:.0f}s)")
    beat_age = now - health.heartbeat_at if health.heartbeat_at > 0 else float("inf")
    if beat_age < heartbeat_ttl:
        return NodeVerdict(name, False, f"node {name} is NotReady but its agent heartbeat is "
                           f"fresh ({beat_age:.0f}s ago); keeping its addresses")
    beat = "never beat" if beat_age == float("inf") else f"last beat {beat_age:.0f}s ago"
    return NodeVerdict(name, True, f"node {name} has been NotReady for {down:.0f}s and its "
                       f"agent heartbeat expired ({beat})")


@dataclass(frozen=True, slots=True)
class MoveBlock:
    pool: PoolName
    block: int
    from_node: NodeName
    to_node: NodeName
    owners: tuple[OwnerKey, ...]


@dataclass(frozen=True, slots=True)
class MoveAddress:
    pool: PoolName
    key: ReservationKey
    to_node: NodeName
    expect_epoch: int


@dataclass(frozen=True, slots=True)
class Hold:
    pool: PoolName
    key: ReservationKey
    node: NodeName
    reason: str


@dataclass(slots=True)
class RehomePlan:
    blocks: list[MoveBlock] = field(default_factory=list)
    addresses: list[MoveAddress] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a reservation's address sits: its block index and that block's node."""

    block: int
    block_node: NodeName | None


def plan_rehome(gone: NodeName, reservations: Sequence[Lease], *,
                placement: Mapping[OwnerKey, Placed],
                candidates: Mapping[OwnerKey, Sequence[NodeName]],
                load: Mapping[NodeName, int] | None = None,
                why: str = "") -> RehomePlan:
    """Plan the re-homing of the sticky reservations homed on the gone node.

    Prefers moving a whole block to one healthy node that fits every migrating
    pod of that block (routes stay aggregated); falls back to single /32s.
    ``wait`` reservations stay, and a block holding one never moves whole (that
    would drag the waiting reservation along). ``candidates`` lists, per owner,
    the healthy nodes its pod fits on.
    """
    plan = RehomePlan()
    loads = dict(load or {})
    groups: dict[tuple[PoolName, int], list[Lease]] = {}
    pinned: set[tuple[PoolName, int]] = set()
    singles: list[Lease] = []
    for r in sorted(reservations, key=lambda x: x.owner):
        if r.node != gone or r.address is None or r.key is None:
            continue
        key = r.key
        where = placement.get(r.owner)
        if r.policy is NodeFailurePolicy.WAIT:
            reason = (f"reserved {r.address} is homed on {gone}, which is gone"
                      f"{' (' + why + ')' if why else ''}; waiting (node-failure=wait)")
            plan.holds.append(Hold(r.pool, key, gone, reason))
            if where is not None:
                pinned.add((r.pool, where.block))
            continue
        if where is not None and where.block_node == gone:
            groups.setdefault((r.pool, where.block), []).append(r)
        else:
            singles.append(r)

    for (pool, block), members in sorted(groups.items()):
        common = _common(members, candidates)
        if (pool, block) in pinned or not common:
            singles.extend(members)
            continue
        target = min(common, key=lambda n: (loads.get(n, 0), n))
        loads[target] = loads.get(target, 0) + len(members)
        plan.blocks.append(MoveBlock(pool, block, gone, target,
                                     tuple(m.owner for m in members)))

    for r in singles:
        assert r.key is not None
        options = candidates.get(r.owner) or []
        if not options:
            plan.holds.append(Hold(r.pool, r.key, gone, (
                f"reserved {r.address} is homed on {gone}, which is gone, but no healthy node "
                "fits its pod; waiting for capacity (check nodeSelector, affinity, taints, "
                "requests)")))
            continue
        target = min(options, key=lambda n: (loads.get(n, 0), n))
        loads[target] = loads.get(target, 0) + 1
        plan.addresses.append(MoveAddress(r.pool, r.key, target, r.epoch))
    return plan


def _common(members: Sequence[Lease], candidates: Mapping[OwnerKey, Sequence[NodeName]]
            ) -> list[NodeName]:
    common: set[NodeName] | None = None
    for m in members:
        opts = set(candidates.get(m.owner) or [])
        common = opts if common is None else common & opts
    return sorted(common or set())


def homed_on(records: Sequence[Lease], node: NodeName) -> list[Lease]:
    """Sticky reservations homed on ``node`` (any state)."""
    return [r for r in records if r.key is not None and r.node == node
            and r.state in (ReservationState.BOUND, ReservationState.RESERVED,
                            ReservationState.RETAINED)]
