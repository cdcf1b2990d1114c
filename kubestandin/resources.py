"""The API resources the stand-in serves, keyed the way kube-apiserver's URLs name them."""

from __future__ import annotations

from dataclasses import dataclass


# eq=False: the instances in RESOURCES are the only ones, and identity hashing keeps
# the store's per-event lookups cheap.
@dataclass(frozen=True, eq=False)
class Resource:
    """One served resource type (``group``/``version``/``plural``) and its subresources."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_S = frozenset
RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "pods", "Pod", True, _S({"status", "binding"}), ("po",)),
    Resource("", "v1", "nodes", "Node", False, _S({"status"}), ("no",)),
    Resource("", "v1", "namespaces", "Namespace", False, _S({"status"}), ("ns",)),
    Resource("", "v1", "services", "Service", True, _S({"status"}), ("svc",)),
    Resource("", "v1", "events", "Event", True, _S(), ("ev",)),
    Resource("", "v1", "configmaps", "ConfigMap", True, _S(), ("cm",)),
    Resource("", "v1", "secrets", "Secret", True, _S()),
    Resource("", "v1", "endpoints", "Endpoints", True, _S(), ("ep",)),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True, _S({"status", "scale"}), ("sts",)),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, _S()),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, _S(),
             ("netpol",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True, _S()),
    Resource("events.k8s.io", "v1", "events", "Event", True, _S(), ("ev",)),
)

BY_PATH: dict[tuple[str, str, str], Resource] = {
    (r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in RESOURCES}


def by_kind(api_version: str, kind: str) -> Resource:
    """The resource for ``apiVersion``/``kind``; KeyError when the stand-in does not serve it."""
    try:
        return BY_KIND[(api_version, kind)]
    except KeyError:
        raise KeyError(f"the stand-in does not serve {api_version} {kind}") from None


def groups() -> dict[str, list[str]]:
    """API group name -> served versions (the legacy core group is ``""``)."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out
