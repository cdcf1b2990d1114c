"""Decisions of the validating webhooks: is a StatefulSet's ``stickyip.io/*``
request well-formed, allowed as a change, and possible with the addresses the
store has; may a pod claim the address it names.

Pure: :func:`read_statefulset` needs only the request; :func:`judge_statefulset`
and :func:`judge_pod_address` take the facts the caller read from the store.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ipam.contract import (
    ANN_IP,
    ANN_IPS,
    ANN_POOL,
    LABEL_FIXED_IP,
    USER_ANNOTATIONS,
    InvalidAnnotations,
    OwnerKey,
    StickyRequest,
    label_problem,
    opted_in,
    read_request,
    sticky_owner,
)
from ipam.ranges import IPAddress, PoolGeometry
from webhooks.review import AdmissionRequest, Verdict, mapping

MAX_LISTED_PROBLEMS = 3


@dataclass(frozen=True, slots=True)
class StatefulSetPlan:
    """An opted-in StatefulSet whose request is well-formed and an allowed change."""

    namespace: str
    name: str
    replicas: int
    request: StickyRequest
    warnings: tuple[str, ...] = ()

    def owner(self, ordinal: int) -> OwnerKey:
        return sticky_owner(self.namespace, self.name, ordinal)

    def reservation(self, ordinal: int) -> str:
        return f"{self.namespace}/{self.name}/{ordinal}"

    def explicit(self) -> list[IPAddress]:
        """The listed addresses of the ordinals that exist now."""
        return self.request.listed(self.replicas)


@dataclass(frozen=True, slots=True)
class Held:
    """A reservation an ordinal of this StatefulSet already has."""

    #: The pools it draws on.
    pools: tuple[str, ...]
    #: Its address of each family it holds (family -> address).
    addresses: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PoolFact:
    """One requested pool as the store has it."""

    geometry: PoolGeometry
    excluded: frozenset[int]
    free: int


@dataclass(slots=True)
class PoolFacts:
    """What the store says about the requested pools and the StatefulSet's ordinals."""

    #: Every pool the store has (for the message when one is missing).
    known: list[str] = field(default_factory=list)
    #: The requested pools that exist.
    pools: dict[str, PoolFact] = field(default_factory=dict)
    #: ordinal -> reservation, for ordinals < replicas
    held: dict[int, Held] = field(default_factory=dict)
    #: listed address (str) -> owner key holding it, or None when free
    owners: dict[str, str | None] = field(default_factory=dict)


def _replicas(spec: dict[str, Any]) -> int | str:
    r = spec.get("replicas", 1)
    if r is None:
        return 1
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        return f"spec.replicas must be a non-negative integer, got {r!r}"
    return r


