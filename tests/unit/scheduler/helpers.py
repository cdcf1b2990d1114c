"""Builders of node and pod JSON for the scheduler's unit tests."""

from __future__ import annotations

from typing import Any

from scheduler.models import NodeInfo, PodInfo
from scheduler.objects import node_from_json, pod_from_json


def node_json(name: str, *, ready: bool = True, labels: dict[str, str] | None = None,
              taints: list[dict[str, str]] | None = None, cpu: str = "4",
              memory: str = "8Gi", unschedulable: bool = False,
              since: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": cpu, "memory": memory},
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastTransitionTime": since}]},
    }


def node(name: str, **kw: Any) -> NodeInfo:
    return node_from_json(node_json(name, **kw))


def pod_json(name: str, *, namespace: str = "default", uid: str = "", cpu: str | None = None,
             memory: str | None = None, sts: str | None = None, fixed: bool = False,
             annotations: dict[str, str] | None = None, node_name: str = "",
             node_selector: dict[str, str] | None = None,
             tolerations: list[dict[str, str]] | None = None,
             terms: list[dict[str, Any]] | None = None,
             phase: str = "Pending") -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}",
                            "labels": {"stickyip.io/fixed-ip": "true"} if fixed else {},
                            "annotations": annotations or {}}
    if sts:
        meta["ownerReferences"] = [{"kind": "StatefulSet", "name": sts, "controller": True,
                                    "apiVersion": "apps/v1", "uid": "x"}]
    spec: dict[str, Any] = {
        "schedulerName": "stickyip-scheduler", "nodeName": node_name,
        "containers": [{"name": "c", "resources": {"requests": requests}}],
        "nodeSelector": node_selector or {}, "tolerations": tolerations or []}
    if terms is not None:
        spec["affinity"] = {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def pod(name: str, **kw: Any) -> PodInfo:
    return pod_from_json(pod_json(name, **kw))
