"""The agent's Kubernetes pod lookup (``kube`` mode) through the official client
against the API stand-in: a StatefulSet pod maps to its reservation key and pool,
other pods to None. (Needs no root; lives here with the other agent tests.)"""

from __future__ import annotations

from typing import Any

import pytest

from datapath.errors import TryAgain
from datapath.podinfo import kube_pod_lookup
from ipam import PoolSpec, RedisIpam, ReservationKey
from kubestandin import KubeStandIn
from plumbing.kube.client import KubeSettings


def _pod(name: str, labels: dict[str, str], owner: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "prod", "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                    "name": owner, "uid": "u-" + owner, "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "x"}]}}


async def test_lookup_reads_owner_ordinal_and_pool_from_the_api(ipam: RedisIpam) -> None:
    await ipam.apply_pool(PoolSpec(name="prod-a", cidr="10.50.0.0/24", block_size=28))
    key = ReservationKey.of("prod", "db", 1)
    await ipam.claim(key, pool="prod-a", node="node-1")
    async with KubeStandIn(statefulset_controller=False) as api:
        await api.create(_pod("db-1", {"stickyip.io/fixed-ip": "true"}, "db"))
        await api.create(_pod("web-7", {}, None))
        await api.create(_pod("cache-0", {"stickyip.io/fixed-ip": "true"}, "cache"))
        lookup = kube_pod_lookup(ipam, KubeSettings(kube_host=api.url))
        assert await lookup("prod", "db-1") == (key, "prod-a")
        assert await lookup("prod", "web-7") is None
        # Opted in but not reserved yet: the key, pool left to the agent's default.
        assert await lookup("prod", "cache-0") == (ReservationKey.of("prod", "cache", 0), None)


async def test_lookup_of_a_missing_pod_or_unreachable_api(ipam: RedisIpam) -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        lookup = kube_pod_lookup(ipam, KubeSettings(kube_host=api.url))
        assert await lookup("prod", "nobody-0") is None
        url = api.url
    down = kube_pod_lookup(ipam, KubeSettings(kube_host=url, kube_qps_timeout=2))
    with pytest.raises(TryAgain):
        await down("prod", "db-0")
