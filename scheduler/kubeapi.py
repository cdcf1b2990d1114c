"""The scheduler's only door to the Kubernetes API: raw JSON REST and watch calls
through the official client's ``ApiClient`` (its configuration, TLS and auth),
with HTTP errors translated once into scheduler errors. Blocking: callers run it
in threads (``asyncio.to_thread``)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from scheduler.errors import Conflict, KubeUnavailable, NotFound, SchedulerError
from scheduler.models import KubeObject

log = logging.getLogger("stickyip.scheduler.kube")

#: Collections the scheduler lists and watches, by short name.
PATHS = {
    "nodes": "/api/v1/nodes",
    "pods": "/api/v1/pods",
    "statefulsets": "/apis/apps/v1/statefulsets",
}


class Gone(SchedulerError):
    """A watch's resourceVersion is too old (HTTP 410): list again."""


def now_rfc3339(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.now(UTC).strftime(fmt)


def _translate(e: ApiException, what: str) -> SchedulerError:
    body = ""
    try:
        body = json.loads(e.body or "{}").get("message", "") if e.body else ""
    except (ValueError, AttributeError):
        body = str(e.body)
    msg = f"{what}: {body or e.reason}"
    if e.status == 409:
        return Conflict(msg)
    if e.status == 404:
        return NotFound(msg)
    if e.status == 410:
        return Gone(msg)
    return KubeUnavailable(f"{msg} (HTTP {e.status})")


class KubeApi:
    def __init__(self, api_client: client.ApiClient, *, timeout: float = 10.0) -> None:
        self.api = api_client
        self.timeout = timeout
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self._closing = False

    def _call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
              body: Any = None, content_type: str | None = None,
              stream: bool = False, timeout: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        q = [(k, v if not isinstance(v, bool) else str(v).lower())
             for k, v in (query or {}).items() if v is not None]
        try:
            req = self.api.param_serialize(method=method, resource_path=path, query_params=q,
                                           header_params=headers, body=body,
                                           auth_settings=["BearerToken"])
            resp = self.api.call_api(*req, _request_timeout=timeout or self.timeout)
        except ApiException as e:
            raise _translate(e, f"{method} {path}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubeUnavailable(f"{method} {path}: {e}") from e
        raw = resp.response
        if not 200 <= resp.status <= 299:
            data = raw.data
            raise _translate(ApiException(status=resp.status, reason=resp.reason,
                                          body=data.decode() if data else ""),
                             f"{method} {path}")
        if stream:
            return raw
        return json.loads(raw.data or b"{}")

    # ----------------------------------------------------------- list, watch

    def list(self, kind: str) -> tuple[list[KubeObject], str]:
        doc = self._call("GET", PATHS[kind], timeout=max(self.timeout, 60.0))
        return list(doc.get("items") or []), str((doc.get("metadata") or {}).get(
            "resourceVersion", ""))

    def watch(self, kind: str, resource_version: str, *, timeout: int
              ) -> Iterator[tuple[str, KubeObject]]:
        """Yield (type, object) from ``resource_version`` until the server ends the
        stream. BOOKMARK events are yielded (their object carries only the version).
        Raises Gone on 410 (stream error or HTTP status)."""
        resp = self._call("GET", PATHS[kind], stream=True, timeout=(5.0, timeout + 15.0),
                          query={"watch": True, "resourceVersion": resource_version,
                                 "allowWatchBookmarks": True, "timeoutSeconds": timeout})
        with self._lock:
            self._open.add(resp)
            if self._closing:
                resp._stickyip_closed = True
                resp.close()
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if not line:
                    continue
                event = json.loads(line)
                etype, obj = event.get("type", ""), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", "resource version too old"))
                    raise KubeUnavailable(f"watch {kind}: {obj.get('message', obj)}")
                yield etype, obj
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            if not getattr(resp, "_stickyip_closed", False):
                raise KubeUnavailable(f"watch {kind}: {e}") from e
        finally:
            with self._lock:
                self._open.discard(resp)
            resp.release_conn()

    def close_watches(self) -> None:
        """End every open watch stream (used on shutdown, from another thread)."""
        with self._lock:
            self._closing = True
            streams = list(self._open)
        for resp in streams:
            resp._stickyip_closed = True
            try:
                resp.shutdown()
            except (AttributeError, OSError):
                resp.close()

    # ------------------------------------------------------------------ pods

    def get(self, path: str) -> KubeObject:
        result: KubeObject = self._call("GET", path)
        return result

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        self._call("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body=body)

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str],
                     *, uid: str) -> KubeObject:
        patch = {"metadata": {"uid": uid, "annotations": annotations}}
        result: KubeObject = self._call(
            "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", body=patch,
            content_type="application/merge-patch+json")
        return result

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
        result: KubeObject = self._call("POST", self.lease_path(namespace), body=body)
        return result

    def replace_lease(self, namespace: str, name: str, body: KubeObject) -> KubeObject:
        result: KubeObject = self._call("PUT", self.lease_path(namespace, name), body=body)
        return result

