"""Pod lookups: which StatefulSet reservation (and pool) a pod being added stands
for, by the rules of :mod:`ipam.contract`. Through the Kubernetes API when the agent
runs with ``kube``; otherwise from the pod name alone, honoured only when IPAM holds
that reservation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from datapath.errors import TryAgain, UnclearPod
from ipam import IpamError, RedisIpam, ReservationKey
from ipam.contract import ANN_POOL, InvalidAnnotations, opted_in, pool_of, read_request, slot_of

if TYPE_CHECKING:
    from plumbing.kube.client import KubeSettings

#: (namespace, pod name) -> (reservation key, pool) of a StatefulSet pod, else None
PodLookup = Callable[[str, str], Awaitable[tuple[ReservationKey, str | None] | None]]



def name_pod_lookup(ipam: RedisIpam) -> PodLookup:
    """Without the API: a pod named ``NAME-ORDINAL`` stands for ``NAMESPACE/NAME/ORDINAL``
    (the contract's ordinal rule, as if StatefulSet NAME owned it) only when IPAM holds
    that reservation."""

    async def lookup(namespace: str, pod: str) -> tuple[ReservationKey, str | None] | None:
        statefulset, dash, _ = pod.rpartition("-")
        if not dash or not statefulset or not namespace:
            return None
        owned = {"metadata": {"name": pod, "namespace": namespace, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": statefulset,
             "controller": True}]}}
        try:
            slot = slot_of(owned)
            key = slot.key if slot is not None else None
        except IpamError:
            return None
        if key is None:
            return None
        found = await ipam.reservation(key)
        return (key, found.pool) if found is not None else None

    return lookup


def sticky_key_of(pod: dict[str, Any]) -> tuple[ReservationKey, str | None] | None:
    """Pure: the reservation key and pool of a pod object (None unless it is an
    opted-in StatefulSet pod; the pool None when its annotations name none, and
    ``"V4POOL,V6POOL"`` when they name one per family).

    An opted-in StatefulSet pod whose ordinal the contract cannot tell (sources that
    disagree, none present, names the store refuses) raises :class:`UnclearPod`:
    it asked for a fixed address, so it must not silently get another one."""
    meta = pod.get("metadata") or {}
    if not opted_in(meta.get("labels") or {}):
        return None
    try:
        slot = slot_of(pod)
        if slot is None:
            return None
        key = slot.key
    except IpamError as e:
        raise UnclearPod(f"pod {meta.get('namespace', '')}/{meta.get('name', '')} asks for "
                         f"a fixed address, but {e}") from e
    annotations = meta.get("annotations") or {}
    pool = None
    if isinstance(annotations.get(ANN_POOL), str):
        try:  # "v4pool,v6pool" for a dual-stack pod
            pool = ",".join(read_request(annotations).pools)
        except InvalidAnnotations:
            pool = pool_of(annotations)
    return key, pool


def kube_pod_lookup(ipam: RedisIpam, settings: KubeSettings | None = None) -> PodLookup:
    from plumbing.kube import errors
    from plumbing.kube.client import api_client
    from plumbing.kube.rest import RestClient

    rest = RestClient(api_client(settings))

    def read(namespace: str, name: str) -> dict[str, Any]:
        return rest.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")

    async def lookup(namespace: str, name: str) -> tuple[ReservationKey, str | None] | None:
        try:
            raw = await asyncio.to_thread(read, namespace, name)
        except errors.NotFound:
            return None  # not (or no longer) in the API: nothing sticky to honour
        except errors.KubeError as e:
            raise TryAgain(f"cannot read pod {namespace}/{name}: {e}") from e
        found = sticky_key_of(raw)
        if found is None:
            return None
        key, pool = found
        if pool is None:
            res = await ipam.reservation(key)
            pool = res.pool if res is not None else None
        return key, pool

    return lookup
