"""Raw JSON requests to the Kubernetes API through the official client's ``ApiClient``
(its configuration, TLS, authentication and connection pool), for code that reads API
field names directly instead of the generated models (cheaper for thousands of pods).

Every failure is raised as a :class:`plumbing.kube.errors.KubeError`. Blocking: call it
from a thread (``asyncio.to_thread``) in asyncio code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from plumbing.kube import errors

__all__ = ["Obj", "RestClient", "Stream"]

Obj = dict[str, Any]


class Stream:
    """An open streaming response (a watch): iterate its decoded JSON lines; ``close()``
    from any thread ends the iteration quietly."""

    def __init__(self, resp: Any, what: str) -> None:
        self._resp = resp
        self._what = what
        self.closed = False

    def __iter__(self) -> Iterator[Obj]:
        try:
            with errors.translated(self._what):
                for line in iter_resp_lines(self._resp):  # type: ignore[no-untyped-call]
                    if self.closed:
                        return
                    if line:
                        yield json.loads(line)
        except (errors.KubeError, ValueError) as e:
            if self.closed:
                return
            if isinstance(e, ValueError):
                raise errors.Unavailable(f"{self._what}: not a JSON event: {e}") from e
            raise
        finally:
            self._resp.release_conn()

    def close(self) -> None:
        self.closed = True
        try:
            # Unblocks a read in progress in another thread (urllib3 >= 2.3).
            self._resp.shutdown()
        except (AttributeError, OSError):
            self._resp.close()


class RestClient:
    """JSON over the Kubernetes REST API; ``path`` is the API path (``/api/v1/pods``)."""

    def __init__(self, api: client.ApiClient, *, timeout: float = 10.0) -> None:
        self.api = api
        self.timeout = timeout

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def _send(self, method: str, path: str, *, query: dict[str, Any] | None,
              body: Any, content_type: str | None, timeout: Any) -> Any:
        what = f"{method} {path}"
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, str(v).lower() if isinstance(v, bool) else v)
                  for k, v in (query or {}).items() if v is not None]
        with errors.translated(what):
            req = self.api.param_serialize(method=method, resource_path=path,
                                           query_params=params, header_params=headers,
                                           body=body, auth_settings=["BearerToken"])
            resp = self.api.call_api(*req, _request_timeout=timeout or self.timeout)
        raw = resp.response
        if not 200 <= resp.status <= 299:
            data = raw.data
            raw.release_conn()
            raise errors.from_status(resp.status, data, what, reason=str(resp.reason or ""))
        return raw

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str | None = None,
                timeout: float | None = None) -> Obj:
        """One request; the decoded JSON answer (``{}`` for an empty one)."""
        raw = self._send(method, path, query=query, body=body, content_type=content_type,
                         timeout=timeout)
        try:
            decoded = json.loads(raw.data or b"{}")
        except ValueError as e:
            raise errors.Unavailable(f"{method} {path}: the answer is not JSON") from e
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    def get(self, path: str) -> Obj:
        return self.request("GET", path)

    def list(self, path: str, *, label_selector: str | None = None,
             field_selector: str | None = None, page_size: int = 500,
             timeout: float | None = None) -> tuple[list[Obj], str]:
        """Every object of a collection, fetched in pages of ``page_size`` (0: one
        request), and the list's resourceVersion (where a watch resumes)."""
        items: list[Obj] = []
        cont: str | None = None
        rv = ""
        while True:
            doc = self.request("GET", path, timeout=timeout or max(self.timeout, 60.0),
                               query={"labelSelector": label_selector,
                                      "fieldSelector": field_selector,
                                      "limit": page_size or None, "continue": cont})
            items.extend(doc.get("items") or [])
            meta = doc.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")
            cont = meta.get("continue") or None
            if not cont:
                return items, rv

    def watch(self, path: str, resource_version: str, *, timeout_seconds: int,
              label_selector: str | None = None, field_selector: str | None = None,
              bookmarks: bool = True) -> Stream:
        """Open a watch from ``resource_version``; the server ends it after
        ``timeout_seconds`` (the read timeout allows for that plus a margin)."""
        raw = self._send("GET", path, body=None, content_type=None,
                         timeout=(min(self.timeout, 10.0), timeout_seconds + 15.0),
                         query={"watch": True, "resourceVersion": resource_version,
                                "allowWatchBookmarks": bookmarks,
                                "timeoutSeconds": timeout_seconds,
                                "labelSelector": label_selector,
                                "fieldSelector": field_selector})
        return Stream(raw, f"watch {path}")

    def wait_ready(self, timeout: float) -> Obj:
        """``GET /version`` until the API server answers, for at most ``timeout``
        seconds: its version info, or the last error (``Unavailable`` when it never
        answered). An answer that refuses us (401, 403, ...) is raised at once."""
        deadline = time.monotonic() + timeout
        pause = 0.2
        while True:
            try:
                return self.request("GET", "/version",
                                    timeout=max(0.5, min(self.timeout, timeout)))
            except errors.Unavailable as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.Unavailable(
                        f"the Kubernetes API server at {errors.redact(self.host)} did not "
                        f"answer within {timeout:g}s: {e.detail}", status=e.status,
                        reason=e.reason, detail=e.detail) from e
                time.sleep(min(pause, left))
                pause = min(pause * 2, 5.0)
