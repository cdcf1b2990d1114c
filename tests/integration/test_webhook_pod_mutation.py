"""Pods of opted-in StatefulSets through the real HTTPS server: the claim is
recorded once, the returned JSON patch applies (jsonpatch) and pins the pod home;
reinvocation changes nothing; dryRun writes nothing; conflicts are refused."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from ipam import PoolSpec, RedisIpam, ReservationKey, ephemeral_owner
from tests.support.admission import (
    Client,
    decoded_patch,
    live_webhook,
    review,
    statefulset,
    statefulset_pod,
)


@pytest.fixture
async def hook(ipam: RedisIpam, tmp_path: Path) -> AsyncIterator[Client]:
    await ipam.apply_pool(PoolSpec(name="default", cidr="10.30.0.0/24", block_size=28))
    await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28))
    async with live_webhook(ipam, str(tmp_path), scheduler_name="stickyip-scheduler") as (
            _, client, _):
        yield client


async def snapshot(ipam: RedisIpam) -> dict[Any, Any]:
    r = ipam.redis
    return {k: await r.dump(k) for k in sorted(await r.keys("*"))}


async def mutate(client: Client, pod: dict[str, Any], *, dry_run: bool = False
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post the pod; return the AdmissionReview response and the patched pod."""
    body = review(pod, dry_run=dry_run)
    status, answer = await client.post("/mutate-pods", body)
    assert status == 200, answer
    resp = answer["response"]
    assert resp["uid"] == body["request"]["uid"]
    patched = jsonpatch.apply_patch(pod, decoded_patch(answer)) if resp["allowed"] else pod
    return resp, patched


