"""How good each feasible node is for a pod, 0 to 10 (the extender's scale).

A pod with a reservation has one acceptable node, its home. A first placement
prefers nodes that already hold a block with free addresses (no new block, routes
stay aggregated), then nodes that can claim a fresh block, and spreads the
replicas of one StatefulSet; least-requested resources break the rest. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ipam.models import NodeName
from scheduler.filtering import AddressView
from scheduler.models import NodeInfo, Resources

MAX_SCORE = 10


@dataclass(frozen=True, slots=True)
class ScoreInputs:
    """What the scorer knows beyond the nodes themselves."""

    home: NodeName | None = None
    addresses: AddressView | None = None
    #: How many replicas of the pod's StatefulSet each node already runs.
    replicas_on: Mapping[NodeName, int] | None = None
    used: Mapping[NodeName, Resources] | None = None
    #: Whether the pod takes an address from a block (StatefulSet first placement).
    sticky: bool = False


def address_score(node: NodeName, addresses: AddressView | None) -> float:
    """1.0: free address in a block the node holds; 0.5: a fresh block can be claimed;
    0.0: only a borrowed /32 from another node's block remains."""
    if addresses is None:
        return 0.5
    if addresses.free_in_node_blocks.get(node, 0) > 0:
        return 1.0
    return 0.5 if addresses.unclaimed_blocks > 0 else 0.0


def spread_score(node: NodeName, replicas_on: Mapping[NodeName, int] | None) -> float:
    if not replicas_on:
        return 1.0
    return 1.0 / (1 + replicas_on.get(node, 0))


def balance_score(node: NodeInfo, used: Mapping[NodeName, Resources] | None) -> float:
    """Least requested: the mean free fraction of CPU and memory."""
    if not used:
        return 1.0
    u = used.get(node.name)
    if u is None:
        return 1.0
    fractions = []
    for total, taken in ((node.allocatable.cpu_m, u.cpu_m),
                         (node.allocatable.memory, u.memory)):
        if total > 0:
            fractions.append(max(0.0, 1.0 - taken / total))
    return sum(fractions) / len(fractions) if fractions else 1.0


def raw_score(node: NodeInfo, inputs: ScoreInputs) -> float:
    """The score in [0, 1]."""
    if inputs.home is not None:
        return 1.0 if node.name == inputs.home else 0.0
    addr = address_score(node.name, inputs.addresses)
    bal = balance_score(node, inputs.used)
    if inputs.sticky:
        raw = 0.3 * addr + 0.5 * spread_score(node.name, inputs.replicas_on) + 0.2 * bal
    else:
        raw = 0.3 * addr + 0.7 * bal
    return raw


def score_node(node: NodeInfo, inputs: ScoreInputs) -> int:
    """The score on the extender's 0..10 scale."""
    return round(raw_score(node, inputs) * MAX_SCORE)


def score_nodes(nodes: Sequence[NodeInfo], inputs: ScoreInputs) -> list[tuple[NodeName, int]]:
    return [(n.name, score_node(n, inputs)) for n in nodes]


def pick(nodes: Sequence[NodeInfo], inputs: ScoreInputs) -> NodeInfo | None:
    """The best node; ties go to the node with the least requested CPU, then by name,
    so the choice is deterministic. (The same scores as ``raw_score``, computed inline:
    this runs for hundreds of nodes per pod.)"""
    if inputs.home is not None:
        return _pick_generic(nodes, inputs)
    best: NodeInfo | None = None
    best_key: tuple[float, int, str] | None = None
    used_get = (inputs.used or {}).get
    addresses = inputs.addresses
    free_get = addresses.free_in_node_blocks.get if addresses is not None else None
    fallback_addr = 0.5 if addresses is None or addresses.unclaimed_blocks > 0 else 0.0
    replicas_get = inputs.replicas_on.get if inputs.replicas_on else None
    has_used = bool(inputs.used)
    sticky = inputs.sticky
    for n in nodes:
        name = n.name
        addr = 1.0 if free_get is not None and free_get(name, 0) > 0 else fallback_addr
        taken = used_get(name)
        if not has_used or taken is None:
            bal = 1.0
        else:
            ac, am = n.allocatable.cpu_m, n.allocatable.memory
            if ac > 0 and am > 0:
                bal = (max(0.0, 1.0 - taken.cpu_m / ac) + max(0.0, 1.0 - taken.memory / am)) / 2
            elif ac > 0:
                bal = max(0.0, 1.0 - taken.cpu_m / ac)
            elif am > 0:
                bal = max(0.0, 1.0 - taken.memory / am)
            else:
                bal = 1.0
        if sticky:
            spread = 1.0 / (1 + replicas_get(name, 0)) if replicas_get is not None else 1.0
            s = 0.3 * addr + 0.5 * spread + 0.2 * bal
        else:
            s = 0.3 * addr + 0.7 * bal
        key = (-s, taken.cpu_m if taken else 0, name)
        if best_key is None or key < best_key:
            best, best_key = n, key
    return best


def _pick_generic(nodes: Sequence[NodeInfo], inputs: ScoreInputs) -> NodeInfo | None:
    best: NodeInfo | None = None
    best_key: tuple[float, int, str] | None = None
    used = inputs.used or {}
    for n in nodes:
        s = raw_score(n, inputs)
        taken = used.get(n.name)
        key = (-s, taken.cpu_m if taken else 0, n.name)
        if best_key is None or key < best_key:
            best, best_key = n, key
    return best
