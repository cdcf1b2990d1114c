"""Keeps the policy maps equal to the computation over the pods, namespaces and
NetworkPolicies it is told about, writing only changed entries, and reports denied
packets per policy."""

from __future__ import annotations

import ipaddress
import logging

from datapath.features.policy.compute import (
    FIRST_IDENTITY,
    MAP_ORDER,
    Allocator,
    PolicyState,
    compute,
)
from datapath.features.policy.models import NamespaceInfo, NetworkPolicyObject, PodInfo, PolicyKey
from datapath.maps import policy_denied
from datapath.maps.state import MapOps, MapState, MapWriter, apply, diff

log = logging.getLogger("stickyip.datapath.features.policy")


class PolicyManager:
    def __init__(self, writer: MapWriter, *,
                 host_addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None
                 ) -> None:
        self.writer = writer
        self.host_addresses = host_addresses or []
        self.namespaces: dict[str, NamespaceInfo] = {}
        self.pods: dict[str, PodInfo] = {}
        self.policies: dict[str, NetworkPolicyObject] = {}
        self.local: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self.applied: MapState = {}
        self.state = PolicyState()
        self._identities = Allocator(FIRST_IDENTITY)
        self._endpoints = Allocator(1)

    # ------------------------------------------------------------ events

    def set_namespace(self, ns: NamespaceInfo) -> MapOps:
        self.namespaces[ns.name] = ns
        return self.sync()

    def delete_namespace(self, name: str) -> MapOps:
        self.namespaces.pop(name, None)
        return self.sync()

    def set_pod(self, pod: PodInfo) -> MapOps:
        self.pods[pod.key] = pod
        return self.sync()

    def delete_pod(self, key: str) -> MapOps:
        self.pods.pop(key, None)
        return self.sync()

    def set_policy(self, obj: NetworkPolicyObject) -> MapOps:
        meta = obj.get("metadata") or {}
        self.policies[f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"] = obj
        return self.sync()

    def delete_policy(self, key: str) -> MapOps:
        self.policies.pop(key, None)
        return self.sync()

    def set_local(self, addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address]
                  ) -> MapOps:
        self.local = set(addresses)
        return self.sync()

    # ------------------------------------------------------------ sync

    def sync(self) -> MapOps:
        self.state = compute(policies=[self.policies[k] for k in sorted(self.policies)],
                             namespaces=list(self.namespaces.values()),
                             pods=list(self.pods.values()), local=self.local,
                             host_addresses=self.host_addresses,
                             identities=self._identities, endpoint_ids=self._endpoints)
        ops = diff(self.applied, self.state.maps, order=MAP_ORDER)
        apply(self.writer, ops)
        self.applied = self.state.maps
        if ops:
            log.debug("policy: %d map writes", len(ops))
        return ops

    def reconcile(self) -> MapOps:
        actual: MapState = {name: dict(self.writer.items(name)) for name in MAP_ORDER}
        ops = diff(actual, self.applied, order=MAP_ORDER)
        apply(self.writer, ops)
        return ops

    def denied(self) -> dict[PolicyKey, int]:
        """Denied packets per policy: a packet dropped at an endpoint counts for every
        policy selecting that endpoint in that direction."""
        out: dict[PolicyKey, int] = {}
        for (ep_id, direction), (packets,) in self.writer.items(policy_denied.NAME):
            for name in self.state.selecting.get((ep_id, direction), []):
                out[name] = out.get(name, 0) + packets
        return out
