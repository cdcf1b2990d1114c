"""Keeps the policy maps equal to the computation over the pods, namespaces and
NetworkPolicies it is told about, writing only changed entries, and reports denied
packets per policy.

The computation covers every pod of the cluster (the ipcache holds them all), so it
runs only when an input changed: most pod events (scheduled, bound, Ready, a pod
without an address yet) change nothing it reads, and once computed, an unchanged
input is not computed again. A change given with ``defer=True`` is only recorded
(:attr:`PolicyManager.pending`) and computed by the next :meth:`PolicyManager.flush`
or sync: the Kubernetes feed computes a burst of changes once
(:class:`datapath.features.kube.KubeFeed`)."""

from __future__ import annotations

import copy
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
        #: syncs run (the computation); the first one always runs (it writes the
        #: host and world entries even with no pod)
        self.syncs = 0
        #: inputs changed (``defer=True``) since the last computation
        self.pending = False

    # ------------------------------------------------------------ events

    def set_namespace(self, ns: NamespaceInfo, *, defer: bool = False) -> MapOps:
        changed = self.namespaces.get(ns.name) != ns
        self.namespaces[ns.name] = ns
        return self._sync_if(changed, defer)

    def delete_namespace(self, name: str, *, defer: bool = False) -> MapOps:
        return self._sync_if(self.namespaces.pop(name, None) is not None, defer)

    def set_pod(self, pod: PodInfo, *, defer: bool = False) -> MapOps:
        changed = self.pods.get(pod.key) != pod
        self.pods[pod.key] = pod
        return self._sync_if(changed, defer)

    def delete_pod(self, key: str, *, defer: bool = False) -> MapOps:
        return self._sync_if(self.pods.pop(key, None) is not None, defer)

    def set_policy(self, obj: NetworkPolicyObject, *, defer: bool = False) -> MapOps:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"
        changed = self.policies.get(key) != obj
        # a copy: a caller changing its object in place and setting it again is a change
        self.policies[key] = copy.deepcopy(obj)
        return self._sync_if(changed, defer)

    def delete_policy(self, key: str, *, defer: bool = False) -> MapOps:
        return self._sync_if(self.policies.pop(key, None) is not None, defer)

    def set_local(self, addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address]
                  ) -> MapOps:
        changed = self.local != set(addresses)
        self.local = set(addresses)
        return self._sync_if(changed, False)

    def _sync_if(self, changed: bool, defer: bool) -> MapOps:
        """The computation is a function of the inputs above: unchanged, it would give
        the maps already applied. Not deferred, it covers what is pending too."""
        due = changed or not self.syncs
        if defer:
            self.pending = self.pending or due
            return MapOps()
        return self.sync() if due or self.pending else MapOps()

    def flush(self) -> MapOps:
        """Compute what deferred changes left pending (nothing when none are)."""
        return self.sync() if self.pending else MapOps()

    # ------------------------------------------------------------ sync

    def sync(self) -> MapOps:
        self.syncs += 1
        self.pending = False
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
