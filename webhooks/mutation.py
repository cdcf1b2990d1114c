"""Decisions of the mutating Pod webhook: which StatefulSet ordinal a pod is, what
it asks for, and the JSON patch that pins it to its reservation.

Pure: the caller looks the reservation up (or creates it) between
:func:`target_of` and :func:`pin`, and sends the verdict.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ipam.errors import (
    AddressTaken,
    InvalidAddress,
    InvalidRequest,
    IpamError,
    PoolExhausted,
    PoolNotFound,
    ReservationConflict,
)
from webhooks.intent import (
    ANN_EPOCH,
    ANN_IP,
    ANN_IPS,
    ANN_NODE,
    LABEL_FIXED_IP,
    WRITTEN,
    Intent,
    mapping,
    opted_in,
    read_intent,
)
from webhooks.review import PatchOp, Verdict, pointer

LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
LABEL_POD_NAME = "statefulset.kubernetes.io/pod-name"
NODE_FIELD = "metadata.name"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass(frozen=True, slots=True)
class PodIdentity:
    namespace: str
    statefulset: str
    ordinal: int
    pod: str


@dataclass(frozen=True, slots=True)
class Target:
    """An opted-in StatefulSet pod: whose reservation it needs, and how to create it."""

    identity: PodIdentity
    intent: Intent
    address: ipaddress.IPv4Address | None


@dataclass(frozen=True, slots=True)
class Home:
    """What the store knows of a reservation (all None: nothing recorded yet)."""

    address: str | None = None
    node: str | None = None
    epoch: int | None = None


def _ordinal(text: Any) -> int | None:
    if isinstance(text, str) and text.isdigit() and len(text) < 10:
        return int(text)
    return None


def _suffix_ordinal(name: Any, statefulset: str) -> int | None:
    if isinstance(name, str) and name.startswith(statefulset + "-"):
        return _ordinal(name[len(statefulset) + 1:])
    return None


def statefulset_owner(meta: dict[str, Any]) -> str | None:
    """The name of the StatefulSet controlling this pod (from ownerReferences)."""
    refs = meta.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    found: list[tuple[bool, str]] = []
    for ref in refs:
        if (isinstance(ref, dict) and ref.get("kind") == "StatefulSet"
                and str(ref.get("apiVersion", "")).startswith("apps/")
                and isinstance(ref.get("name"), str) and ref["name"]):
            found.append((ref.get("controller") is True, ref["name"]))
    if not found:
        return None
    found.sort(key=lambda f: not f[0])
    return found[0][1]


def identify(pod: dict[str, Any], *, namespace: str, request_name: str
             ) -> PodIdentity | str | None:
    """The StatefulSet ordinal of ``pod``; None when no StatefulSet owns it, or a
    message when its name, labels and owner disagree."""
    meta = mapping(pod, "metadata")
    sts = statefulset_owner(meta)
    if sts is None:
        return None
    labels = mapping(pod, "metadata", "labels")
    name = meta.get("name") or request_name
    name = name if isinstance(name, str) else ""
    candidates: dict[str, int] = {}
    if (o := _ordinal(labels.get(LABEL_POD_INDEX))) is not None:
        candidates[f"label {LABEL_POD_INDEX}"] = o
    if (o := _suffix_ordinal(name, sts)) is not None:
        candidates["pod name"] = o
    if (o := _suffix_ordinal(labels.get(LABEL_POD_NAME), sts)) is not None:
        candidates[f"label {LABEL_POD_NAME}"] = o
    if not candidates:
        return (f"cannot tell which ordinal of StatefulSet {sts!r} pod {name or '(unnamed)'!r} "
                f"is: expected a name '{sts}-N' or label {LABEL_POD_INDEX}")
    if len(set(candidates.values())) > 1:
        seen = ", ".join(f"{k} says {v}" for k, v in candidates.items())
        return f"pod of StatefulSet {sts!r} has inconsistent ordinals ({seen})"
    ns = namespace or meta.get("namespace") or ""
    if not isinstance(ns, str) or not ns:
        return "the admission request names no namespace for the pod"
    ordinal = next(iter(candidates.values()))
    return PodIdentity(namespace=ns, statefulset=sts, ordinal=ordinal,
                       pod=name or f"{sts}-{ordinal}")


def target_of(pod: dict[str, Any], *, namespace: str, request_name: str
              ) -> Target | Verdict:
    """Step one: a final verdict (not ours, or refused), or what to look up."""
    labels = mapping(pod, "metadata", "labels")
    if not opted_in(labels):
        return Verdict.allow()
    who = identify(pod, namespace=namespace, request_name=request_name)
    if who is None:
        return Verdict.allow(warnings=[
            f"label {LABEL_FIXED_IP} only gives StatefulSet pods a fixed address; "
            "this pod gets an ordinary one"])
    if isinstance(who, str):
        return Verdict.refuse(422, who)
    reading = read_intent(mapping(pod, "metadata", "annotations"))
    if reading.intent is None:
        return Verdict.refuse(422, "; ".join(reading.errors))
    intent = reading.intent
    address = None
    if intent.addresses is not None:
        if who.ordinal >= len(intent.addresses):
            n = len(intent.addresses)
            return Verdict.refuse(
                403, f"StatefulSet {who.statefulset!r} lists {n} address(es) in {ANN_IPS}; "
                f"ordinal {who.ordinal} has none: add addresses to the list or scale to "
                f"{n} replicas")
        address = intent.addresses[who.ordinal]
    return Target(identity=who, intent=intent, address=address)


def refusal(error: IpamError, target: Target) -> Verdict:
    """A user-facing refusal for an IPAM error met while claiming."""
    who = target.identity
    pod = f"pod {who.namespace}/{who.pod}"
    if isinstance(error, PoolNotFound):
        return Verdict.refuse(
            422, f"{pod}: pool {target.intent.pool!r} does not exist; create it with "
            "'stickyip pool apply -f' or set stickyip.io/pool to an existing pool")
    if isinstance(error, AddressTaken):
        return Verdict.refuse(
            409, f"{pod}: address {target.address} is held by {error.holder}; choose another "
            f"address in {ANN_IPS} or release it with 'stickyip ipam release'")
    if isinstance(error, ReservationConflict):
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
    for key in WRITTEN:
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
