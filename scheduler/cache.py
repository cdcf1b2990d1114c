"""The scheduler's view of the cluster: nodes, pods and StatefulSets kept current by
plumbing's list+watch (:class:`plumbing.kube.watch.Reflector`, one thread per
collection), with the per-node requested resources and per-node replica counts the
decisions need, maintained incrementally.

Watch threads only hand lists and events to the event loop (``LoopSink``); every
change to the cache happens on the loop, so readers there need no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ipam.models import NodeName
from scheduler.models import (
    KubeObject,
    NodeInfo,
    PodInfo,
    PodRef,
    PodUid,
    Resources,
    StatefulSetInfo,
)
from scheduler.objects import node_from_json, pod_from_json, statefulset_from_json

PodListener = Callable[[PodInfo | None, PodInfo | None], None]
NodeListener = Callable[[NodeInfo | None, NodeInfo | None], None]
SyncListener = Callable[[str], None]


@dataclass(slots=True)
class ClusterCache:
    nodes: dict[NodeName, NodeInfo] = field(default_factory=dict)
    pods: dict[PodUid, PodInfo] = field(default_factory=dict)
    by_ref: dict[PodRef, PodUid] = field(default_factory=dict)
    statefulsets: dict[tuple[str, str], StatefulSetInfo] = field(default_factory=dict)
    used: dict[NodeName, Resources] = field(default_factory=dict)
    #: (namespace, statefulset) -> node -> replicas bound there.
    replicas: dict[tuple[str, str], dict[NodeName, int]] = field(default_factory=dict)
    #: When each node was first seen NotReady (absent while Ready).
    not_ready_since: dict[NodeName, float] = field(default_factory=dict)
    synced: set[str] = field(default_factory=set)
    #: Pods decided but whose binding the watch has not shown yet.
    assumed: dict[PodUid, NodeName] = field(default_factory=dict)
    #: node -> pods bound there (terminated pods included: they may still be stuck on
    #: a gone node), so "the pods on these nodes" never walks every pod.
    pods_on: dict[NodeName, set[PodUid]] = field(default_factory=dict)
    pod_listeners: list[PodListener] = field(default_factory=list)
    node_listeners: list[NodeListener] = field(default_factory=list)
    #: Called with the collection's name after each (re-)list reached the cache.
    sync_listeners: list[SyncListener] = field(default_factory=list)
    _node_list: list[NodeInfo] | None = None
    clock: Callable[[], float] = time.time

    # -------------------------------------------------------------- queries

    def node_list(self) -> list[NodeInfo]:
        """Nodes sorted by name (cached until a node changes)."""
        if self._node_list is None:
            self._node_list = [self.nodes[n] for n in sorted(self.nodes)]
        return self._node_list

    def pod_by_ref(self, ref: str) -> PodInfo | None:
        uid = self.by_ref.get(PodRef(ref))
        return self.pods.get(uid) if uid is not None else None

    def replicas_on(self, namespace: str, statefulset: str) -> dict[NodeName, int]:
        return self.replicas.get((namespace, statefulset), {})

    def is_synced(self, *kinds: str) -> bool:
        return all(k in self.synced for k in kinds)

    def pods_bound_to(self, node: NodeName) -> list[PodInfo]:
        return [self.pods[u] for u in sorted(self.pods_on.get(node, ())) if u in self.pods]

    def stranded_nodes(self) -> list[NodeName]:
        """Nodes that pods are bound to but that no longer exist (only meaningful once
        the node collection is synced)."""
        return sorted(n for n in self.pods_on if n not in self.nodes)

    # -------------------------------------------------------------- updates

    def _place(self, pod: PodInfo, sign: int) -> None:
        if not pod.node_name:
            return
        node = NodeName(pod.node_name)
        if sign > 0:
            self.pods_on.setdefault(node, set()).add(pod.uid)
        else:
            on = self.pods_on.get(node)
            if on is not None:
                on.discard(pod.uid)
                if not on:
                    del self.pods_on[node]

    def _account(self, pod: PodInfo, sign: int) -> None:
        self._place(pod, sign)
        if not pod.node_name or pod.terminated:
            return
        node = NodeName(pod.node_name)
        cur = self.used.get(node, Resources())
        self.used[node] = cur + pod.requests if sign > 0 else cur - pod.requests
        if pod.statefulset:
            per = self.replicas.setdefault((pod.namespace, pod.statefulset), {})
            per[node] = per.get(node, 0) + sign
            if per[node] <= 0:
                del per[node]

    def upsert_pod(self, pod: PodInfo) -> None:
        if pod.node_name:
            self.assumed.pop(pod.uid, None)
        elif pod.uid in self.assumed:
            # An update (e.g. our annotation patch) that predates the binding: keep the
            # assumption, or the pod would look pending and be decided again.
            pod.node_name = self.assumed[pod.uid]
        old = self.pods.get(pod.uid)
        if old is not None:
            self._account(old, -1)
        self.pods[pod.uid] = pod
        self.by_ref[pod.ref] = pod.uid
        self._account(pod, +1)
        for fn in self.pod_listeners:
            fn(old, pod)

    def remove_pod(self, uid: PodUid) -> None:
        self.assumed.pop(uid, None)
        old = self.pods.pop(uid, None)
        if old is None:
            return
        self._account(old, -1)
        if self.by_ref.get(old.ref) == uid:
            del self.by_ref[old.ref]
        for fn in self.pod_listeners:
            fn(old, None)

    def assume(self, uid: PodUid, node: NodeName) -> None:
        """Count a pod on ``node`` as soon as it is decided, before the binding lands."""
        pod = self.pods.get(uid)
        if pod is None or pod.node_name:
            return
        self.assumed[uid] = node
        self._account(pod, -1)
        pod.node_name = node
        self._account(pod, +1)

    def forget(self, uid: PodUid) -> None:
        """Undo ``assume`` after a failed binding (a binding the watch showed stays)."""
        node = self.assumed.pop(uid, None)
        pod = self.pods.get(uid)
        if node is None or pod is None or pod.node_name != node:
            return
        self._account(pod, -1)
        pod.node_name = ""

    def upsert_node(self, node: NodeInfo) -> None:
        old = self.nodes.get(node.name)
        self.nodes[node.name] = node
        self._node_list = None
        if node.ready:
            self.not_ready_since.pop(node.name, None)
        elif node.name not in self.not_ready_since:
            since = node.ready_since if node.ready_since > 0 else self.clock()
            self.not_ready_since[node.name] = since
        for fn in self.node_listeners:
            fn(old, node)

    def remove_node(self, name: NodeName) -> None:
        old = self.nodes.pop(name, None)
        self._node_list = None
        self.not_ready_since.pop(name, None)
        if old is not None:
            for fn in self.node_listeners:
                fn(old, None)

    def apply(self, kind: str, etype: str, obj: KubeObject) -> None:
        if kind == "nodes":
            node = node_from_json(obj)
            if etype == "DELETED":
                self.remove_node(node.name)
            else:
                self.upsert_node(node)
        elif kind == "pods":
            pod = pod_from_json(obj)
            if etype == "DELETED":
                self.remove_pod(pod.uid)
            else:
                self.upsert_pod(pod)
        elif kind == "statefulsets":
            sts = statefulset_from_json(obj)
            if etype == "DELETED":
                self.statefulsets.pop((sts.namespace, sts.name), None)
            else:
                self.statefulsets[(sts.namespace, sts.name)] = sts

    def sink(self, kind: str) -> CollectionSink:
        """The watch sink that feeds one collection (``nodes``, ``pods``,
        ``statefulsets``) into this cache."""
        return CollectionSink(self, kind)

    def replace(self, kind: str, items: list[KubeObject]) -> None:
        """A fresh list: objects missing from it were deleted while we were not watching."""
        if kind == "nodes":
            fresh = {node_from_json(o).name: o for o in items}
            for name in [n for n in self.nodes if n not in fresh]:
                self.remove_node(name)
        elif kind == "pods":
            uids = {(o.get("metadata") or {}).get("uid") for o in items}
            for uid in [u for u in self.pods if u not in uids]:
                self.remove_pod(uid)
        elif kind == "statefulsets":
            self.statefulsets.clear()
        for o in items:
            self.apply(kind, "ADDED", o)
        self.synced.add(kind)
        for fn in self.sync_listeners:
            fn(kind)


@dataclass(slots=True)
class CollectionSink:
    """One collection of a :class:`ClusterCache` as a ``plumbing.kube.watch.Sink``."""

    cache: ClusterCache
    kind: str

    def replace(self, items: list[KubeObject]) -> None:
        self.cache.replace(self.kind, items)

    def apply(self, etype: str, obj: KubeObject) -> None:
        self.cache.apply(self.kind, etype, obj)
