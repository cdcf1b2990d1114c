"""Reading Kubernetes JSON (nodes, pods, StatefulSets) into the scheduler's models,
and a pod's ``stickyip.io/*`` annotations into its sticky request. Pure."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any, cast

from ipam import ranges
from ipam.errors import IpamError
from ipam.models import (
    DEFAULT_POOL,
    NodeFailurePolicy,
    NodeName,
    PoolName,
    ReservationKey,
)
from scheduler.errors import InvalidAnnotation
from scheduler.models import (
    ANN_IPS,
    ANN_NODE_FAILURE,
    ANN_POOL,
    ANN_RETAIN,
    LABEL_FIXED_IP,
    KubeObject,
    NodeInfo,
    NodeSelectorTerm,
    PodInfo,
    PodUid,
    Resources,
    StatefulSetInfo,
    StickyRequest,
    Taint,
    Toleration,
)
from scheduler.quantity import cpu_millis, memory_bytes

_ORDINAL = re.compile(r"^(.+)-(\d+)$")


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


def statefulset_owner(meta: dict[str, Any], name: str) -> tuple[str, int]:
    """The owning StatefulSet and ordinal of a pod, or ("", -1)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "StatefulSet" and ref.get("controller", True):
            m = _ORDINAL.match(name)
            if m and m.group(1) == ref.get("name"):
                return m.group(1), int(m.group(2))
    labels = meta.get("labels") or {}
    if labels.get("statefulset.kubernetes.io/pod-name") == name:
        m = _ORDINAL.match(name)
        if m:
            return m.group(1), int(m.group(2))
    return "", -1


def pod_from_json(obj: KubeObject) -> PodInfo:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    name = meta.get("name", "")
    sts, ordinal = statefulset_owner(meta, name)
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
        tolerations=tuple(
            Toleration(key=t.get("key") or "", operator=t.get("operator") or "Equal",
                       value=t.get("value") or "", effect=t.get("effect") or "")
            for t in spec.get("tolerations") or []),
        statefulset=sts,
        ordinal=ordinal,
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


def opted_in(pod: PodInfo) -> bool:
    return pod.labels.get(LABEL_FIXED_IP) == "true" and pod.ordinal >= 0


def sticky_request(pod: PodInfo) -> StickyRequest | None:
    """The reservation an opted-in StatefulSet pod asks for; None for any other pod.

    Raises InvalidAnnotation with a message the user can act on.
    """
    if not opted_in(pod):
        return None
    ann = pod.annotations
    try:
        key = ReservationKey.of(pod.namespace, pod.statefulset, pod.ordinal)
        pool = PoolName(ann.get(ANN_POOL) or DEFAULT_POOL)
        address = None
        if ann.get(ANN_IPS):
            addrs = ranges.parse_address_list(ann[ANN_IPS])
            if pod.ordinal >= len(addrs):
                raise InvalidAnnotation(
                    f"{ANN_IPS} lists {len(addrs)} addresses but this pod is ordinal "
                    f"{pod.ordinal}; list at least {pod.ordinal + 1} addresses")
            picked = addrs[pod.ordinal]
            if not isinstance(picked, ipaddress.IPv4Address):
                raise InvalidAnnotation(f"{ANN_IPS}: IPv6 addresses are not accepted here yet")
            address = picked
        retain = ranges.parse_retain(ann[ANN_RETAIN]) if ann.get(ANN_RETAIN) else None
    except IpamError as e:
        raise InvalidAnnotation(str(e)) from e
    policy_text = ann.get(ANN_NODE_FAILURE) or NodeFailurePolicy.MIGRATE.value
    try:
        policy = NodeFailurePolicy(policy_text)
    except ValueError as e:
        raise InvalidAnnotation(
            f"{ANN_NODE_FAILURE} is {policy_text!r}; use 'migrate' or 'wait'") from e
    return StickyRequest(key=key, pool=pool, address=address, retain=retain, policy=policy)
