"""``check_cluster``: what 'stickyip ipam check --against-cluster' reports, from the pods
as the API serves them and a real store, without a scheduler running."""

from __future__ import annotations

from typing import Any

from ipam import PoolSpec, RedisIpam, ReservationKey, ephemeral_owner
from kubestandin import KubeStandIn, objects
from plumbing.kube.client import KubeSettings, api_client
from plumbing.kube.rest import RestClient
from scheduler.cluster_check import check_cluster, finding_row

FIXED = {"stickyip.io/fixed-ip": "true"}


async def running(api: KubeStandIn, name: str, *, ips: list[str], sts: str | None = None,
                  annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body = objects.pod(name, labels=FIXED if sts else {}, annotations=annotations or {},
                       node_name="n1")
    if sts:
        body["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                "name": sts, "uid": "s", "controller": True}]
    pod = await api.create(body)
    await api.patch("v1", "Pod", name, {"status": {
        "phase": "Running", "podIPs": [{"ip": ip} for ip in ips]}}, subresource="status")
    return pod


async def test_addresses_in_use_that_the_ipam_does_not_know_or_gives_to_another(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    kept = await ipam.claim(ReservationKey.parse("default/db/0"), pool="pool-a", node="n1")
    other = await ipam.claim(ReservationKey.parse("default/other/0"), pool="pool-a",
                             node="n1", holder="u-o", pod="default/other-0")
    lease = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c1"))
    async with KubeStandIn(statefulset_controller=False) as api:
        await running(api, "db-0", sts="db", ips=[str(kept.address)],
                      annotations={"stickyip.io/ip": str(kept.address)})  # fine
        await running(api, "db-1", sts="db", ips=["10.20.0.40"],
                      annotations={"stickyip.io/ip": "10.20.0.40"})  # reservation lost
        await running(api, "web", ips=[str(other.address)])  # someone else's
        await running(api, "job", ips=["10.20.0.41"])  # unknown to the IPAM
        await running(api, "eph", ips=[str(lease.address)])  # a lease naming no pod: other
        await running(api, "out", ips=["192.168.7.7"])  # in no pool: not ours
        await api.create(objects.pod("done", node_name="n1"))
        await api.patch("v1", "Pod", "done", {"status": {
            "phase": "Succeeded", "podIPs": [{"ip": "10.20.0.42"}]}}, subresource="status")
        rest = RestClient(api_client(KubeSettings(kube_host=api.url)))
        rows = sorted((finding_row(f) for f in await check_cluster(ipam, rest)),
                      key=lambda r: r["pod"])
    assert [(r["verdict"], r["pod"], r["address"], r["owner"]) for r in rows] == [
        ("missing", "default/db-1", "10.20.0.40", ""),
        ("conflict", "default/eph", str(lease.address), "eph/c1/eth0"),
        ("unknown", "default/job", "10.20.0.41", ""),
        ("conflict", "default/web", str(other.address), "sts/default/other/0")]
    assert "the IPAM has no reservation sts/default/db/1" in rows[0]["detail"]
