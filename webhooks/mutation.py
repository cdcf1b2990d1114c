"""Decisions of the mutating Pod webhook: whether a pod asks for a fixed address
(read by the sticky contract, ``ipam.contract``), how an IPAM refusal reads to
the user, and the JSON patch that pins the pod to its reservation.

Pure: the caller claims the reservation between :func:`target_of` and
:func:`pin`, and sends the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipam.contract import (
    ANN_EPOCH,
    ANN_IP,
    ANN_IPS,
    ANN_NODE,
    ANN_POOL,
    LABEL_FIXED_IP,
    WRITTEN_ANNOTATIONS,
    NotEnoughAddresses,
    PodRequest,
    format_ips,
    opted_in,
    pod_request,
)
from ipam.errors import (
    AddressTaken,
    InvalidAddress,
    InvalidRequest,
    IpamError,
    PoolExhausted,
    PoolNotFound,
    ReservationConflict,
)
from webhooks.review import PatchOp, Verdict, mapping, pointer

NODE_FIELD = "metadata.name"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass(frozen=True, slots=True)
class Home:
    """What the store knows of a reservation (all None: nothing recorded yet)."""

    address: str | None = None
    node: str | None = None
    epoch: int | None = None


def target_of(pod: dict[str, Any], *, namespace: str, request_name: str
              ) -> PodRequest | Verdict:
    """Step one: a final verdict (not ours, or refused), or what to claim."""
    if not opted_in(mapping(pod, "metadata", "labels")):
        return Verdict.allow()
    try:
        target = pod_request(pod, namespace=namespace, name=request_name)
    except NotEnoughAddresses as e:
        return Verdict.refuse(403, str(e))
    except InvalidRequest as e:  # SlotUnclear, InvalidAnnotations, a name the store refuses
        return Verdict.refuse(422, str(e))
    if target is None:
        return Verdict.allow(warnings=[
            f"label {LABEL_FIXED_IP} only gives StatefulSet pods a fixed address; "
            "this pod gets an ordinary one"])
    return target


def refusal(error: IpamError, target: PodRequest) -> Verdict:
    """A user-facing refusal for an IPAM error met while claiming."""
    pod = f"pod {target.slot.namespace}/{target.slot.pod}"
    if isinstance(error, PoolNotFound):
        return Verdict.refuse(
            422, f"{pod}: {error}; create it with 'stickyip pool apply -f' or set "
            f"{ANN_POOL} to an existing pool")
    if isinstance(error, AddressTaken):
        return Verdict.refuse(
            409, f"{pod}: address {format_ips(target.addresses)} is held by {error.owner}; "
            f"choose another address in {ANN_IPS} or release it with 'stickyip ipam release'")
    if isinstance(error, ReservationConflict):  # ReservationInUse too
        return Verdict.refuse(409, f"{pod}: {error}")
    if isinstance(error, InvalidAddress | InvalidRequest):
        return Verdict.refuse(422, f"{pod}: {error}")
    if isinstance(error, PoolExhausted):
        return Verdict.refuse(403, f"{pod}: {error}")
    return Verdict.refuse(500, f"{pod}: {error}")


def _annotation_ops(pod: dict[str, Any], want: dict[str, str]) -> list[PatchOp]:
    meta = pod.get("metadata")
    if not isinstance(meta, dict):
        return [{"op": "add", "path": "/metadata", "value": {"annotations": want}}] if want \
            else []
    ann = meta.get("annotations")
    if not isinstance(ann, dict):
        if not want:
            return []
        return [{"op": "add", "path": pointer("metadata", "annotations"), "value": want}]
    ops: list[PatchOp] = []
    for key in WRITTEN_ANNOTATIONS:
        path = pointer("metadata", "annotations", key)
        if key in want:
            if key not in ann:
                ops.append({"op": "add", "path": path, "value": want[key]})
            elif ann[key] != want[key]:
                ops.append({"op": "replace", "path": path, "value": want[key]})
        elif key in ann:
            ops.append({"op": "remove", "path": path})
    return ops


def _requirement(node: str) -> dict[str, Any]:
    return {"key": NODE_FIELD, "operator": "In", "values": [node]}


def _affinity_ops(spec: dict[str, Any], node: str, warnings: list[str]) -> list[PatchOp]:
    """Require the home node in every node selector term (terms are ORed, so the
    requirement must be ANDed into each one); never twice (reinvocation)."""
    req = _requirement(node)
    term = {"matchFields": [req]}
    affinity = spec.get("affinity")
    if not isinstance(affinity, dict):
        return [{"op": "add", "path": pointer("spec", "affinity"),
                 "value": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [term]}}}}]
    na = affinity.get("nodeAffinity")
    if not isinstance(na, dict):
        return [{"op": "add", "path": pointer("spec", "affinity", "nodeAffinity"),
                 "value": {REQUIRED: {"nodeSelectorTerms": [term]}}}]
    required = na.get(REQUIRED)
    base = ("spec", "affinity", "nodeAffinity", REQUIRED)
    if not isinstance(required, dict):
        return [{"op": "add", "path": pointer(*base), "value": {"nodeSelectorTerms": [term]}}]
    terms = required.get("nodeSelectorTerms")
    if not isinstance(terms, list) or not terms:
        return [{"op": "add", "path": pointer(*base, "nodeSelectorTerms"), "value": [term]}]
    ops: list[PatchOp] = []
    for i, t in enumerate(terms):
        tpath = (*base, "nodeSelectorTerms", str(i))
        if not isinstance(t, dict):
            ops.append({"op": "replace", "path": pointer(*tpath), "value": term})
            continue
        fields = t.get("matchFields")
        if isinstance(fields, list) and req in fields:
            continue
        if isinstance(fields, list):
            for f in fields:
                if (isinstance(f, dict) and f.get("key") == NODE_FIELD
                        and f.get("operator") == "In" and node not in (f.get("values") or [])):
                    warnings.append(f"node affinity term {i} excludes home node {node}; "
                                    "the pod will stay Pending")
            ops.append({"op": "add", "path": pointer(*tpath, "matchFields", "-"), "value": req})
        else:
            ops.append({"op": "add", "path": pointer(*tpath, "matchFields"), "value": [req]})
    return ops


def pin(pod: dict[str, Any], home: Home, *, scheduler_name: str = "") -> Verdict:
    """Step two: the patch that records ``home`` on the pod and keeps it there.

    Applying the patch and calling again yields an empty patch (reinvocation)."""
    warnings: list[str] = []
    want: dict[str, str] = {}
    if home.address:
        want[ANN_IP] = home.address
        if home.epoch is not None:
            want[ANN_EPOCH] = str(home.epoch)
    if home.node:
        want[ANN_NODE] = home.node
    ops = _annotation_ops(pod, want)
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        ops.append({"op": "add", "path": "/spec", "value": {}})
    if home.node:
        bound = spec.get("nodeName")
        if isinstance(bound, str) and bound and bound != home.node:
            return Verdict.refuse(
                409, f"pod sets spec.nodeName={bound!r} but its address {home.address} is "
                f"homed on node {home.node!r}; remove spec.nodeName")
        ops.extend(_affinity_ops(spec, home.node, warnings))
    if scheduler_name:
        current = spec.get("schedulerName")
        if current in (None, "", DEFAULT_SCHEDULER):
            op: PatchOp = {"op": "add", "path": pointer("spec", "schedulerName"),
                           "value": scheduler_name}
            ops.append(op)
        elif current != scheduler_name:
            warnings.append(f"pod uses scheduler {current!r}, not {scheduler_name!r}; "
                            "only its node affinity keeps it home")
    return Verdict.allow(patch=ops, warnings=warnings)
