"""What policy computation knows about pods, namespaces and NetworkPolicies."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, NewType, TypedDict

#: "namespace/name" of a NetworkPolicy
PolicyKey = NewType("PolicyKey", str)
Identity = NewType("Identity", int)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class LabelSelector(TypedDict, total=False):
    matchLabels: dict[str, str] | None
    matchExpressions: list[dict[str, Any]] | None


class NetworkPolicyObject(TypedDict, total=False):
    metadata: dict[str, Any]
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)

    def all_labels(self) -> dict[str, str]:
        return {**self.labels, NAMESPACE_NAME_LABEL: self.name}


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    address: ipaddress.IPv4Address
    labels: dict[str, str] = field(default_factory=dict)
    #: container port name -> [(protocol, port)]
    named_ports: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_info(obj: dict[str, Any]) -> PodInfo | None:
    """A PodInfo from Pod JSON, or None while it has no IPv4 address."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    ip = status.get("podIP") or ""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return None
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    named: dict[str, list[tuple[str, int]]] = {}
    for c in (obj.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name"):
                named.setdefault(p["name"], []).append(
                    (p.get("protocol") or "TCP", int(p["containerPort"])))
    return PodInfo(namespace=meta.get("namespace", "default"), name=meta.get("name", ""),
                   address=addr, labels=dict(meta.get("labels") or {}), named_ports=named)
