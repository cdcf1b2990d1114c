"""The webhook behind the Kubernetes API stand-in: the stand-in's StatefulSet
controller creates pods, the stand-in calls ``/mutate-pods`` over HTTPS as
kube-apiserver does (objectSelector on the opt-in label), applies the patch, and
records a denial as a FailedCreate event. Re-created pods get the same address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ipam import PoolSpec, RedisIpam, ReservationKey, ephemeral_owner
from kubestandin import KubeStandIn, WebhookTarget, objects
from webhooks.testing import live_webhook

OPT_IN = {"app": "db", "stickyip.io/fixed-ip": "true"}


@pytest.fixture
async def api(ipam: RedisIpam, tmp_path: Path) -> AsyncIterator[KubeStandIn]:
    await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28))
    async with live_webhook(ipam, str(tmp_path)) as (server, _, certs):
        ca_file = tmp_path / "ca.pem"
        certs.ca.cert_pem.write_to_path(str(ca_file))
        target = WebhookTarget(url=server.url + "/mutate-pods", ca_file=str(ca_file),
                               name="pods.stickyip.io",
                               object_selector={"matchLabels": {"stickyip.io/fixed-ip": "true"}})
        async with KubeStandIn(mutating_webhooks=[target]) as standin:
            yield standin


def sts(name: str, ips: str, replicas: int = 2) -> dict[str, Any]:
    return objects.statefulset(
        name, replicas=replicas, template_labels={**OPT_IN, "app": name},
        template_annotations={"stickyip.io/pool": "pool-a", "stickyip.io/ips": ips},
        pod_management_policy="Parallel")


async def pod(api: KubeStandIn, name: str) -> dict[str, Any]:
    found = await api.get("v1", "Pod", name)
    assert found is not None, f"pod {name} was not created"
    return found


async def test_controller_pods_get_their_addresses(api: KubeStandIn, ipam: RedisIpam) -> None:
    await ipam.allocate(pool="pool-a", node="node-1", owner=ephemeral_owner("c0ffee"))
    await api.create(sts("db", "10.20.0.10,10.20.0.11"))
    await api.settle()
    for i, ip in enumerate(("10.20.0.10", "10.20.0.11")):
        p = await pod(api, f"db-{i}")
        assert p["metadata"]["annotations"]["stickyip.io/ip"] == ip
        assert p["metadata"]["annotations"]["stickyip.io/node"] == "node-1"
        terms = p["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                           "values": ["node-1"]}]}]
        res = await ipam.reservation(ReservationKey.of("default", "db", i), pool="pool-a")
        assert res is not None and str(res.address) == ip

    # The pod is deleted; the controller re-creates it; the address comes back.
    await api.delete("v1", "Pod", "db-1")
    await api.settle()
    again = await pod(api, "db-1")
    assert again["metadata"]["annotations"]["stickyip.io/ip"] == "10.20.0.11"


async def test_denial_becomes_a_failed_create_event(api: KubeStandIn) -> None:
    await api.create(sts("db", "10.20.0.20"))
    await api.settle()
    await api.create(sts("thief", "10.20.0.20", replicas=1))
    await api.settle()
    assert await api.get("v1", "Pod", "thief-0") is None
    events = await api.list("v1", "Event", "default")
    messages = [e.get("message", "") for e in events if e.get("reason") == "FailedCreate"]
    assert any("held by sts/default/db/0" in m for m in messages), messages


async def test_unlabelled_pods_never_reach_the_webhook(api: KubeStandIn, ipam: RedisIpam
                                                       ) -> None:
    await api.create(objects.statefulset("plain", replicas=1,
                                         pod_management_policy="Parallel"))
    await api.settle()
    p = await pod(api, "plain-0")
    assert "stickyip.io/ip" not in (p["metadata"].get("annotations") or {})
    assert await ipam.reservation(ReservationKey.of("default", "plain", 0)) is None
