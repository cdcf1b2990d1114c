"""The webhook behind the Kubernetes API stand-in: the stand-in's StatefulSet
controller creates pods, the stand-in calls ``/mutate-pods`` over HTTPS as
kube-apiserver does (objectSelector on the opt-in label), applies the patch, and
records a denial as a FailedCreate event. Re-created pods get the same address.
Scale-ups through ``statefulsets/scale`` are judged with the StatefulSet read from
the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ipam import PoolSpec, RedisIpam, ReservationKey, ephemeral_owner
from kubestandin import KubeStandIn, WebhookTarget, objects
from plumbing.kube.client import KubeSettings, api_client
from tests.support.admission import Client, live_webhook, scale_review
from tests.support.redis_server import free_port
from webhooks.kube import KubeStatefulSets

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


@pytest.fixture
async def scaling(ipam: RedisIpam, tmp_path: Path
                  ) -> AsyncIterator[tuple[KubeStandIn, Client]]:
    """The webhook reading StatefulSets from the stand-in (for statefulsets/scale)."""
    await ipam.apply_pool(PoolSpec(name="small", cidr="10.40.0.0/28", block_size=28))
    async with KubeStandIn(statefulset_controller=False) as standin:
        reader = KubeStatefulSets(api_client(KubeSettings(kube_host=standin.url)))
        async with live_webhook(ipam, str(tmp_path), statefulsets=reader) as (_, client, _):
            yield standin, client


async def scale(client: Client, name: str, replicas: int, old: int) -> tuple[int, Any]:
    return await client.post("/validate-statefulsets",
                             scale_review(name, namespace="default", replicas=replicas,
                                          old_replicas=old))


async def test_scale_up_is_judged_with_the_statefulset(
        scaling: tuple[KubeStandIn, Client], ipam: RedisIpam) -> None:
    api, client = scaling
    await api.create(objects.statefulset(
        "db", replicas=2, template_labels={**OPT_IN},
        template_annotations={"stickyip.io/pool": "small"}))
    await api.create(objects.statefulset(
        "fixed", replicas=2, template_labels={**OPT_IN, "app": "fixed"},
        template_annotations={"stickyip.io/pool": "small",
                              "stickyip.io/ips": "10.40.0.1,10.40.0.2"}))
    # 14 usable addresses in "small".
    status, answer = await scale(client, "db", 20, 2)
    assert status == 200 and answer["response"]["allowed"] is False
    assert "14 free address(es) but 20 replicas" in answer["response"]["status"]["message"]
    status, answer = await scale(client, "db", 14, 2)
    assert answer["response"]["allowed"] is True
    status, answer = await scale(client, "fixed", 3, 2)
    assert answer["response"]["allowed"] is False
    assert "lists only 2 address(es)" in answer["response"]["status"]["message"]
    # Scaling down, or a StatefulSet the API does not know: nothing to check.
    assert (await scale(client, "fixed", 1, 2))[1]["response"]["allowed"] is True
    assert (await scale(client, "ghost", 50, 1))[1]["response"]["allowed"] is True
    # The pool really is what limits: another owner takes 12 addresses.
    for i in range(12):
        await ipam.claim(ReservationKey.of("default", "other", i), pool="small", node="node-1")
    status, answer = await scale(client, "db", 3, 2)
    assert answer["response"]["allowed"] is False


async def test_scale_with_api_down_is_500(ipam: RedisIpam, tmp_path: Path) -> None:
    await ipam.apply_pool(PoolSpec(name="small", cidr="10.40.0.0/28", block_size=28))
    reader = KubeStatefulSets(api_client(KubeSettings(kube_host=f"http://127.0.0.1:{free_port()}")),
                              timeout=2.0)
    async with live_webhook(ipam, str(tmp_path), statefulsets=reader) as (_, client, _):
        status, text = await scale(client, "db", 5, 2)
        assert status == 500 and text.startswith("Kubernetes API unavailable:")
        assert (await scale(client, "db", 1, 2))[1]["response"]["allowed"] is True
