"""What policy computation knows about pods, namespaces and NetworkPolicies."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, NewType, TypedDict

#: "namespace/name" of a NetworkPolicy
PolicyKey = NewType("PolicyKey", str)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
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
    #: the pod's addresses (one per family on a dual-stack pod)
    addresses: tuple[IPAddress, ...]
    labels: dict[str, str] = field(default_factory=dict)
    #: container port name -> [(protocol, port)]
    named_ports: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def address(self) -> IPAddress:
        return self.addresses[0]


def pod_addresses(status: dict[str, Any]) -> tuple[IPAddress, ...]:
    """``status.podIPs`` (every family), else ``status.podIP``; unparsable ones skipped."""
    raw = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    if not raw:
        raw = [status.get("podIP")]
    out: list[IPAddress] = []
    for ip in raw:
        try:
            out.append(ipaddress.ip_address(ip or ""))
        except ValueError:
            continue
    return tuple(out)


def pod_info(obj: dict[str, Any]) -> PodInfo | None:
    """A PodInfo from Pod JSON, or None while it has no address."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    addresses = pod_addresses(status)
    if not addresses:
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
                   addresses=addresses, labels=dict(meta.get("labels") or {}),
                   named_ports=named)
