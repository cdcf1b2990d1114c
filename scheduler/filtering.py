"""Which nodes a pod may run on: readiness, taints and tolerations, nodeSelector,
required node affinity, CPU/memory requests, the pool's node selector and free
addresses. Pure: every check returns a reason a user can act on, or None."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ipam.models import NodeName, PoolName
from scheduler.models import (
    NodeInfo,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodInfo,
    Resources,
    Taint,
    Toleration,
)

_HARD_EFFECTS = ("NoSchedule", "NoExecute")


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.operator == "Exists":
        return not toleration.key or toleration.key == taint.key
    return toleration.key == taint.key and toleration.value == taint.value


def untolerated_taint(tolerations: Sequence[Toleration], node: NodeInfo) -> Taint | None:
    for taint in node.taints:
        if taint.effect in _HARD_EFFECTS and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def matches_selector(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def matches_requirement(req: NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    key, op, values = req.get("key", ""), req.get("operator", ""), req.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        have, bound = _as_int(labels[key]), _as_int(values[0])
        if have is None or bound is None:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def matches_term(term: NodeSelectorTerm, node: NodeInfo) -> bool:
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no object, as in Kubernetes
    if not all(matches_requirement(r, node.labels) for r in exprs):
        return False
    # matchFields supports only metadata.name, as the API validates.
    return all(
        r.get("key") == "metadata.name" and matches_requirement(
            r, {"metadata.name": node.name}) for r in fields)


def matches_affinity(terms: Sequence[NodeSelectorTerm], node: NodeInfo) -> bool:
    """Required node affinity: the terms are ORed; no terms means any node."""
    return not terms or any(matches_term(t, node) for t in terms)


@dataclass(slots=True)
class AddressView:
    """Free addresses of one pool as the scheduler last saw them (a hint for filtering
    and scoring; the atomic claim in the IPAM is what actually decides)."""

    pool: PoolName
    free_in_node_blocks: dict[NodeName, int] = field(default_factory=dict)
    unclaimed_blocks: int = 0
    free_total: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    block_size: int = 0


def combine_views(views: Sequence[AddressView]) -> AddressView:
    """One view for a pod that takes an address from each of several pools (one per
    family, dual-stack): a node must be inside every pool's nodeSelector and every
    pool must have room, so the combined view keeps the smaller figure of each."""
    if len(views) == 1:
        return views[0]
    selector: dict[str, str] = {}
    for v in views:
        for k, val in v.node_selector.items():
            # Two pools asking one label for different values: no node is in both.
            selector[k] = val if selector.get(k, val) == val else "\x00no node matches both"
    nodes = set(views[0].free_in_node_blocks).intersection(
        *(v.free_in_node_blocks for v in views[1:]))
    return AddressView(
        pool=PoolName("+".join(v.pool for v in views)),
        free_in_node_blocks={n: min(v.free_in_node_blocks[n] for v in views) for n in nodes},
        unclaimed_blocks=min(v.unclaimed_blocks for v in views),
        free_total=min(v.free_total for v in views),
        node_selector=selector,
        block_size=min(v.block_size for v in views))


def check_node(pod: PodInfo, node: NodeInfo, *, used: Resources | None,
               pool_selector: Mapping[str, str] | None = None) -> str | None:
    """Why ``pod`` cannot run on ``node`` (None when it can)."""
    if not node.ready:
        return f"node {node.name} is NotReady"
    if node.unschedulable:
        return f"node {node.name} is cordoned (unschedulable)"
    taint = untolerated_taint(pod.tolerations, node)
    if taint is not None:
        shown = f"{taint.key}={taint.value}" if taint.value else taint.key
        return f"node {node.name} has taint {shown}:{taint.effect} that the pod does not tolerate"
    if pod.node_selector and not matches_selector(pod.node_selector, node.labels):
        return f"node {node.name} does not match the pod's nodeSelector"
    if pod.required_terms and not matches_affinity(pod.required_terms, node):
        return f"node {node.name} does not match the pod's required node affinity"
    if pool_selector and not matches_selector(pool_selector, node.labels):
        return f"node {node.name} is outside the pool's nodeSelector"
    if used is not None:
        free_cpu = node.allocatable.cpu_m - used.cpu_m
        free_mem = node.allocatable.memory - used.memory
        if pod.requests.cpu_m > free_cpu:
            return (f"node {node.name} has insufficient cpu (requested {pod.requests.cpu_m}m, "
                    f"free {max(free_cpu, 0)}m)")
        if pod.requests.memory > free_mem:
            return (f"node {node.name} has insufficient memory (requested "
                    f"{pod.requests.memory}, free {max(free_mem, 0)} bytes)")
    return None


def address_shortage(addresses: AddressView | None) -> str | None:
    """Why no node can give a new address from the pool (None when one can)."""
    if addresses is not None and addresses.free_total <= 0:
        return (f"pool {addresses.pool!r} has no free address; widen it, add a pool or "
                "release reservations")
    return None


@dataclass(slots=True)
class FilterResult:
    feasible: list[NodeInfo]
    failed: dict[NodeName, str]
    examined: int


def feasible_target(total: int, percentage: int) -> int:
    """How many feasible nodes are enough before scoring (kube-scheduler's
    ``percentageOfNodesToScore``: adaptive 50% minus 1% per 125 nodes, at least 5%,
    and never fewer than 100 nodes). ``percentage`` 0 means adaptive; 100 means all."""
    if total < 100 or percentage >= 100:
        return total
    pct = percentage or max(5, 50 - total // 125)
    return max(100, total * pct // 100)


def filter_nodes(pod: PodInfo, nodes: Sequence[NodeInfo], *,
                 used: Mapping[NodeName, Resources],
                 addresses: AddressView | None = None,
                 needs_address: bool = False,
                 enough: int | None = None, start: int = 0) -> FilterResult:
    """Check nodes from ``start`` (wrapping around) until ``enough`` are feasible.

    ``needs_address``: the pod will take a new address from ``addresses``' pool, so
    an exhausted pool fails every node.
    """
    failed: dict[NodeName, str] = {}
    n = len(nodes)
    if needs_address:
        shortage = address_shortage(addresses)
        if shortage is not None:
            return FilterResult([], {nd.name: shortage for nd in nodes}, n)
    selector = addresses.node_selector if addresses is not None else None
    limit = n if enough is None else enough
    feasible: list[NodeInfo] = []
    empty = Resources()
    examined = 0
    # Fast path (this loop runs for hundreds of nodes per pod): a pod without
    # selectors or affinity on a ready, untainted node needs only the resource
    # check; everything else, and every refusal's reason, goes through check_node.
    simple_pod = not pod.node_selector and not pod.required_terms and not selector
    req_cpu, req_mem = pod.requests.cpu_m, pod.requests.memory
    used_get = used.get
    order = [*nodes[start % n:], *nodes[:start % n]] if start and n else nodes
    append = feasible.append
    found = 0
    for node in order:
        examined += 1
        if simple_pod and node.ready and not node.unschedulable and not node.taints:
            alloc = node.allocatable
            u = used_get(node.name)
            if (req_cpu <= alloc.cpu_m and req_mem <= alloc.memory) if u is None else (
                    req_cpu <= alloc.cpu_m - u.cpu_m and req_mem <= alloc.memory - u.memory):
                append(node)
                found += 1
                if found >= limit:
                    break
                continue
        reason = check_node(pod, node, used=used_get(node.name, empty), pool_selector=selector)
        if reason is None:
            append(node)
            found += 1
            if found >= limit:
                break
        else:
            failed[node.name] = reason
    return FilterResult(feasible, failed, examined)


def summarize(failed: Mapping[NodeName, str], total: int) -> str:
    """kube-scheduler style: '0/5 nodes are available: 3 NotReady, 2 insufficient cpu'."""
    kinds: dict[str, int] = {}
    for reason in failed.values():
        kinds[_kind(reason)] = kinds.get(_kind(reason), 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    return f"0/{total} nodes are available: {parts or 'no nodes'}"


def _kind(reason: str) -> str:
    for marker, kind in (("NotReady", "NotReady"), ("cordoned", "cordoned"),
                         ("taint", "untolerated taint"),
                         ("pool's nodeSelector", "outside the pool's nodes"),
                         ("nodeSelector", "nodeSelector mismatch"),
                         ("affinity", "node affinity mismatch"), ("cpu", "insufficient cpu"),
                         ("memory", "insufficient memory"), ("free address", "no free address")):
        if marker in reason:
            return kind
    return reason


def bound_usage(pods: Iterable[PodInfo]) -> dict[NodeName, Resources]:
    """Requests of every pod bound to a node and not finished, per node."""
    out: dict[NodeName, Resources] = {}
    for p in pods:
        if p.node_name and not p.terminated:
            node = NodeName(p.node_name)
            out[node] = out.get(node, Resources()) + p.requests
    return out