def schema_valid(pod: dict[str, Any]) -> None:
    """The patched pod is still a valid Pod for the Kubernetes OpenAPI schema."""
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def ann(pod: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = pod["metadata"].get("annotations") or {}
    return out


def home_terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    na = pod["spec"]["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = na["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    return terms


async def test_first_claim_then_home_after_scheduling(hook: Client, ipam: RedisIpam) -> None:
    sts = statefulset("web", annotations={"stickyip.io/retain": "24h",
                                          "stickyip.io/node-failure": "wait"})
    pod = statefulset_pod(sts, 1)
    resp, patched = await mutate(hook, pod)
    assert resp["allowed"] is True
    # No address yet: the scheduler gives one from the chosen node's block.
    assert "stickyip.io/ip" not in ann(patched)
    assert patched["spec"]["schedulerName"] == "stickyip-scheduler"
    key = ReservationKey.of("prod", "web", 1)
    res = await ipam.reservation(key, pool="default")
    assert res is not None and res.address is None
    assert res.retain == 86400.0 and res.policy.value == "wait"

    # The scheduler placed it on node-2; the pod is deleted and re-created.
    placed = await ipam.claim(key, pool="default", node="node-2")
    assert placed.address is not None
    resp, again = await mutate(hook, statefulset_pod(sts, 1))
    assert ann(again)["stickyip.io/ip"] == str(placed.address)
    assert ann(again)["stickyip.io/node"] == "node-2"
    assert ann(again)["stickyip.io/epoch"] == str(placed.epoch)
    schema_valid(again)
    assert home_terms(again) == [{"matchFields": [
        {"key": "metadata.name", "operator": "In", "values": ["node-2"]}]}]
    # Everything else of the pod is untouched.
    for k in ("containers", "volumes", "tolerations", "hostname", "subdomain"):
        assert again["spec"][k] == pod["spec"][k]
    assert again["metadata"]["labels"] == pod["metadata"]["labels"]


async def test_explicit_address_reserved_and_homed_on_block_node(
        hook: Client, ipam: RedisIpam) -> None:
    # node-5 holds the block of 10.20.0.0/28 (an ephemeral pod of its own).
    eph = await ipam.allocate(pool="pool-a", node="node-5", owner=ephemeral_owner("c0ffee"))
    assert eph.address is not None and str(eph.address).startswith("10.20.0.")
    sts = statefulset("db", annotations={"stickyip.io/pool": "pool-a",
                                         "stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    pod = statefulset_pod(sts, 2)
    pod["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]}]}}}
    resp, patched = await mutate(hook, pod)
    assert resp["allowed"] is True
    assert ann(patched)["stickyip.io/ip"] == "10.20.0.12"
    assert ann(patched)["stickyip.io/node"] == "node-5"
    schema_valid(patched)
    for term in home_terms(patched):
        assert {"key": "metadata.name", "operator": "In", "values": ["node-5"]} in \
            term["matchFields"]
        assert term["matchExpressions"]
    owner = await ipam.owner_of("10.20.0.12")
    assert owner is not None and owner.owner == "sts/prod/db/2"


async def test_reinvocation_is_a_no_op(hook: Client, ipam: RedisIpam) -> None:
    sts = statefulset("db", annotations={"stickyip.io/pool": "pool-a",
                                         "stickyip.io/ips": "10.20.0.20,10.20.0.21"})
    await ipam.allocate(pool="pool-a", node="node-1", owner=ephemeral_owner("b10c"))
    _, once = await mutate(hook, statefulset_pod(sts, 0))
    before = await snapshot(ipam)
    body = review(once)
    status, answer = await hook.post("/mutate-pods", body)
    assert status == 200 and answer["response"]["allowed"] is True
    assert decoded_patch(answer) == [] and "patchType" not in answer["response"]
    assert await snapshot(ipam) == before


async def test_dry_run_writes_nothing(hook: Client, ipam: RedisIpam) -> None:
    sts = statefulset("web", annotations={"stickyip.io/pool": "pool-a",
                                          "stickyip.io/ips": "10.20.0.30,10.20.0.31"})
    before = await snapshot(ipam)
    resp, patched = await mutate(hook, statefulset_pod(sts, 1), dry_run=True)
    assert resp["allowed"] is True
    assert ann(patched)["stickyip.io/ip"] == "10.20.0.31"
    assert await snapshot(ipam) == before
    # A reservation recorded without an address yet: dryRun shows the listed one.
    await ipam.claim(ReservationKey.of("prod", "web", 1), pool="pool-a")
    before = await snapshot(ipam)
    resp, patched = await mutate(hook, statefulset_pod(sts, 1), dry_run=True)
    assert ann(patched)["stickyip.io/ip"] == "10.20.0.31"
    assert await snapshot(ipam) == before
    # dryRun still refuses what the real request would refuse.
    await ipam.claim(ReservationKey.of("prod", "other", 0), pool="pool-a", address="10.20.0.30")
    before = await snapshot(ipam)
    resp, _ = await mutate(hook, statefulset_pod(sts, 0), dry_run=True)
    assert resp["allowed"] is False and "sts/prod/other/0" in resp["status"]["message"]
    assert await snapshot(ipam) == before


async def test_conflicting_explicit_address_is_refused(hook: Client, ipam: RedisIpam) -> None:
    first = statefulset("a", annotations={"stickyip.io/pool": "pool-a",
                                          "stickyip.io/ips": "10.20.0.40"}, replicas=1)
    second = statefulset("b", annotations={"stickyip.io/pool": "pool-a",
                                           "stickyip.io/ips": "10.20.0.40"}, replicas=1)
    resp, _ = await mutate(hook, statefulset_pod(first, 0))
    assert resp["allowed"] is True
    before = await snapshot(ipam)
    resp, _ = await mutate(hook, statefulset_pod(second, 0))
    assert resp["allowed"] is False and resp["status"]["code"] == 409
    assert "held by sts/prod/a/0" in resp["status"]["message"]
    assert "stickyip.io/ips" in resp["status"]["message"]
    assert await snapshot(ipam) == before


async def test_unknown_pool_is_refused_with_fix(hook: Client) -> None:
    sts = statefulset("web", annotations={"stickyip.io/pool": "nope"})
    resp, _ = await mutate(hook, statefulset_pod(sts, 0))
    assert resp["allowed"] is False and "'nope' does not exist" in resp["status"]["message"]


async def test_pods_not_opted_in_are_untouched(hook: Client, ipam: RedisIpam) -> None:
    before = await snapshot(ipam)
    resp, _ = await mutate(hook, statefulset_pod(statefulset("web", opt_in=False), 0))
    assert resp == {"uid": resp["uid"], "allowed": True}
    assert await snapshot(ipam) == before


async def test_validate_pods_refuses_address_held_by_another(
        hook: Client, ipam: RedisIpam) -> None:
    sts = statefulset("db", annotations={"stickyip.io/pool": "pool-a",
                                         "stickyip.io/ips": "10.20.0.50,10.20.0.51"})
    _, mine = await mutate(hook, statefulset_pod(sts, 0))
    status, answer = await hook.post("/validate-pods", review(mine))
    assert status == 200 and answer["response"]["allowed"] is True
    thief = copy.deepcopy(statefulset_pod(statefulset("web"), 0))
    thief["metadata"]["annotations"]["stickyip.io/ip"] = "10.20.0.50"
    status, answer = await hook.post("/validate-pods", review(thief))
    assert answer["response"]["allowed"] is False
    assert "held by sts/prod/db/0" in answer["response"]["status"]["message"]
    loose = statefulset_pod(statefulset("x", opt_in=False), 0)
    loose["metadata"]["annotations"]["stickyip.io/ip"] = "10.20.0.51"
    status, answer = await hook.post("/validate-pods", review(loose))
    assert answer["response"]["allowed"] is True
    loose["metadata"]["annotations"]["stickyip.io/ip"] = "192.0.2.1"
    status, answer = await hook.post("/validate-pods", review(loose))
    assert answer["response"]["allowed"] is False
    assert "not inside any pool" in answer["response"]["status"]["message"]


async def test_metrics_count_requests_by_verdict(hook: Client) -> None:
    await mutate(hook, statefulset_pod(statefulset("web"), 0))
    await hook.post("/mutate-pods", b"nope")
    status, text = await hook.get("/metrics")
    assert status == 200
    assert 'stickyip_webhook_requests_total{endpoint="mutate-pods",verdict="allowed"} 1.0' \
        in text
    assert 'stickyip_webhook_requests_total{endpoint="mutate-pods",verdict="bad_request"} 1.0' \
        in text
    assert "stickyip_webhook_request_duration_seconds_bucket" in text
    assert (await hook.get("/healthz"))[0] == 200
    assert (await hook.get("/readyz"))[0] == 200


async def test_dual_stack_pairs_are_claimed_together_and_annotated(
        hook: Client, ipam: RedisIpam) -> None:
    await ipam.apply_pool(PoolSpec(name="pool-a-v6", cidr="fd00:20::/112", block_size=124))
    sts = statefulset("ds", replicas=2, annotations={
        "stickyip.io/pool": "pool-a,pool-a-v6",
        "stickyip.io/ips": "10.20.0.10-10.20.0.11+fd00:20::10-fd00:20::11"})
    resp, patched = await mutate(hook, statefulset_pod(sts, 1))
    assert resp["allowed"] is True, resp
    assert ann(patched)["stickyip.io/ip"] == "10.20.0.11,fd00:20::11"
    res = await ipam.reservation(ReservationKey.of("prod", "ds", 1))
    assert res is not None and str(res.address4) == "10.20.0.11"
    assert str(res.address6) == "fd00:20::11" and res.epoch == 1
    schema_valid(patched)

    # An IPv6 address another ordinal holds is refused, naming it; nothing is written.
    taken = statefulset("other", replicas=1, annotations={
        "stickyip.io/pool": "pool-a,pool-a-v6", "stickyip.io/ips": "10.20.0.20+fd00:20::11"})
    before = await snapshot(ipam)
    resp, _ = await mutate(hook, statefulset_pod(taken, 0))
    assert resp["allowed"] is False and resp["status"]["code"] == 409
    assert "sts/prod/ds/1" in resp["status"]["message"]
    assert await snapshot(ipam) == before
