"""Controllers that make the stand-in play like a cluster: a minimal StatefulSet controller
and a "kubelet" that marks bound pods Running and Ready (``auto_ready``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from typing import Any

from kubestandin.apiserver import ApiCore, now_rfc3339
from kubestandin.errors import StandInError
from kubestandin.resources import BY_KIND
from kubestandin.selectors import match_label_selector_object
from kubestandin.store import Event, Obj, clone

log = logging.getLogger("stickyip.kubestandin")

RETRY_FIRST = 0.5  # seconds before a failed pod create is retried; doubles per failure
RETRY_MAX = 10.0

PODS = BY_KIND[("v1", "Pod")]
NODES = BY_KIND[("v1", "Node")]
STS = BY_KIND[("apps/v1", "StatefulSet")]


def pod_is_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ())


def node_is_ready(node: Obj) -> bool:
    """Ready unless a Ready condition says otherwise (a node without conditions counts)."""
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return True


def revision_hash(template: Any) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def set_pod_condition(pod: Obj, ctype: str, status: bool) -> None:
    st = pod.setdefault("status", {})
    conds = [c for c in st.get("conditions") or () if c.get("type") != ctype]
    conds.append({"type": ctype, "status": "True" if status else "False",
                  "lastTransitionTime": now_rfc3339()})
    st["conditions"] = conds


class Kubelet:
    """Pod status the way kubelets and the node lifecycle controller would write it."""

    def __init__(self, core: ApiCore, *, pod_ip_annotation: str | None = None) -> None:
        self.core = core
        self.pod_ip_annotation = pod_ip_annotation

    def set_pod_ready(self, namespace: str, name: str, ready: bool = True) -> Obj:
        pod = self.core.get(PODS, namespace, name)
        pod["status"]["phase"] = "Running" if ready or pod["status"].get("phase") == \
            "Running" else pod["status"].get("phase", "Pending")
        if ready:
            pod["status"].setdefault("startTime", now_rfc3339())
            ip = (pod["metadata"].get("annotations") or {}).get(self.pod_ip_annotation or "")
            if ip:
                pod["status"]["podIP"] = ip
                pod["status"]["podIPs"] = [{"ip": ip}]
            node = self.core.store.peek(NODES, "", pod["spec"].get("nodeName") or "")
            for addr in ((node or {}).get("status") or {}).get("addresses") or ():
                if addr.get("type") == "InternalIP":
                    pod["status"]["hostIP"] = addr["address"]
        set_pod_condition(pod, "Initialized", True)
        set_pod_condition(pod, "ContainersReady", ready)
        set_pod_condition(pod, "Ready", ready)
        return self.core.update(PODS, namespace, name, pod, "status")

    def set_pod_phase(self, namespace: str, name: str, phase: str) -> Obj:
        pod = self.core.get(PODS, namespace, name)
        pod["status"]["phase"] = phase
        if phase != "Running":
            set_pod_condition(pod, "Ready", False)
        return self.core.update(PODS, namespace, name, pod, "status")

    def set_node_ready(self, name: str, ready: bool, *, taint: bool = True) -> Obj:
        """Flip the node's Ready condition (``Unknown`` when not ready, as when its kubelet
        stops reporting); with ``taint`` also add or remove the ``unreachable`` taints and
        mark its pods not Ready, as the node lifecycle controller does."""
        node = self.core.get(NODES, "", name)
        status = node.setdefault("status", {})
        conds = [c for c in status.get("conditions") or () if c.get("type") != "Ready"]
        stamp = now_rfc3339()
        conds.append({"type": "Ready", "status": "True" if ready else "Unknown",
                      "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                      "message": "kubelet is posting ready status" if ready else
                      "Kubelet stopped posting node status.",
                      "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
        status["conditions"] = conds
        node = self.core.update(NODES, "", name, node, "status")
        if taint:
            key = "node.kubernetes.io/unreachable"
            spec = node.setdefault("spec", {})
            taints = [t for t in spec.get("taints") or () if t.get("key") != key]
            if not ready:
                taints += [{"key": key, "effect": "NoSchedule", "timeAdded": stamp},
                           {"key": key, "effect": "NoExecute", "timeAdded": stamp}]
            spec["taints"] = taints
            node = self.core.update(NODES, "", name, node)
            for pod in self.core.store.pods_on_node(name):
                if not ready and pod_is_ready(pod):
                    p = clone(pod)
                    set_pod_condition(p, "Ready", False)
                    self.core.update(PODS, p["metadata"]["namespace"], p["metadata"]["name"],
                                     p, "status")
        return node


class Controllers:
    """Runs the StatefulSet controller and the auto-ready kubelet off the store's events."""

    def __init__(self, core: ApiCore, kubelet: Kubelet, *, statefulsets: bool,
                 auto_ready: bool) -> None:
        self.core = core
        self.kubelet = kubelet
        self.statefulsets = statefulsets
        self.auto_ready = auto_ready
        self._dirty: set[tuple[str, str]] = set()
        self._backoff: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Event] | None = None
        self.idle = asyncio.Event()

    def start(self) -> None:
        self._queue = self.core.store.subscribe()
        self._task = asyncio.create_task(self._run(), name="kubestandin-controllers")

    def is_idle(self) -> bool:
        """True when every change so far has been handled and no work is pending."""
        return self.idle.is_set() and self._queue is not None and self._queue.empty() \
            and not self._dirty

    async def stop(self) -> None:
        if self._queue is not None:
            self.core.store.unsubscribe(self._queue)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._queue is not None
        for pod in list(self.core.store.iter(PODS)):
            self._kubelet_pod(pod)
        for sts in list(self.core.store.iter(STS)):
            self._dirty.add((sts["metadata"]["namespace"], sts["metadata"]["name"]))
        while True:
            if not self._dirty:
                if self._queue.empty():
                    self.idle.set()
                self._handle(await self._queue.get())
                self.idle.clear()
                continue
            while not self._queue.empty():
                self._handle(self._queue.get_nowait())
            ns, name = self._dirty.pop()
            try:
                await self._reconcile(ns, name)
            except StandInError as e:
                # Raced with a writer (409) or the object went away (404): the event
                # that caused the race queues the work again.
                log.debug("statefulset %s/%s reconcile: %s", ns, name, e)

    def _handle(self, ev: Event) -> None:
        try:
            self._on_event(ev)
        except StandInError as e:
            log.debug("controller event handling raced: %s", e)

    def _on_event(self, ev: Event) -> None:
        if ev.resource == STS:
            self._dirty.add((ev.obj["metadata"]["namespace"], ev.obj["metadata"]["name"]))
        elif ev.resource == PODS:
            if ev.type != "DELETED":
                self._kubelet_pod(ev.obj)
            for ref in ev.obj["metadata"].get("ownerReferences") or ():
                if ref.get("controller") and ref.get("kind") == "StatefulSet":
                    self._dirty.add((ev.obj["metadata"]["namespace"], ref.get("name", "")))
        elif ev.resource == NODES and ev.type != "DELETED" and \
                (self.auto_ready or self.core.graceful_deletion) and \
                node_is_ready(ev.obj) and (ev.old is None or not node_is_ready(ev.old)):
            for pod in self.core.store.pods_on_node(ev.obj["metadata"]["name"]):
                self._kubelet_pod(pod)

    def _kubelet_pod(self, pod: Obj) -> None:
        node_name = pod["spec"].get("nodeName")
        if pod["metadata"].get("deletionTimestamp"):
            # A live kubelet stops the containers and confirms the deletion at once.
            node = self.core.store.peek(NODES, "", node_name or "")
            if self.core.graceful_deletion and not pod["metadata"].get("finalizers") and \
                    node is not None and node_is_ready(node):
                self.core.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"],
                                 {"gracePeriodSeconds": 0})
            return
        if not self.auto_ready:
            return
        if not node_name or pod_is_ready(pod):
            return
        if pod["status"].get("phase") not in ("Pending", "Running"):
            return
        node = self.core.store.peek(NODES, "", node_name)
        if node is None or not node_is_ready(node):
            return
        self.kubelet.set_pod_ready(pod["metadata"]["namespace"], pod["metadata"]["name"])

    # ---------------------------------------------------- StatefulSet
    async def _reconcile(self, ns: str, name: str) -> None:
        if not self.statefulsets:
            return
        sts = self.core.store.get(STS, ns, name)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return
        spec = sts["spec"]
        uid = sts["metadata"]["uid"]
        replicas = int(spec.get("replicas", 1))
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        template = spec.get("template") or {}
        revision = f"{name}-{revision_hash(template)}"
        pattern = re.compile(rf"^{re.escape(name)}-(\d+)$")
        pods: dict[int, Obj] = {}
        for res, pod in self.core.store.owned_by(uid):
            m = pattern.match(pod["metadata"]["name"])
            if res == PODS and m and _controller_uid(pod) == uid:
                pods[int(m.group(1))] = pod

        await self._scale(sts, pods, replicas, ordered, revision)
        self._update_status(sts, revision)

    async def _scale(self, sts: Obj, pods: dict[int, Obj], replicas: int, ordered: bool,
                     revision: str) -> None:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        for ordinal in range(replicas):
            pod = pods.get(ordinal)
            if pod is None:
                pod = await self._create_pod(sts, ordinal, revision)
                if pod is None or ordered:
                    return
                continue
            if pod["status"].get("phase") in ("Failed", "Succeeded") and \
                    not pod["metadata"].get("deletionTimestamp"):
                self.core.delete(PODS, ns, pod["metadata"]["name"])
                return
            if ordered and (not pod_is_ready(pod) or pod["metadata"].get("deletionTimestamp")):
                return
        condemned = sorted((o for o in pods if o >= replicas), reverse=True)
        for ordinal in condemned:
            pod = pods[ordinal]
            if pod["metadata"].get("deletionTimestamp"):
                if ordered:
                    return
                continue
            if ordered and any(not pod_is_ready(p) for o, p in pods.items() if o < ordinal):
                return
            log.debug("statefulset %s/%s: deleting %s", ns, name, pod["metadata"]["name"])
            self.core.delete(PODS, ns, pod["metadata"]["name"])
            if ordered:
                return

    async def _create_pod(self, sts: Obj, ordinal: int, revision: str) -> Obj | None:
        meta, spec = sts["metadata"], sts["spec"]
        template = clone(spec.get("template") or {})
        tmeta = template.get("metadata") or {}
        pod_name = f"{meta['name']}-{ordinal}"
        labels = dict(tmeta.get("labels") or {})
        labels.update({"statefulset.kubernetes.io/pod-name": pod_name,
                       "apps.kubernetes.io/pod-index": str(ordinal),
                       "controller-revision-hash": revision})
        pod_spec = template.get("spec") or {}
        pod_spec["hostname"] = pod_name
        if spec.get("serviceName"):
            pod_spec["subdomain"] = spec["serviceName"]
        pod: Obj = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod_name, "namespace": meta["namespace"], "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "name": meta["name"],
                    "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": pod_spec,
        }
        if not match_label_selector_object((spec.get("selector") or {}), labels):
            log.warning("statefulset %s/%s: template labels do not match its selector",
                        meta["namespace"], meta["name"])
            return None
        key = (meta["namespace"], meta["name"])
        try:
            created = await self.core.create(PODS, pod, meta["namespace"])
        except StandInError as e:
            # e.g. an admission webhook denied it: record an Event and retry with backoff,
            # as the real controller's rate-limited work queue does.
            self._record_event(sts, "FailedCreate",
                               f"create Pod {pod_name} in StatefulSet {meta['name']} "
                               f"failed error: {e.message}", "Warning")
            delay = self._backoff.get(key, RETRY_FIRST)
            self._backoff[key] = min(delay * 2, RETRY_MAX)
            asyncio.get_running_loop().call_later(delay, self._retry, sts)
            return None
        self._backoff.pop(key, None)
        return created

    def _retry(self, sts: Obj) -> None:
        if self._queue is not None:
            self._queue.put_nowait(Event("RESYNC", 0, STS, sts, None))

    def _update_status(self, sts: Obj, revision: str) -> None:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        uid = sts["metadata"]["uid"]
        owned = [p for res, p in self.core.store.owned_by(uid)
                 if res == PODS and _controller_uid(p) == uid]
        ready = sum(1 for p in owned if pod_is_ready(p))
        status = dict(sts.get("status") or {})
        status.update({
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(owned), "readyReplicas": ready, "availableReplicas": ready,
            "currentReplicas": len(owned), "updatedReplicas": len(owned),
            "currentRevision": revision, "updateRevision": revision,
            "collisionCount": 0,
        })
        if status != sts.get("status"):
            fresh = self.core.store.get(STS, ns, name)
            if fresh is not None:
                fresh["status"] = status
                self.core.update(STS, ns, name, fresh, "status")

    def _record_event(self, obj: Obj, reason: str, message: str, etype: str) -> None:
        """Record an Event; a repeat of the same one bumps its count, as the client-go
        event recorder aggregates them."""
        meta = obj["metadata"]
        events = BY_KIND[("v1", "Event")]
        digest = hashlib.sha256(f"{meta['uid']}/{reason}/{message}".encode()).hexdigest()
        name = f"{meta['name']}.{digest[:16]}"
        existing = self.core.store.get(events, meta["namespace"], name)
        if existing is not None:
            existing["count"] = int(existing.get("count") or 1) + 1
            existing["lastTimestamp"] = now_rfc3339()
            self.core.update(events, meta["namespace"], name, existing)
            return
        event: Obj = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta["uid"]},
            "reason": reason, "message": message, "type": etype,
            "source": {"component": "statefulset-controller"},
            "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(), "count": 1,
        }
        self.core._commit_create(events, self.core._prepare_create(events, event,
                                                                   meta["namespace"]))
