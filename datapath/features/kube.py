"""Kubernetes adapter of the service and policy features: follows Services,
EndpointSlices, Namespaces, Pods and NetworkPolicies with plumbing's one list+watch
(:class:`plumbing.kube.watch.Reflector`, one thread per collection: bookmarks, re-list
on 410, backoff) and feeds the objects, as plain JSON, to :class:`ServiceManager` and
:class:`PolicyManager` under one lock shared with the endpoint hook.

Every node runs this against the same API, so every node derives the same ipcache
(address -> identity) and policy from the same objects: that is how the ipcache is
kept in sync across nodes, without a shared identity store.
"""

from __future__ import annotations

import logging
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
                 watch_timeout_s: int = 60) -> None:
        self.services = services
        self.policy = policy
        self.lock = lock or threading.Lock()
        self.watch_timeout_s = watch_timeout_s
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
            self.policy.delete_namespace(meta.get("name", ""))
        else:
            self.policy.set_namespace(NamespaceInfo(meta.get("name", ""),
                                                    dict(meta.get("labels") or {})))

    def _on_pod(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.policy is not None
        info = pod_info(obj) if kind != "DELETED" else None
        if info is None:
            self.policy.delete_pod(object_key(obj))
        else:
            self.policy.set_pod(info)

    def _on_policy(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.policy is not None
        if kind == "DELETED":
            self.policy.delete_policy(object_key(obj))
        else:
            self.policy.set_policy(obj)  # type: ignore[arg-type]

    def _locked(self, name: str, handler: Handler) -> Handler:
        def apply(kind: str, obj: dict[str, Any]) -> None:
            with self.lock:
                try:
                    handler(kind, obj)
                except Exception:
                    log.exception("cannot apply %s %s %s", kind, name, object_key(obj))
        return apply

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self._threads = [r.start() for r in self.reflectors]

    def wait_synced(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.synced.wait(max(0.0, deadline - time.monotonic()))
                   for r in self.reflectors)

    def stop(self) -> None:
        for r in self.reflectors:
            r.stop()
        for t in self._threads:
            t.join(timeout=self.watch_timeout_s + 5)
