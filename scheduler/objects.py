"""Reading Kubernetes JSON (nodes, pods, StatefulSets) into the scheduler's models,
and a pod's sticky request (by the rules of ``ipam.contract``). Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from ipam.contract import PodRequest, Slot, SlotUnclear, opted_in, request_for, slot_of
from ipam.errors import IpamError
from ipam.models import NodeName
from scheduler.errors import InvalidAnnotation
from scheduler.models import (
    KubeObject,
    NodeInfo,
    NodeSelectorTerm,
    PodInfo,
    PodUid,
    Resources,
    StatefulSetInfo,
    Taint,
    Toleration,
)
from scheduler.quantity import cpu_millis, memory_bytes


def parse_time(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _meta(obj: KubeObject) -> dict[str, Any]:
    return cast(dict[str, Any], obj.get("metadata") or {})


def node_from_json(obj: KubeObject) -> NodeInfo:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    ready, since = False, 0.0
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
            since = parse_time(cond.get("lastTransitionTime"))
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return NodeInfo(
        name=NodeName(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        taints=tuple(Taint(key=t.get("key", ""), value=t.get("value") or "",
                           effect=t.get("effect", "")) for t in spec.get("taints") or []),
        ready=ready,
        ready_since=since,
        unschedulable=bool(spec.get("unschedulable")),
        allocatable=Resources(cpu_m=cpu_millis(alloc.get("cpu", "0")),
                              memory=memory_bytes(alloc.get("memory", "0"))),
    )


def _container_requests(c: dict[str, Any]) -> Resources:
    res = c.get("resources") or {}
    req = dict(res.get("limits") or {})  # requests default to limits, as the API does
    req.update(res.get("requests") or {})
    return Resources(cpu_m=cpu_millis(req.get("cpu", "0")),
                     memory=memory_bytes(req.get("memory", "0")))


def pod_requests(spec: dict[str, Any]) -> Resources:
    """Sum of the containers' requests, or the largest init container's if larger."""
    total = Resources()
    for c in spec.get("containers") or []:
        total = total + _container_requests(c)
    for c in spec.get("initContainers") or []:
        r = _container_requests(c)
        total = Resources(max(total.cpu_m, r.cpu_m), max(total.memory, r.memory))
    return total


_TOLERATIONS: dict[tuple[tuple[str, str, str, str], ...], tuple[Toleration, ...]] = {}


def _tolerations(raw: Any) -> tuple[Toleration, ...]:
    """Pods mostly carry the same few tolerations (the API adds the same defaults to
    every pod): share one tuple per distinct list instead of building it per pod."""
    key = tuple((t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "",
                 t.get("effect") or "") for t in raw)
    found = _TOLERATIONS.get(key)
    if found is None:
        found = tuple(Toleration(key=k, operator=o, value=v, effect=e) for k, o, v, e in key)
        if len(_TOLERATIONS) < 1024:
            _TOLERATIONS[key] = found
    return found


def pod_from_json(obj: KubeObject) -> PodInfo:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    name = meta.get("name", "")
    sts, ordinal, problem = "", -1, ""
    try:
        slot = slot_of(obj)
    except SlotUnclear as e:
        slot, problem = None, str(e)
    if slot is not None:
        sts, ordinal = slot.statefulset, slot.ordinal
    terms: list[NodeSelectorTerm] = []
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in affinity.get("nodeSelectorTerms") or []:
        terms.append(cast(NodeSelectorTerm, term))
    try:
        requests = pod_requests(spec)
    except InvalidAnnotation:
        requests = Resources()
    return PodInfo(
        uid=PodUid(meta.get("uid", "")),
        namespace=meta.get("namespace", "default"),
        name=name,
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        node_name=spec.get("nodeName") or "",
        scheduler_name=spec.get("schedulerName") or "default-scheduler",
        requests=requests,
        node_selector=dict(spec.get("nodeSelector") or {}),
        required_terms=terms,
        tolerations=_tolerations(spec.get("tolerations") or ()),
        statefulset=sts,
        ordinal=ordinal,
        slot_problem=problem,
        deleting=bool(meta.get("deletionTimestamp")),
        phase=status.get("phase") or "",
        resource_version=meta.get("resourceVersion", ""),
    )


def statefulset_from_json(obj: KubeObject) -> StatefulSetInfo:
    meta = _meta(obj)
    replicas = (obj.get("spec") or {}).get("replicas")
    return StatefulSetInfo(namespace=meta.get("namespace", "default"), name=meta.get("name", ""),
                           replicas=1 if replicas is None else int(replicas),
                           uid=meta.get("uid", ""))


def sticky_request(pod: PodInfo) -> PodRequest | None:
    """The reservation an opted-in StatefulSet pod asks for (``ipam.contract``);
    None for any other pod.

    Raises InvalidAnnotation with a message the user can act on.
    """
    if not opted_in(pod.labels):
        return None
    if pod.slot_problem:
        raise InvalidAnnotation(pod.slot_problem)
    if pod.ordinal < 0:
        return None
    slot = Slot(namespace=pod.namespace, statefulset=pod.statefulset, ordinal=pod.ordinal,
                pod=pod.name)
    try:
        return request_for(slot, pod.annotations)
    except IpamError as e:
        raise InvalidAnnotation(str(e)) from e
