from __future__ import annotations

import ipaddress

from ipam.models import (
    Lease,
    LeaseKind,
    NodeFailurePolicy,
    NodeHealth,
    NodeName,
    OwnerKey,
    PoolName,
    ReservationState,
)
from scheduler.failover import Placed, judge_node, plan_rehome
from tests.unit.scheduler.helpers import node

NOW = 10_000.0
N = NodeName("n1")


def judge(n: object, *, beat: float = 0.0, since: float = NOW - 600) -> tuple[bool, str]:
    v = judge_node(N, n, NodeHealth(node=N, heartbeat_at=beat),  # type: ignore[arg-type]
                   now=NOW, not_ready_since=since, grace=60, heartbeat_ttl=30)
    return v.gone, v.reason


def test_deleted_and_out_of_service_nodes_are_gone() -> None:
    assert judge(None) == (True, "node n1 was deleted")
    oos = node("n1", taints=[{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
                              "effect": "NoExecute"}])
    gone, reason = judge(oos, beat=NOW)
    assert gone and "out-of-service" in reason


def test_ready_node_is_not_gone_even_without_heartbeat() -> None:
    assert not judge(node("n1"), beat=0)[0]


def test_not_ready_within_grace_is_not_gone() -> None:
    gone, reason = judge(node("n1", ready=False), since=NOW - 10)
    assert not gone and "grace" in reason


def test_not_ready_but_alive_keeps_everything() -> None:
    gone, reason = judge(node("n1", ready=False), beat=NOW - 5)
    assert not gone and "heartbeat is fresh" in reason


def test_not_ready_beyond_grace_with_expired_heartbeat_is_gone() -> None:
    assert judge(node("n1", ready=False), beat=NOW - 300) [0]
    gone, reason = judge(node("n1", ready=False), beat=0)
    assert gone and "never beat" in reason


def res(ordinal: int, *, policy: str = "migrate", node_name: str = "n1", epoch: int = 3,
        address: str | None = None) -> Lease:
    return Lease(owner=OwnerKey(f"sts/ns/db/{ordinal}"), pool=PoolName("p"),
                 kind=LeaseKind.STICKY,
                 address=ipaddress.IPv4Address(address or f"10.0.0.{ordinal + 1}"),
                 node=NodeName(node_name), epoch=epoch, state=ReservationState.BOUND,
                 policy=NodeFailurePolicy(policy))


def owner(i: int) -> OwnerKey:
    return OwnerKey(f"sts/ns/db/{i}")


def test_whole_block_moves_to_one_node_that_fits_every_pod() -> None:
    rs = [res(0), res(1), res(2)]
    placement = {r.owner: Placed(0, N) for r in rs}
    cands = {owner(0): [NodeName("a"), NodeName("b")], owner(1): [NodeName("b")],
             owner(2): [NodeName("a"), NodeName("b"), NodeName("c")]}
    plan = plan_rehome(N, rs, placement=placement, candidates=cands)
    assert len(plan.blocks) == 1 and not plan.addresses and not plan.holds
    mv = plan.blocks[0]
    assert (mv.block, mv.from_node, mv.to_node) == (0, "n1", "b")
    assert set(mv.owners) == {owner(0), owner(1), owner(2)}


def test_no_common_node_falls_back_to_single_addresses_spread_by_load() -> None:
    rs = [res(0), res(1)]
    placement = {r.owner: Placed(0, N) for r in rs}
    cands = {owner(0): [NodeName("a")], owner(1): [NodeName("b")]}
    plan = plan_rehome(N, rs, placement=placement, candidates=cands)
    assert not plan.blocks
    assert {(a.key.ordinal, a.to_node, a.expect_epoch) for a in plan.addresses} == {
        (0, "a", 3), (1, "b", 3)}


def test_wait_reservations_hold_and_pin_their_block() -> None:
    rs = [res(0), res(1, policy="wait")]
    placement = {r.owner: Placed(0, N) for r in rs}
    cands = {owner(0): [NodeName("a")], owner(1): [NodeName("a")]}
    plan = plan_rehome(N, rs, placement=placement, candidates=cands, why="node n1 was deleted")
    assert not plan.blocks
    assert [(a.key.ordinal, a.to_node) for a in plan.addresses] == [(0, "a")]
    assert len(plan.holds) == 1
    assert "node-failure=wait" in plan.holds[0].reason
    assert "10.0.0.2" in plan.holds[0].reason


def test_migrated_address_and_no_fitting_node() -> None:
    rs = [res(0), res(1)]
    placement = {owner(0): Placed(5, NodeName("other")), owner(1): Placed(0, N)}
    plan = plan_rehome(N, rs, placement=placement,
                       candidates={owner(0): [NodeName("x")], owner(1): []})
    assert [(a.key.ordinal, a.to_node) for a in plan.addresses] == [(0, "x")]
    assert [h.key.ordinal for h in plan.holds] == [1]
    assert "no healthy node fits" in plan.holds[0].reason


def test_reservations_homed_elsewhere_are_ignored() -> None:
    plan = plan_rehome(N, [res(0, node_name="n2")], placement={},
                       candidates={owner(0): [NodeName("a")]})
    assert not plan.blocks and not plan.addresses and not plan.holds
