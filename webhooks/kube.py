"""Reading StatefulSets from the Kubernetes API, for ``statefulsets/scale``
requests (a Scale carries only the replica count, not the pod template)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhooks.errors import ClusterUnavailable

log = logging.getLogger("stickyip.webhooks.kube")


class StatefulSetReader(Protocol):
    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The StatefulSet as the API serves it (JSON), or None when it does not exist."""
        ...


class KubeStatefulSets:
    """:class:`StatefulSetReader` over the official (blocking) client, in a thread."""

    def __init__(self, api: client.ApiClient, *, timeout: float = 5.0) -> None:
        self._apps = client.AppsV1Api(api)
        self._timeout = timeout

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            # Raw JSON (no model round trip): the decision code reads API field names.
            resp: Any = self._apps.read_namespaced_stateful_set(
                name, namespace, _preload_content=False, _request_timeout=self._timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise ClusterUnavailable(
                f"cannot read StatefulSet {namespace}/{name}: HTTP {e.status} {e.reason}") from e
        except Exception as e:  # urllib3 connection errors and timeouts
            raise ClusterUnavailable(
                f"cannot read StatefulSet {namespace}/{name}: {type(e).__name__}: {e}") from e
        data: dict[str, Any] = json.loads(resp.data)
        return data

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._read, namespace, name)


def from_settings() -> KubeStatefulSets | None:
    """A reader from the shared Kubernetes settings (STICKYIP_KUBE_HOST, in-cluster
    credentials, or a kubeconfig); None when none is available."""
    from plumbing.kube.client import KubeSettings, api_client

    try:
        return KubeStatefulSets(api_client(KubeSettings()))
    except Exception as e:  # no kubeconfig and not in a cluster
        log.warning("no Kubernetes API access: scale-ups through statefulsets/scale are "
                    "allowed unchecked", extra={"reason": str(e)})
        return None
