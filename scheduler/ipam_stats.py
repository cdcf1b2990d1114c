"""IPAM state as Prometheus gauges: pool and block utilisation, reservations by
state, agents' heartbeats, reservations waiting on a gone node, store reachability.

One pass is ONE read of counters the IPAM's scripts keep (``RedisIpam.stats``):
O(pools + nodes), never a scan of the records, so its cost does not grow with the
number of addresses handed out.

Every scheduler replica reads the same store, so every replica exports the same
values (the shipped rules aggregate with ``max``)."""

from __future__ import annotations

import logging

from ipam import IpamError, IpamStats, RedisIpam, ReservationState
from scheduler.cache import ClusterCache
from scheduler.metrics import Metrics

log = logging.getLogger("stickyip.scheduler.stats")


async def collect(ipam: RedisIpam, metrics: Metrics, cache: ClusterCache) -> IpamStats | None:
    """One pass: read the IPAM's counters and set the gauges (store_up 0 when Redis
    fails). Returns what was read (None when the store could not be read)."""
    try:
        stats = await ipam.stats(nodes=True)
    except IpamError as e:
        metrics.store_up.set(0)
        log.warning("IPAM statistics unavailable", extra={"error": str(e)})
        return None
    for ps in stats.pools:
        metrics.pool_addresses.labels(ps.pool, "used").set(ps.used)
        metrics.pool_addresses.labels(ps.pool, "free").set(ps.free)
        metrics.pool_addresses.labels(ps.pool, "excluded").set(ps.excluded)
        metrics.pool_blocks.labels(ps.pool, "claimed").set(ps.blocks_claimed)
        metrics.pool_blocks.labels(ps.pool, "free").set(ps.blocks_total - ps.blocks_claimed)
        for state in ReservationState:
            metrics.reservations.labels(ps.pool, state.value).set(
                ps.records.get(state.value, 0))
    if cache.is_synced("nodes"):
        # Only a synced cache may say a node was deleted.
        pending = {"migrate": 0, "wait": 0}
        for name, classes in stats.homes.items():
            node = cache.nodes.get(name)
            if node is None or node.out_of_service:
                for policy in pending:
                    pending[policy] += classes.get(policy, 0)
        for policy, n in pending.items():
            metrics.failover_pending.labels(policy).set(n)
    for name, at in stats.heartbeats.items():
        metrics.heartbeat.labels(name).set(at)
    metrics.store_up.set(1)
    return stats
