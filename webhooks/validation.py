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
from ipam.ranges import PoolGeometry
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

    def explicit(self) -> tuple[ipaddress.IPv4Address, ...]:
        """The listed addresses of the ordinals that exist now."""
        addresses = self.request.addresses
        return addresses[: self.replicas] if addresses else ()


@dataclass(frozen=True, slots=True)
class Held:
    """A reservation an ordinal of this StatefulSet already has."""

    pool: str
    address: str | None


@dataclass(slots=True)
class PoolFacts:
    """What the store says about the pool and the StatefulSet's ordinals."""

    exists: bool
    pools: list[str] = field(default_factory=list)
    geometry: PoolGeometry | None = None
    excluded: frozenset[int] = frozenset()
    free: int = 0
    #: ordinal -> reservation (any pool), for ordinals < replicas
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
            if old.pool != request.pool:
                return Verdict.refuse(
                    409, f"{what}: {ANN_POOL} cannot change from {old.pool!r} to "
                    f"{request.pool!r} while it exists; {how}")
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
    """Is the plan possible: pool exists, listed addresses usable and free (or ours),
    and enough free addresses for the ordinals that have none yet."""
    what = f"StatefulSet {plan.namespace}/{plan.name}" if plan.name else "StatefulSet"
    pool = plan.request.pool
    if not facts.exists or facts.geometry is None:
        known = ", ".join(facts.pools[:8]) or "none yet"
        return Verdict.refuse(
            422, f"{what}: pool {pool!r} does not exist (pools: {known}); create it with "
            f"'stickyip pool apply -f' or set {ANN_POOL} to an existing pool")
    geo = facts.geometry
    problems: list[tuple[int, str]] = []
    for i, held in sorted(facts.held.items()):
        if i >= plan.replicas:
            continue
        if held.pool != pool:
            problems.append((409, f"ordinal {i} still holds a reservation in pool "
                             f"{held.pool!r} ({held.address or 'no address'}): release it with "
                             f"'stickyip ipam release {plan.reservation(i)}' or keep "
                             f"{ANN_POOL}: {held.pool}"))
    for i, addr in enumerate(plan.request.addresses or ()):
        if not geo.contains(addr):
            problems.append((422, f"{ANN_IPS}: {addr} (ordinal {i}) is outside pool {pool!r} "
                             f"({geo.network}); list addresses of that pool"))
            continue
        if geo.offset_of(addr) in facts.excluded:
            problems.append((422, f"{ANN_IPS}: {addr} (ordinal {i}) is excluded from pool "
                             f"{pool!r}; choose another address"))
            continue
        if i >= plan.replicas:
            continue
        mine = facts.held.get(i)
        if mine is not None and mine.pool == pool and mine.address not in (None, str(addr)):
            problems.append((409, f"ordinal {i} already holds {mine.address}, not {addr}: list "
                             f"{mine.address} at position {i} of {ANN_IPS} or release it with "
                             f"'stickyip ipam release {plan.reservation(i)}'"))
            continue
        owner = facts.owners.get(str(addr))
        if owner is not None and owner != plan.owner(i):
            problems.append((409, f"{ANN_IPS}: {addr} (ordinal {i}) is held by {owner}; choose "
                             "a free address or release it with 'stickyip ipam release'"))
    if not problems and plan.request.addresses is None:
        have = sum(1 for i, h in facts.held.items()
                   if i < plan.replicas and h.pool == pool and h.address)
        need = plan.replicas - have
        if need > facts.free:
            problems.append((403, f"pool {pool!r} has {facts.free} free address(es) but "
                             f"{plan.replicas} replicas need {need} more: widen or add a pool, "
                             "release addresses, or lower replicas"))
    if problems:
        more = len(problems) - MAX_LISTED_PROBLEMS
        text = "; ".join(m for _, m in problems[:MAX_LISTED_PROBLEMS])
        if more > 0:
            text += f" (and {more} more)"
        return Verdict.refuse(problems[0][0], f"{what}: {text}", warnings=plan.warnings)
    return Verdict.allow(warnings=plan.warnings)


def requested_address(pod: dict[str, Any]) -> ipaddress.IPv4Address | str | None:
    """The address a pod names in ``stickyip.io/ip`` (a message when malformed)."""
    raw = mapping(pod, "metadata", "annotations").get(ANN_IP)
    if raw is None:
        return None
    if not isinstance(raw, str):
        return f"annotation {ANN_IP} must be a string"
    try:
        addr = ipaddress.ip_address(raw.strip())
    except ValueError:
        return f"annotation {ANN_IP}={raw!r} is not an IPv4 address"
    if not isinstance(addr, ipaddress.IPv4Address):
        return f"annotation {ANN_IP}={raw!r} is IPv6; only IPv4 is supported for now"
    return addr


def judge_pod_address(address: ipaddress.IPv4Address, *, owner: str | None,
                      own: str | None) -> Verdict:
    """A pod naming ``address`` is refused when another owner holds it.

    ``owner``: the owner key holding the address (None: free); ``own``: the
    owner key of this pod's own reservation (None: not a StatefulSet pod)."""
    if owner is None or owner == own:
        return Verdict.allow()
    return Verdict.refuse(
        409, f"address {address} ({ANN_IP}) is held by {owner}; remove the annotation "
        "(stickyip writes it) or release that address with 'stickyip ipam release'")
