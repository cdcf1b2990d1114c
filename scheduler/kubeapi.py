"""The scheduler's requests to the Kubernetes API: the collections it watches, and
bind, annotate, delete, Events and Leases, as raw JSON through plumbing's
:class:`~plumbing.kube.rest.RestClient` (errors are ``plumbing.kube.errors``).
Blocking: callers run it in threads (``asyncio.to_thread``)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from plumbing.kube.errors import NotFound
from plumbing.kube.rest import RestClient
from plumbing.kube.watch import Reflector, Sink
from scheduler.models import KubeObject

#: Collections the scheduler lists and watches, by short name.
PATHS = {
    "nodes": "/api/v1/nodes",
    "pods": "/api/v1/pods",
    "statefulsets": "/apis/apps/v1/statefulsets",
}


def now_rfc3339(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.now(UTC).strftime(fmt)


class KubeApi:
    def __init__(self, api_client: client.ApiClient, *, timeout: float = 10.0) -> None:
        self.rest = RestClient(api_client, timeout=timeout)

    def _call(self, method: str, path: str, *, body: Any = None,
              content_type: str | None = None) -> KubeObject:
        return self.rest.request(method, path, body=body, content_type=content_type)

    # ----------------------------------------------------------- list, watch

    def list(self, kind: str) -> tuple[list[KubeObject], str]:
        return self.rest.list(PATHS[kind])

    def revision(self, kind: str) -> str:
        """The API server's current resourceVersion, as a one-item list of ``kind``
        answers it (a consistent read: the newest committed change)."""
        doc = self.rest.request("GET", PATHS[kind], query={"limit": 1})
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def reflector(self, kind: str, sink: Sink, *, watch_timeout: int = 300,
                  resource_version: str = "") -> Reflector:
        """List+watch of one collection feeding ``sink`` (not started)."""
        return Reflector(self.rest, PATHS[kind], sink, name=kind, watch_timeout=watch_timeout,
                         resource_version=resource_version)

    # ------------------------------------------------------------------ pods

    def get(self, path: str) -> KubeObject:
        return self._call("GET", path)

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        self._call("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body=body)

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str],
                     *, uid: str) -> KubeObject:
        patch = {"metadata": {"uid": uid, "annotations": annotations}}
        return self._call("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", body=patch,
                          content_type="application/merge-patch+json")

    def delete_pod(self, namespace: str, name: str, *, uid: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions",
                "preconditions": {"uid": uid}, "gracePeriodSeconds": 0}
        with contextlib.suppress(NotFound):
            self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)

    def event(self, obj: KubeObject, *, reason: str, message: str, kind: str = "Pod",
              etype: str = "Warning", component: str = "stickyip-scheduler") -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        now = now_rfc3339()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'obj')}.", "namespace": ns},
            "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": kind,
                               "name": meta.get("name", ""), "namespace": ns,
                               "uid": meta.get("uid", ""),
                               "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason, "message": message[:1024], "type": etype,
            "source": {"component": component}, "reportingComponent": component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        self._call("POST", f"/api/v1/namespaces/{ns}/events", body=body)

    # ---------------------------------------------------------------- leases

    def lease_path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    def get_lease(self, namespace: str, name: str) -> KubeObject | None:
        try:
            return self.get(self.lease_path(namespace, name))
        except NotFound:
            return None

    def create_lease(self, namespace: str, body: KubeObject) -> KubeObject:
        return self._call("POST", self.lease_path(namespace), body=body)

    def replace_lease(self, namespace: str, name: str, body: KubeObject) -> KubeObject:
        return self._call("PUT", self.lease_path(namespace, name), body=body)

