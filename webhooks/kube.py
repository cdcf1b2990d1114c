"""Reading StatefulSets from the Kubernetes API, for ``statefulsets/scale``
requests (a Scale carries only the replica count, not the pod template)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from kubernetes import client

from plumbing.kube import errors
from plumbing.kube.client import KubeSettings, api_client
from webhooks.errors import ClusterUnavailable

log = logging.getLogger("stickyip.webhooks.kube")


class StatefulSetReader(Protocol):
    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The StatefulSet as the API serves it (JSON), or None when it does not exist."""
        ...


class KubeStatefulSets:
    """:class:`StatefulSetReader` over the official (blocking) client, in a thread."""

    def __init__(self, api: client.ApiClient, *, timeout: float = 5.0) -> None:
        # Short: the API server gives the whole admission call 5 s in the manifests.
        self._apps = client.AppsV1Api(api)
        self._timeout = timeout

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with errors.translated(f"cannot read StatefulSet {namespace}/{name}"):
                # Raw JSON (no model round trip): the decision code reads API field names.
                resp: Any = self._apps.read_namespaced_stateful_set(
                    name, namespace, _preload_content=False, _request_timeout=self._timeout)
        except errors.NotFound:
            return None
        except errors.KubeError as e:
            raise ClusterUnavailable(str(e)) from e
        data: dict[str, Any] = json.loads(resp.data)
        return data

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._read, namespace, name)


def from_settings(settings: KubeSettings, *, timeout: float = 5.0) -> KubeStatefulSets | None:
    """A reader from the shared Kubernetes settings (STICKYIP_KUBE_HOST, in-cluster
    credentials, or a kubeconfig), whose requests give up after ``timeout`` seconds.
    None, with a warning, when none is configured at all; a configuration that is
    given but unusable raises ``ConfigError``."""
    try:
        return KubeStatefulSets(api_client(settings), timeout=timeout)
    except errors.NoCredentials as e:
        log.warning("no Kubernetes API access: scale-ups through statefulsets/scale are "
                    "allowed unchecked (give credentials, or --no-kube to say so)",
                    extra={"reason": str(e)})
        return None
