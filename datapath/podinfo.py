"""Pod lookups through the Kubernetes API (when the agent runs with ``kube``): which
StatefulSet and ordinal a pod belongs to and which pool it asks for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from datapath.errors import TryAgain
from ipam import RedisIpam, ReservationKey

if TYPE_CHECKING:
    from plumbing.kube.client import KubeSettings

PodLookup = Callable[[str, str], Awaitable[tuple[ReservationKey, str | None] | None]]


def sticky_key_of(pod: dict[str, Any]) -> tuple[ReservationKey, str | None] | None:
    """Pure: the reservation key and pool of a pod object (None unless it is an
    opted-in StatefulSet pod)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get("stickyip.io/fixed-ip") != "true":
        return None
    owner = next((o for o in meta.get("ownerReferences") or []
                  if o.get("kind") == "StatefulSet"), None)
    if owner is None:
        return None
    name = str(meta.get("name", ""))
    ordinal = labels.get("apps.kubernetes.io/pod-index") or name.rsplit("-", 1)[-1]
    if not str(ordinal).isdigit():
        return None
    key = ReservationKey.of(str(meta.get("namespace", "")), str(owner["name"]), int(ordinal))
    pool = (meta.get("annotations") or {}).get("stickyip.io/pool")
    return key, pool


def kube_pod_lookup(ipam: RedisIpam, settings: KubeSettings | None = None) -> PodLookup:
    import urllib3
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from plumbing.kube.client import api_client

    api = client.CoreV1Api(api_client(settings))

    async def lookup(namespace: str, name: str) -> tuple[ReservationKey, str | None] | None:
        try:
            pod = await asyncio.to_thread(api.read_namespaced_pod, name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None  # not (or no longer) in the API: nothing sticky to honour
            raise TryAgain(f"cannot read pod {namespace}/{name}: {e.status} {e.reason}") from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise TryAgain(f"cannot reach the Kubernetes API: {e}") from e
        raw = api.api_client.sanitize_for_serialization(pod)
        found = sticky_key_of(raw)
        if found is None:
            return None
        key, pool = found
        if pool is None:
            res = await ipam.reservation(key)
            pool = res.pool if res is not None else None
        return key, pool

    return lookup
