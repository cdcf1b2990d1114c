"""Pure NetworkPolicy computation: identities, the ipcache and the per-endpoint
policy entries the eBPF program looks up.

Identities are node-local: every node derives them from the same API objects, so no
identity travels in packets and none needs a cluster-wide allocator. An identity is
the equivalence class of everything a policy can select an address by: for a pod its
namespace, its labels, its namespace's labels and the longest ipBlock prefix (from
any policy) that contains its address; for other addresses that longest prefix
alone. An ipBlock then selects exactly the identities whose prefix lies inside its
CIDR and inside none of its excepts, which makes ``except`` exact even for pod IPs
(the ipcache is an LPM trie: an address resolves to its longest prefix).

Both families: every address of a pod is its own identity member (a dual-stack pod
has one identity per family, same labels, each with its family's longest prefix), so
an IPv4 ipBlock never selects a pod's IPv6 traffic nor the reverse, while pod and
namespace selectors select both. IPv4 prefixes and addresses go to the IPv4 ipcache,
IPv6 ones to the IPv6 ipcache; a pod is one policy endpoint (one id, one set of rules
and deny counters) whichever address its packets carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from datapath.features.policy.errors import InvalidPolicy
from datapath.features.policy.models import (
    LabelSelector,
    NamespaceInfo,
    NetworkPolicyObject,
    PodInfo,
    PolicyKey,
)
from datapath.features.policy.selectors import matches
from datapath.maps import fields, lb_conntrack, policy_endpoints, policy_rules
from datapath.maps import ipcache as ipcache_map
from datapath.maps.state import Key, MapState, Value

WORLD = ipaddress.IPv4Network("0.0.0.0/0")
WORLD6 = ipaddress.IPv6Network("::/0")
#: link-local sources reach a pod only from the host side of its veth (its gateway)
LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/10")
FIRST_IDENTITY = 256
MAP_ORDER = (ipcache_map.NAME, ipcache_map.NAME6, policy_rules.NAME, policy_endpoints.NAME,
             policy_endpoints.NAME6)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Allocator:
    """Stable numbers for hashable keys, starting at ``first``."""

    def __init__(self, first: int) -> None:
        self._ids: dict[Hashable, int] = {}
        self._next = first

    def get(self, key: Hashable) -> int:
        if key not in self._ids:
            self._ids[key] = self._next
            self._next += 1
        return self._ids[key]

    def retain(self, keys: Iterable[Hashable]) -> None:
        keep = set(keys)
        for k in [k for k in self._ids if k not in keep]:
            del self._ids[k]


@dataclass(frozen=True, slots=True)
class IdentityKey:
    namespace: str | None  # None: not a pod (an address range)
    labels: frozenset[tuple[str, str]]
    ns_labels: frozenset[tuple[str, str]]
    prefix: IPNetwork


@dataclass(slots=True)
class PolicyState:
    """Map entries plus what the counters need: which policies select an endpoint."""

    maps: MapState = field(default_factory=dict)
    identities: dict[IdentityKey, int] = field(default_factory=dict)
    #: (ep_id, direction) -> names of the policies selecting that endpoint that way
    selecting: dict[tuple[int, int], list[PolicyKey]] = field(default_factory=dict)
    #: local pod address (both of a dual-stack pod) -> its endpoint id
    endpoints: dict[IPAddress, int] = field(default_factory=dict)


def port_prefixes(start: int, end: int) -> list[tuple[int, int]]:
    """Cover [start, end] with aligned (port, prefix bits) blocks of the 16-bit space."""
    if not 0 <= start <= end <= 0xFFFF:
        raise InvalidPolicy(f"bad port range {start}-{end}")
    out = []
    while start <= end:
        size = start & -start if start else 1 << 16
        while start + size - 1 > end:
            size >>= 1
        out.append((start, 16 - size.bit_length() + 1))
        start += size
    return out


def _policy_types(spec: dict[str, Any]) -> tuple[bool, bool]:
    types = spec.get("policyTypes")
    if types:
        return "Ingress" in types, "Egress" in types
    return True, bool(spec.get("egress"))


def _net(cidr: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as e:
        raise InvalidPolicy(f"bad ipBlock CIDR {cidr!r}") from e


class _Ctx:
    def __init__(self, namespaces: dict[str, NamespaceInfo], pods: list[PodInfo],
                 prefixes: list[IPNetwork], ids: Allocator) -> None:
        self.namespaces = namespaces
        self.prefixes = sorted(prefixes, key=lambda n: (n.prefixlen, n.version), reverse=True)
        self.ids = ids
        self.identities: dict[IdentityKey, int] = {}
        #: (pod key, address) -> identity
        self.pod_ident: dict[tuple[str, IPAddress], int] = {}
        self.pods_by_ident: dict[int, list[PodInfo]] = {}
        for p in pods:
            ns = namespaces.get(p.namespace, NamespaceInfo(p.namespace))
            for address in p.addresses:
                k = IdentityKey(p.namespace, frozenset(p.labels.items()),
                                frozenset(ns.all_labels().items()), self.context(address))
                i = self._ident(k)
                self.pod_ident[(p.key, address)] = i
                self.pods_by_ident.setdefault(i, []).append(p)
        for pfx in self.prefixes:
            self._ident(IdentityKey(None, frozenset(), frozenset(), pfx))

    def context(self, addr: IPAddress) -> IPNetwork:
        return next(p for p in self.prefixes if p.version == addr.version and addr in p)

    def _ident(self, k: IdentityKey) -> int:
        if k not in self.identities:
            if k.namespace is None and k.prefix == WORLD:
                self.identities[k] = ipcache_map.ID_WORLD
            elif k.namespace is None and k.prefix == WORLD6:
                self.identities[k] = ipcache_map.ID_WORLD6
            else:
                self.identities[k] = self.ids.get(k)
        return self.identities[k]

    def peer(self, peer: dict[str, Any], policy_ns: str) -> set[int]:
        """Identities one NetworkPolicyPeer selects."""
        block = peer.get("ipBlock")
        if block:
            cidr = _net(block["cidr"])
            excepts = [_net(e) for e in block.get("except") or []]
            return {i for k, i in self.identities.items()
                    if _inside(k.prefix, cidr)
                    and not any(_inside(k.prefix, e) for e in excepts)}
        pod_sel = peer.get("podSelector")
        ns_sel = peer.get("namespaceSelector")
        out = set()
        for k, i in self.identities.items():
            if k.namespace is None:
                continue
            if ns_sel is None:
                if k.namespace != policy_ns:
                    continue
            elif not matches(ns_sel, dict(k.ns_labels)):
                continue
            if pod_sel is not None and not matches(pod_sel, dict(k.labels)):
                continue
            out.add(i)
        return out


def _inside(prefix: IPNetwork, net: IPNetwork) -> bool:
    """``prefix`` lies inside ``net`` (never across families)."""
    return prefix.version == net.version and prefix.subnet_of(net)  # type: ignore[arg-type]


def _addr_key(prefixlen: int, address: IPAddress) -> tuple[int, int]:
    return (prefixlen, fields.be32(address) if address.version == 4 else fields.be128(address))


def _port_entries(port: dict[str, Any], named_on: Iterable[PodInfo]
                  ) -> list[tuple[int, int, int]]:
    """(protocol, port, port prefix bits) entries of one NetworkPolicyPort."""
    proto_name = port.get("protocol") or "TCP"
    if proto_name not in fields.PROTO_NUMBERS:
        raise InvalidPolicy(f"unknown protocol {proto_name!r}")
    proto = fields.PROTO_NUMBERS[proto_name]
    p = port.get("port")
    if p is None:
        return [(proto, 0, 0)]
    if isinstance(p, str) and not p.isdigit():
        found = {pn for pod in named_on for (pr, pn) in pod.named_ports.get(p, [])
                 if pr == proto_name}
        return [(proto, n, 16) for n in sorted(found)]
    start = int(p)
    end = int(port.get("endPort") or start)
    return [(proto, n, bits) for n, bits in port_prefixes(start, end)]


def _is_named(port: dict[str, Any]) -> bool:
    p = port.get("port")
    return isinstance(p, str) and not p.isdigit()


def _allow(policy: dict[Key, Value], n: int, ep_id: int, ident: int, direction: int,
           proto: int, port: int, bits: int) -> None:
    """Add one allow entry (attributed to policy number ``n``)."""
    # no protocol: the prefix stops before the protocol byte
    plen = policy_rules.PREFIX_BITS - 8 if proto == 0 else policy_rules.PREFIX_BITS + bits
    policy.setdefault((plen, ep_id, ident, direction, proto, fields.be16(port)), (n, 0))


def compute(*, policies: list[NetworkPolicyObject], namespaces: list[NamespaceInfo],
            pods: list[PodInfo], local: Iterable[IPAddress],
            host_addresses: Iterable[IPAddress] = (),
            identities: Allocator | None = None, endpoint_ids: Allocator | None = None
            ) -> PolicyState:
    """Everything the policy maps should hold for the pods at ``local`` addresses."""
    ids = identities or Allocator(FIRST_IDENTITY)
    eps = endpoint_ids or Allocator(1)
    ns_map = {n.name: n for n in namespaces}
    prefixes: set[IPNetwork] = {WORLD, WORLD6}
    for pol in policies:
        spec = pol.get("spec") or {}
        for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
            for peer in (rule.get("from") or []) + (rule.get("to") or []):
                block = peer.get("ipBlock")
                if block:
                    prefixes.add(_net(block["cidr"]))
                    prefixes.update(_net(e) for e in block.get("except") or [])
    ctx = _Ctx(ns_map, pods, list(prefixes), ids)
    state = PolicyState()
    ipcache: dict[int, dict[Key, Value]] = {4: {}, 6: {}}
    for pfx in ctx.prefixes:
        k = IdentityKey(None, frozenset(), frozenset(), pfx)
        ipcache[pfx.version][_addr_key(pfx.prefixlen, pfx.network_address)] = (
            ctx.identities[k],)
    for p in pods:
        for address in p.addresses:
            ipcache[address.version][_addr_key(address.max_prefixlen, address)] = (
                ctx.pod_ident[(p.key, address)],)
    for h in [*host_addresses, lb_conntrack.HAIRPIN_ADDR, lb_conntrack.HAIRPIN_ADDR6]:
        ipcache[h.version][_addr_key(h.max_prefixlen, h)] = (ipcache_map.ID_HOST,)
    ipcache[6][_addr_key(LINK_LOCAL6.prefixlen, LINK_LOCAL6.network_address)] = (
        ipcache_map.ID_HOST,)
    policy: dict[Key, Value] = {}
    ep_map: dict[int, dict[Key, Value]] = {4: {}, 6: {}}
    local_set = set(local)
    local_pods: list[str] = []
    for pod in pods:
        if not local_set.intersection(pod.addresses):
            continue
        ep_id = eps.get(pod.key)
        local_pods.append(pod.key)
        for address in pod.addresses:
            state.endpoints[address] = ep_id
        flags = 0
        for n, pol in enumerate(policies):
            meta = pol.get("metadata") or {}
            if meta.get("namespace", "default") != pod.namespace:
                continue
            spec = pol.get("spec") or {}
            selector = cast(LabelSelector, spec.get("podSelector") or {})
            if not matches(selector, pod.labels):
                continue
            name = PolicyKey(f"{pod.namespace}/{meta.get('name', '')}")
            ing, egr = _policy_types(spec)
            for enabled, direction, rules, peer_field, flag in (
                    (ing, policy_rules.DIR_INGRESS, spec.get("ingress"), "from",
                     policy_endpoints.F_INGRESS_ENFORCED),
                    (egr, policy_rules.DIR_EGRESS, spec.get("egress"), "to",
                     policy_endpoints.F_EGRESS_ENFORCED)):
                if not enabled:
                    continue
                flags |= flag
                state.selecting.setdefault((ep_id, direction), []).append(name)
                for rule in rules or []:
                    peers = rule.get(peer_field) or []
                    idents = ({ipcache_map.ID_ANY} if not peers else
                              set().union(*(ctx.peer(pr, pod.namespace) for pr in peers)))
                    ports = rule.get("ports") or []
                    named = [pt for pt in ports if _is_named(pt)]
                    if direction == policy_rules.DIR_EGRESS and named \
                            and ipcache_map.ID_ANY in idents:
                        # an egress named port means a port of the destination pod: it
                        # never matches an address that is no pod, so "any peer" on a
                        # named port becomes every pod identity on its own ports
                        for ident, on in ctx.pods_by_ident.items():
                            for proto, port, bits in (e for pt in named
                                                      for e in _port_entries(pt, on)):
                                _allow(policy, n, ep_id, ident, direction, proto, port, bits)
                        ports = [pt for pt in ports if not _is_named(pt)]
                        if not ports:
                            continue
                    for ident in idents:
                        if direction == policy_rules.DIR_INGRESS:
                            named_on: list[PodInfo] = [pod]
                        else:
                            named_on = ctx.pods_by_ident.get(ident, [])
                        entries = ([(0, 0, 0)] if not ports else
                                   [e for pt in ports for e in _port_entries(pt, named_on)])
                        for proto, port, bits in entries:
                            _allow(policy, n, ep_id, ident, direction, proto, port, bits)
        if flags:
            for address in pod.addresses:
                ep_map[address.version][_addr_key(address.max_prefixlen, address)[1:]] = (
                    ep_id, flags)
    eps.retain(local_pods)
    ids.retain(k for k, i in ctx.identities.items() if i >= FIRST_IDENTITY)
    state.identities = ctx.identities
    state.maps = {ipcache_map.NAME: ipcache[4], ipcache_map.NAME6: ipcache[6],
                  policy_rules.NAME: policy, policy_endpoints.NAME: ep_map[4],
                  policy_endpoints.NAME6: ep_map[6]}
    return state
