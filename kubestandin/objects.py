"""Builders for the objects tests and the demo create (plain dicts, as the API serves them)."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def namespace(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(labels or {})}}


def node(name: str, cpu: str = "8", memory: str = "32Gi", labels: dict[str, str] | None = None,
         ready: bool = True, taints: list[Obj] | None = None, *, pods: str = "110",
         internal_ip: str | None = None, unschedulable: bool = False) -> Obj:
    """A Node as a kubelet registers it: capacity = allocatable, a Ready condition."""
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    addresses = [{"type": "Hostname", "address": name}]
    if internal_ip:
        addresses.insert(0, {"type": "InternalIP", "address": internal_ip})
    spec: Obj = {"taints": list(taints or [])}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                              "kubernetes.io/os": "linux", **(labels or {})}},
        "spec": spec,
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "KubeletReady" if ready else "KubeletNotReady"}],
            "addresses": addresses,
        },
    }


def pod(name: str, namespace: str = "default", *, labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, scheduler_name: str | None = None,
        node_name: str | None = None, cpu: str | None = None, memory: str | None = None,
        node_selector: dict[str, str] | None = None,
        tolerations: list[Obj] | None = None) -> Obj:
    spec = _pod_spec(scheduler_name, cpu, memory, node_selector, tolerations)
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                         "annotations": dict(annotations or {})},
            "spec": spec}


def statefulset(name: str, namespace: str = "default", replicas: int = 3,
                template_labels: dict[str, str] | None = None,
                template_annotations: dict[str, str] | None = None, *,
                scheduler_name: str | None = None, cpu: str | None = None,
                memory: str | None = None, node_selector: dict[str, str] | None = None,
                tolerations: list[Obj] | None = None, service_name: str | None = None,
                pod_management_policy: str = "OrderedReady") -> Obj:
    """An apps/v1 StatefulSet whose selector is its template labels (default ``app=name``)."""
    labels = dict(template_labels or {"app": name})
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas, "serviceName": service_name or name,
            "podManagementPolicy": pod_management_policy,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels,
                             "annotations": dict(template_annotations or {})},
                "spec": _pod_spec(scheduler_name, cpu, memory, node_selector, tolerations),
            },
        },
    }


def _pod_spec(scheduler_name: str | None, cpu: str | None, memory: str | None,
              node_selector: dict[str, str] | None, tolerations: list[Obj] | None) -> Obj:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    container: Obj = {"name": "main", "image": "registry.k8s.io/pause:3.9"}
    if requests:
        container["resources"] = {"requests": requests}
    spec: Obj = {"containers": [container]}
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = list(tolerations)
    return spec
