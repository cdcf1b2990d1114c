"""Kubernetes adapter of the service and policy features: follows Services,
EndpointSlices, Namespaces, Pods and NetworkPolicies with plumbing's one list+watch
(:class:`plumbing.kube.watch.Reflector`, one thread per collection: bookmarks, re-list
on 410, backoff) and feeds the objects, as plain JSON, to :class:`ServiceManager` and
:class:`PolicyManager` under one lock shared with the endpoint hook.

Every node runs this against the same API, so every node derives the same ipcache
(address -> identity) and policy from the same objects: that is how the ipcache is
kept in sync across nodes, without a shared identity store.

The policy computation covers every pod of the cluster, so the feed does not run it
per event: the handlers record changes and one thread computes them, at most once
per ``policy_interval`` (0.2 s) and at once after a quiet spell. A re-list of N pods
or pods starting by the hundred cost a few computations instead of one per event
(N of them, O(N) each). A local pod's own entries do not wait: the endpoint hook
computes when the pod is added (see :mod:`datapath.features.hook`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from datapath.features.policy import NamespaceInfo, PolicyManager
from datapath.features.policy.models import pod_info
from datapath.features.services import ServiceManager
from datapath.features.services.models import ServiceKey
from plumbing.kube.rest import RestClient
from plumbing.kube.watch import Mirror, Reflector, object_key

log = logging.getLogger("stickyip.datapath.features")

Handler = Callable[[str, dict[str, Any]], None]

#: the collections each feature follows, by name
PATHS = {
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "namespaces": "/api/v1/namespaces",
    "pods": "/api/v1/pods",
    "networkpolicies": "/apis/networking.k8s.io/v1/networkpolicies",
}


class KubeFeed:
    """One reflector per collection, feeding the managers under one lock."""

    def __init__(self, api: client.ApiClient, *, services: ServiceManager | None,
                 policy: PolicyManager | None, lock: threading.Lock | None = None,
                 watch_timeout_s: int = 60, policy_interval: float = 0.2) -> None:
        self.services = services
        self.policy = policy
        self.lock = lock or threading.Lock()
        self.watch_timeout_s = watch_timeout_s
        self.policy_interval = policy_interval
        #: set by the handlers when the policy has changes to compute
        self._policy_changed = threading.Event()
        #: notified after each computation of the policy (wait_synced waits on it)
        self.computed = threading.Condition()
        self._stopping = threading.Event()
        rest = RestClient(api)
        handlers: dict[str, Handler] = {}
        if services is not None:
            handlers |= {"services": self._on_service, "endpointslices": self._on_slice}
        if policy is not None:
            handlers |= {"namespaces": self._on_namespace, "pods": self._on_pod,
                         "networkpolicies": self._on_policy}
        self.reflectors = [
            Reflector(rest, PATHS[name], Mirror(self._locked(name, handler)), name=name,
                      watch_timeout=watch_timeout_s)
            for name, handler in handlers.items()]
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ handlers

    def _on_service(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.services is not None
        if kind == "DELETED":
            self.services.delete_service(ServiceKey(object_key(obj)))
        else:
            self.services.set_service(obj)  # type: ignore[arg-type]

    def _on_slice(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.services is not None
        if kind == "DELETED":
            self.services.delete_slice(obj)  # type: ignore[arg-type]
        else:
            self.services.set_slice(obj)  # type: ignore[arg-type]

    def _on_namespace(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.policy is not None
        meta = obj.get("metadata") or {}
        if kind == "DELETED":
            self.policy.delete_namespace(meta.get("name", ""), defer=True)
        else:
            self.policy.set_namespace(NamespaceInfo(meta.get("name", ""),
                                                    dict(meta.get("labels") or {})),
                                      defer=True)

    def _on_pod(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.policy is not None
        info = pod_info(obj) if kind != "DELETED" else None
        if info is None:
            self.policy.delete_pod(object_key(obj), defer=True)
        else:
            self.policy.set_pod(info, defer=True)

    def _on_policy(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.policy is not None
        if kind == "DELETED":
            self.policy.delete_policy(object_key(obj), defer=True)
        else:
            self.policy.set_policy(obj, defer=True)  # type: ignore[arg-type]

    def _locked(self, name: str, handler: Handler) -> Handler:
        def apply(kind: str, obj: dict[str, Any]) -> None:
            with self.lock:
                try:
                    handler(kind, obj)
                except Exception:
                    log.exception("cannot apply %s %s %s", kind, name, object_key(obj))
                if self.policy is not None and self.policy.pending:
                    self._policy_changed.set()
        return apply

    def _compute_policy(self) -> None:
        """The policy's one computing thread: after a change, at once when the last
        computation is ``policy_interval`` old, else when it is (changes meanwhile
        join the same computation)."""
        assert self.policy is not None
        last = -math.inf
        while True:
            self._policy_changed.wait()
            if self._stopping.is_set():
                return
            pause = last + self.policy_interval - time.monotonic()
            if pause > 0 and self._stopping.wait(pause):
                return
            self._policy_changed.clear()
            with self.lock:
                try:
                    self.policy.flush()
                except Exception:
                    log.exception("cannot compute the NetworkPolicy maps")
            last = time.monotonic()
            with self.computed:
                self.computed.notify_all()

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self._threads = [r.start() for r in self.reflectors]
        if self.policy is not None:
            t = threading.Thread(target=self._compute_policy, name="policy-compute",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def wait_synced(self, timeout: float = 10.0) -> bool:
        """Every collection listed, and the policy computed over what they hold."""
        deadline = time.monotonic() + timeout
        if not all(r.synced.wait(max(0.0, deadline - time.monotonic()))
                   for r in self.reflectors):
            return False
        policy = self.policy
        if policy is None:
            return True
        with self.computed:
            return self.computed.wait_for(lambda: not policy.pending,
                                           max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        self._policy_changed.set()
        for r in self.reflectors:
            r.stop()
        for t in self._threads:
            t.join(timeout=self.watch_timeout_s + 5)