def _template(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return (mapping(obj, "spec", "template", "metadata", "labels"),
            mapping(obj, "spec", "template", "metadata", "annotations"))


def _is_prefix(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) <= len(b) and b[: len(a)] == a


def read_statefulset(req: AdmissionRequest) -> StatefulSetPlan | Verdict:
    """Syntax, replicas against the listed addresses, and what may change on UPDATE."""
    obj = req.object
    labels, annotations = _template(obj)
    if (err := label_problem(labels)) is not None:
        return Verdict.refuse(422, f"pod template {err}")
    if not opted_in(labels):
        if any(k in annotations for k in USER_ANNOTATIONS):
            return Verdict.allow(warnings=[
                f'stickyip.io/* annotations do nothing without template label '
                f'{LABEL_FIXED_IP}: "true"'])
        return Verdict.allow()
    meta = mapping(obj, "metadata")
    name = meta.get("name") or req.name
    namespace = req.namespace or meta.get("namespace") or ""
    name = name if isinstance(name, str) else ""
    namespace = namespace if isinstance(namespace, str) else ""
    what = f"StatefulSet {namespace}/{name}" if name else "StatefulSet"
    try:
        request = read_request(annotations)
    except InvalidAnnotations as e:
        return Verdict.refuse(422, f"{what}: {e}")
    replicas = _replicas(mapping(obj, "spec"))
    if isinstance(replicas, str):
        return Verdict.refuse(422, f"{what}: {replicas}")
    if request.addresses is not None and len(request.addresses) < replicas:
        n = len(request.addresses)
        return Verdict.refuse(
            403, f"{what} asks for {replicas} replicas but {ANN_IPS} lists only {n} "
            f"address(es): add {replicas - n} address(es) to {ANN_IPS} or set replicas to {n}")
    if req.operation == "UPDATE" and req.old_object is not None:
        old_labels, old_annotations = _template(req.old_object)
        old = _old_request(old_annotations) if opted_in(old_labels) else None
        if old is not None:
            how = (f"there is no re-IP workflow yet: delete the StatefulSet, release its "
                   f"reservations with 'stickyip ipam release {namespace}/{name}/ORDINAL', "
                   "and re-create it")
            if old.pools != request.pools:
                return Verdict.refuse(
                    409, f"{what}: {ANN_POOL} cannot change from {','.join(old.pools)!r} to "
                    f"{','.join(request.pools)!r} while it exists; {how}")
            before, after = old.addresses, request.addresses
            if before != after and (before is None or after is None
                                    or not (_is_prefix(before, after)
                                            or _is_prefix(after, before))):
                return Verdict.refuse(
                    409, f"{what}: {ANN_IPS} can only grow or shrink at its end (addresses "
                    f"of existing ordinals cannot change); {how}")
    return StatefulSetPlan(namespace=namespace, name=name, replicas=replicas, request=request)


def _old_request(annotations: dict[str, Any]) -> StickyRequest | None:
    """The request before an UPDATE (None when it was malformed: nothing to keep)."""
    try:
        return read_request(annotations)
    except InvalidAnnotations:
        return None


def scale_up(req: AdmissionRequest) -> int | Verdict:
    """A ``statefulsets/scale`` request: the new replica count when it grows (then
    the StatefulSet must be judged with it), else a final verdict."""
    new = _replicas(mapping(req.object, "spec"))
    if isinstance(new, str):
        return Verdict.refuse(422, new)
    if req.operation != "UPDATE" or req.old_object is None:
        return Verdict.allow()
    old = _replicas(mapping(req.old_object, "spec"))
    if isinstance(old, int) and new <= old:
        return Verdict.allow()
    return new


def with_replicas(sts: dict[str, Any], replicas: int) -> dict[str, Any]:
    """``sts`` as it will be after scaling (the Scale carries only the count)."""
    spec = dict(mapping(sts, "spec"))
    spec["replicas"] = replicas
    return {**sts, "spec": spec}


def judge_statefulset(plan: StatefulSetPlan, facts: PoolFacts) -> Verdict:
    """Is the plan possible: the pools exist (one per family), listed addresses are
    usable and free (or ours), and each pool has enough free addresses for the
    ordinals that get one from it at scheduling."""
    what = f"StatefulSet {plan.namespace}/{plan.name}" if plan.name else "StatefulSet"
    requested = plan.request.pools
    for name in requested:
        if name not in facts.pools:
            known = ", ".join(facts.known[:8]) or "none yet"
            return Verdict.refuse(
                422, f"{what}: pool {name!r} does not exist (pools: {known}); create it with "
                f"'stickyip pool apply -f' or set {ANN_POOL} to an existing pool")
    by_family: dict[int, str] = {}
    for name in requested:
        family = facts.pools[name].geometry.family
        if family in by_family:
            return Verdict.refuse(
                422, f"{what}: pools {by_family[family]!r} and {name!r} are both IPv{family}; "
                f"for dual-stack name one IPv4 and one IPv6 pool in {ANN_POOL}")
        by_family[family] = name
    problems: list[tuple[int, str]] = []
    for i, held in sorted(facts.held.items()):
        if i >= plan.replicas:
            continue
        for other in held.pools:
            if other not in requested:
                have = ", ".join(held.addresses.values()) or "no address"
                problems.append((409, f"ordinal {i} still holds a reservation in pool "
                                 f"{other!r} ({have}): release it with 'stickyip ipam release "
                                 f"{plan.reservation(i)}' or keep {ANN_POOL}: {other}"))
    for i, per in enumerate(plan.request.addresses or ()):
        for addr in per:
            problems.extend(_listed_problems(plan, facts, by_family, i, addr))
    if not problems:
        problems.extend(_capacity_problems(plan, facts, by_family))
    if problems:
        more = len(problems) - MAX_LISTED_PROBLEMS
        text = "; ".join(m for _, m in problems[:MAX_LISTED_PROBLEMS])
        if more > 0:
            text += f" (and {more} more)"
        return Verdict.refuse(problems[0][0], f"{what}: {text}", warnings=plan.warnings)
    return Verdict.allow(warnings=plan.warnings)


def _listed_problems(plan: StatefulSetPlan, facts: PoolFacts, by_family: dict[int, str],
                     i: int, addr: IPAddress) -> list[tuple[int, str]]:
    pool = by_family.get(addr.version)
    if pool is None:
        return [(422, f"{ANN_IPS}: {addr} (ordinal {i}) is IPv{addr.version} but {ANN_POOL} "
                 f"names no IPv{addr.version} pool; add one")]
    fact = facts.pools[pool]
    geo = fact.geometry
    if not geo.contains(addr):
        return [(422, f"{ANN_IPS}: {addr} (ordinal {i}) is outside pool {pool!r} "
                 f"({geo.network}); list addresses of that pool")]
    if geo.offset_of(addr) in fact.excluded:
        return [(422, f"{ANN_IPS}: {addr} (ordinal {i}) is excluded from pool {pool!r}; "
                 "choose another address")]
    if i >= plan.replicas:
        return []
    mine = facts.held.get(i)
    have = mine.addresses.get(addr.version) if mine is not None else None
    if have is not None and have != str(addr):
        return [(409, f"ordinal {i} already holds {have}, not {addr}: list {have} for ordinal "
                 f"{i} in {ANN_IPS} or release it with 'stickyip ipam release "
                 f"{plan.reservation(i)}'")]
    owner = facts.owners.get(str(addr))
    if owner is not None and owner != plan.owner(i):
        return [(409, f"{ANN_IPS}: {addr} (ordinal {i}) is held by {owner}; choose a free "
                 "address or release it with 'stickyip ipam release'")]
    return []


def _capacity_problems(plan: StatefulSetPlan, facts: PoolFacts, by_family: dict[int, str]
                       ) -> list[tuple[int, str]]:
    """Per pool: the ordinals that will take an address from it at scheduling (no
    listed address of its family, none held yet) must fit in its free addresses."""
    problems = []
    listed = plan.request.addresses or ()
    for family, pool in sorted(by_family.items()):
        need = 0
        for i in range(plan.replicas):
            if i < len(listed) and any(a.version == family for a in listed[i]):
                continue
            held = facts.held.get(i)
            if held is not None and family in held.addresses:
                continue
            need += 1
        free = facts.pools[pool].free
        if need > free:
            problems.append((403, f"pool {pool!r} has {free} free address(es) but "
                             f"{plan.replicas} replicas need {need} more: widen or add a pool, "
                             "release addresses, or lower replicas"))
    return problems


def requested_addresses(pod: dict[str, Any]) -> list[IPAddress] | str | None:
    """The addresses a pod names in ``stickyip.io/ip`` (one, or an IPv4 and an IPv6
    address, comma-separated; a message when malformed)."""
    raw = mapping(pod, "metadata", "annotations").get(ANN_IP)
    if raw is None:
        return None
    if not isinstance(raw, str):
        return f"annotation {ANN_IP} must be a string"
    out: list[IPAddress] = []
    for item in raw.split(","):
        try:
            out.append(ipaddress.ip_address(item.strip()))
        except ValueError:
            return f"annotation {ANN_IP}={raw!r} is not an IP address (or two, comma-separated)"
    if len(out) > 2 or len({a.version for a in out}) != len(out):
        return (f"annotation {ANN_IP}={raw!r} names more than one address of a family; "
                "stickyip writes one address, or one IPv4 and one IPv6 address")
    return out


def judge_pod_address(address: IPAddress, *, owner: str | None,
                      own: str | None) -> Verdict:
    """A pod naming ``address`` is refused when another owner holds it.

    ``owner``: the owner key holding the address (None: free); ``own``: the
    owner key of this pod's own reservation (None: not a StatefulSet pod)."""
    if owner is None or owner == own:
        return Verdict.allow()
    return Verdict.refuse(
        409, f"address {address} ({ANN_IP}) is held by {owner}; remove the annotation "
        "(stickyip writes it) or release that address with 'stickyip ipam release'")
