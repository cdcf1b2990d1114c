"""Kubernetes adapter of the service and policy features: lists and watches Services,
EndpointSlices, Namespaces, Pods and NetworkPolicies with the official client (one
thread per resource, relisting after 410 Gone or a broken stream) and feeds the
objects, as plain JSON, to :class:`ServiceManager` and :class:`PolicyManager`.

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

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from datapath.features.policy import NamespaceInfo, PolicyManager
from datapath.features.policy.models import pod_info
from datapath.features.services import ServiceManager
from datapath.features.services.models import ServiceKey

log = logging.getLogger("stickyip.datapath.features")

Handler = Callable[[str, dict[str, Any]], None]


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


class KubeFeed:
    """List+watch loops feeding the managers under one lock."""

    def __init__(self, api: client.ApiClient, *, services: ServiceManager | None,
                 policy: PolicyManager | None, lock: threading.Lock | None = None,
                 watch_timeout_s: int = 60) -> None:
        self.api = api
        self.services = services
        self.policy = policy
        self.lock = lock or threading.Lock()
        self.watch_timeout_s = watch_timeout_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._synced: dict[str, threading.Event] = {}
        self._known: dict[str, dict[str, dict[str, Any]]] = {}
        self._watches: list[watch.Watch] = []
        core = client.CoreV1Api(api)
        self.resources: list[tuple[str, Callable[..., Any], Handler]] = []
        if services is not None:
            self.resources += [
                ("services", core.list_service_for_all_namespaces, self._on_service),
                ("endpointslices",
                 client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces,
                 self._on_slice)]
        if policy is not None:
            self.resources += [
                ("namespaces", core.list_namespace, self._on_namespace),
                ("pods", core.list_pod_for_all_namespaces, self._on_pod),
                ("networkpolicies",
                 client.NetworkingV1Api(api).list_network_policy_for_all_namespaces,
                 self._on_policy)]

    # ------------------------------------------------------------ handlers

    def _on_service(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.services is not None
        if kind == "DELETED":
            self.services.delete_service(ServiceKey(_key(obj)))
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
            self.policy.delete_pod(_key(obj))
        else:
            self.policy.set_pod(info)

    def _on_policy(self, kind: str, obj: dict[str, Any]) -> None:
        assert self.policy is not None
        if kind == "DELETED":
            self.policy.delete_policy(_key(obj))
        else:
            self.policy.set_policy(obj)  # type: ignore[arg-type]

    # ------------------------------------------------------------ loops

    def start(self) -> None:
        for name, fn, handler in self.resources:
            self._synced[name] = threading.Event()
            t = threading.Thread(target=self._loop, args=(name, fn, handler),
                                 name=f"kubefeed-{name}", daemon=True)
            self._threads.append(t)
            t.start()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(ev.wait(max(0.0, deadline - time.monotonic()))
                   for ev in self._synced.values())

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()  # type: ignore[no-untyped-call]
        for t in self._threads:
            t.join(timeout=self.watch_timeout_s + 5)

    def _apply(self, name: str, handler: Handler, kind: str, obj: dict[str, Any]) -> None:
        known = self._known.setdefault(name, {})
        if kind == "DELETED":
            known.pop(_key(obj), None)
        else:
            known[_key(obj)] = obj
        with self.lock:
            try:
                handler(kind, obj)
            except Exception:
                log.exception("cannot apply %s %s %s", kind, name, _key(obj))

    def _relist(self, name: str, fn: Callable[..., Any], handler: Handler) -> str:
        listed = fn()
        items = self.api.sanitize_for_serialization(  # type: ignore[no-untyped-call]
            listed).get("items") or []
        fresh = {_key(o): o for o in items}
        for key, old in list(self._known.get(name, {}).items()):
            if key not in fresh:
                self._apply(name, handler, "DELETED", old)
        for obj in items:
            self._apply(name, handler, "ADDED", obj)
        self._synced[name].set()
        return str(listed.metadata.resource_version or "")

    def _loop(self, name: str, fn: Callable[..., Any], handler: Handler) -> None:
        backoff = 0.2
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._relist(name, fn, handler)
                w = watch.Watch()  # type: ignore[no-untyped-call]
                self._watches.append(w)
                try:
                    for ev in w.stream(  # type: ignore[no-untyped-call]
                            fn, resource_version=rv, allow_watch_bookmarks=True,
                            timeout_seconds=self.watch_timeout_s):
                        if self._stop.is_set():
                            break
                        kind, obj = ev["type"], ev["raw_object"]
                        if kind == "ERROR":
                            rv = ""  # expired: relist
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if kind != "BOOKMARK":
                            self._apply(name, handler, kind, obj)
                finally:
                    self._watches.remove(w)
                backoff = 0.2
            except ApiException as e:
                if e.status == 410:
                    rv = ""
                    continue
                log.warning("watch %s: %s", name, e.reason)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as e:  # broken connection: retry from the last version
                if self._stop.is_set():
                    break
                log.warning("watch %s: %s", name, e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

