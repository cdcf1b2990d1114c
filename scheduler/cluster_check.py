"""Read what the IPAM records for the addresses running pods use, and compare
(``scheduler.reconcile``). Used by the scheduler's reconciliation and by
``stickyip ipam check --against-cluster``; needs no running scheduler.

Cost: per 500 addresses one pipelined read of the address owners and one read of
their records (``RedisIpam.owners_of``), plus one read per sticky pod whose address
turned out free. Nothing is written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from ipam.models import Lease, OwnerKey
from ipam.ranges import IPAddress
from ipam.redis_store import RedisIpam
from plumbing.kube.rest import RestClient
from scheduler.reconcile import Finding, LivePod, compare, live_pod

#: Addresses per ``owners_of`` call.
CHUNK = 500


async def holders_of(ipam: RedisIpam, addresses: Iterable[IPAddress]
                     ) -> dict[IPAddress, Lease | None]:
    """The record holding each address (None: free). Addresses inside no pool are
    left out."""
    geos = [(s.name, s.geometry()) for s in await ipam.pool_specs()]
    by_pool: dict[str, list[IPAddress]] = {}
    for a in set(addresses):
        pool = next((name for name, geo in geos if geo.contains(a)), None)
        if pool is not None:  # else not a stickyip address: not ours to judge
            by_pool.setdefault(pool, []).append(a)
    out: dict[IPAddress, Lease | None] = {}
    for pool, addrs in sorted(by_pool.items()):
        addrs.sort(key=lambda x: (x.version, int(x)))
        for i in range(0, len(addrs), CHUNK):
            out.update(await ipam.owners_of(pool, addrs[i:i + CHUNK]))
    return out


async def check_against_cluster(ipam: RedisIpam, pods: Sequence[LivePod]) -> list[Finding]:
    """Every address the running ``pods`` use that the IPAM does not know, or knows
    under another owner (see ``scheduler.reconcile`` for the verdicts)."""
    holders = await holders_of(ipam, (a for p in pods for a in p.addresses))
    free_owners = sorted({p.owner for p in pods if p.owner is not None
                          and any(a in holders and holders[a] is None for a in p.addresses)})
    records = await ipam.gather_limited([ipam.lease(owner=o) for o in free_owners])
    own: dict[OwnerKey, Lease | None] = dict(zip(free_owners, records, strict=True))
    return compare(pods, holders, own)


async def check_cluster(ipam: RedisIpam, rest: RestClient) -> list[Finding]:
    """Every running pod of the cluster (listed in pages) against the IPAM."""
    items, _ = await asyncio.to_thread(rest.list, "/api/v1/pods")
    pods = [p for p in (live_pod(o) for o in items) if p is not None]
    return await check_against_cluster(ipam, pods)


def finding_row(f: Finding) -> dict[str, Any]:
    """One finding as a row of ``stickyip ipam check --against-cluster``."""
    held = f.record
    return {"verdict": f.verdict.value, "address": str(f.address), "pod": f.pod.ref,
            "node": f.pod.node, "owner": str(held.owner) if held is not None else "",
            "detail": f.message}
