"""Pure translation of a Service and its EndpointSlices (Kubernetes JSON, as the API
serves it) into :class:`ServicePort` records, with kube-proxy's semantics: ClusterIP
and NodePort frontends, target ports resolved through the EndpointSlice port of the
same name (so named target ports work), only ready endpoints (serving terminating
ones only when no endpoint is ready), ``internalTrafficPolicy: Local``, ClientIP
session affinity with its timeout, and the backend algorithm annotation.

Families: a Service is served in each family of ``spec.ipFamilies`` (only the first
for ``ipFamilyPolicy: SingleStack``; without ``ipFamilies``, the families of its
cluster IPs), as the API server fills them for SingleStack, PreferDualStack and
RequireDualStack. Each family gets its own service ports: that family's cluster IP
and node addresses as frontends, and as backends the endpoints of the EndpointSlices
whose ``addressType`` is that family (IPv4 frontends never lead to IPv6 backends)."""

from __future__ import annotations

import ipaddress
from typing import Any, TypedDict

from datapath.features.services.models import (
    ALGORITHM_ANNOTATION,
    DEFAULT_AFFINITY_TIMEOUT_S,
    Backend,
    Frontend,
    IPAddress,
    ServiceKey,
    ServicePort,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
FAMILY_NAMES = {"IPv4": 4, "IPv6": 6}


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


class ServiceObject(TypedDict, total=False):
    metadata: ObjectMeta
    spec: dict[str, Any]


class EndpointSliceObject(TypedDict, total=False):
    metadata: ObjectMeta
    addressType: str
    endpoints: list[dict[str, Any]]
    ports: list[dict[str, Any]] | None


def service_key(obj: ServiceObject | EndpointSliceObject) -> ServiceKey:
    meta = obj.get("metadata", {})
    name = meta.get("name", "")
    if "addressType" in obj:  # an EndpointSlice names its Service by label
        name = meta.get("labels", {}).get(SERVICE_NAME_LABEL, "")
    return ServiceKey(f"{meta.get('namespace', 'default')}/{name}")


def _ip(addr: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(addr)
    except ValueError:
        return None


def families(spec: dict[str, Any]) -> list[int]:
    """The address families a Service is served in (see the module docstring)."""
    fams = [FAMILY_NAMES[f] for f in spec.get("ipFamilies") or [] if f in FAMILY_NAMES]
    if not fams:
        ips = [_ip(a) for a in spec.get("clusterIPs") or [spec.get("clusterIP") or ""]]
        fams = [ip.version for ip in ips if ip is not None] or [4]
    fams = list(dict.fromkeys(fams))
    if spec.get("ipFamilyPolicy") == "SingleStack":
        fams = fams[:1]
    return fams


def _cond(ep: dict[str, Any], name: str, default: bool) -> bool:
    v = (ep.get("conditions") or {}).get(name)
    return default if v is None else bool(v)


def select_endpoints(endpoints: list[dict[str, Any]], *, local_node: str | None
                     ) -> list[dict[str, Any]]:
    """Ready endpoints, or the serving terminating ones when none is ready."""
    eps = [e for e in endpoints if local_node is None or e.get("nodeName") == local_node]
    ready = [e for e in eps if _cond(e, "ready", True)]
    if ready:
        return ready
    return [e for e in eps
            if _cond(e, "terminating", False) and _cond(e, "serving", _cond(e, "ready", True))]


def translate(service: ServiceObject, slices: list[EndpointSliceObject], *, node_name: str,
              node_addresses: list[IPAddress], default_maglev: bool = False
              ) -> list[ServicePort]:
    spec = service.get("spec", {})
    meta = service.get("metadata", {})
    key = service_key(service)
    if spec.get("type") == "ExternalName":
        return []
    fams = families(spec)
    cluster_ips = [ip for ip in (_ip(a) for a in (spec.get("clusterIPs")
                                                   or [spec.get("clusterIP") or ""]))
                   if ip is not None and ip.version in fams]
    node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    local = spec.get("internalTrafficPolicy") == "Local"
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT_S)
    algo = (meta.get("annotations") or {}).get(ALGORITHM_ANNOTATION, "")
    maglev = algo == "maglev" or (default_maglev and algo != "random")
    out = []
    for p, fam in ((p, fam) for p in spec.get("ports") or [] for fam in fams):
        name = p.get("name") or ""
        proto = p.get("protocol") or "TCP"
        frontends = [Frontend(ip, int(p["port"])) for ip in cluster_ips if ip.version == fam]
        if node_ports and p.get("nodePort"):
            frontends += [Frontend(a, int(p["nodePort"])) for a in node_addresses
                          if a.version == fam]
        if not frontends:
            continue  # headless, or no address of this family: nothing to balance
        candidates: list[tuple[dict[str, Any], int]] = []
        for sl in slices:
            if FAMILY_NAMES.get(sl.get("addressType", "IPv4")) != fam:
                continue
            port = next((int(sp["port"]) for sp in sl.get("ports") or []
                         if (sp.get("name") or "") == name
                         and (sp.get("protocol") or "TCP") == proto and sp.get("port")), None)
            if port is not None:
                candidates += [(ep, port) for ep in sl.get("endpoints") or []]
        chosen = select_endpoints([ep for ep, _ in candidates],
                                  local_node=node_name if local else None)
        chosen_ids = {id(ep) for ep in chosen}
        backends: set[Backend] = set()
        for ep, port in candidates:
            if id(ep) in chosen_ids:
                for a in ep.get("addresses") or []:
                    ip = _ip(a)
                    if ip is not None and ip.version == fam:
                        backends.add(Backend(ip, port))
        if proto == "SCTP":
            # the datapath rewrites SCTP addresses (its CRC32c covers no IP header) but
            # cannot redo the CRC32c after a port rewrite: serve only frontends whose
            # port every backend shares
            frontends = [f for f in frontends if all(b.port == f.port for b in backends)]
            if not frontends:
                continue
        out.append(ServicePort(service=key, port_name=name, protocol=proto,
                               frontends=tuple(sorted(set(frontends))),
                               backends=tuple(sorted(backends)),
                               affinity_timeout_s=affinity, maglev=maglev, family=fam))
    return out
