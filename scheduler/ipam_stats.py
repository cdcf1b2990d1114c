"""IPAM state as Prometheus gauges: pool and block utilisation, reservations by
state, agents' heartbeats, reservations waiting on a gone node, store reachability.

Every scheduler replica reads the same store, so every replica exports the same
values (the shipped rules aggregate with ``max``)."""

from __future__ import annotations

import logging
from collections import Counter

from ipam import IpamError, LeaseKind, RedisIpam, ReservationState
from scheduler.cache import ClusterCache
from scheduler.metrics import Metrics

log = logging.getLogger("stickyip.scheduler.stats")


async def collect(ipam: RedisIpam, metrics: Metrics, cache: ClusterCache) -> None:
    """One pass: read the IPAM and set the gauges (store_up 0 when Redis fails)."""
    try:
        homes: set[str] = set()
        pending: Counter[str] = Counter()
        nodes = cache.nodes
        for spec in await ipam.pool_specs():
            st = await ipam.pool_status(spec.name)
            metrics.pool_addresses.labels(spec.name, "used").set(st.used)
            metrics.pool_addresses.labels(spec.name, "free").set(st.free)
            metrics.pool_addresses.labels(spec.name, "excluded").set(st.excluded)
            metrics.pool_blocks.labels(spec.name, "claimed").set(st.blocks_claimed)
            metrics.pool_blocks.labels(spec.name, "free").set(st.blocks_total - st.blocks_claimed)
            states: Counter[str] = Counter()
            for rec in await ipam.all_records(spec.name):
                if rec.node:
                    homes.add(rec.node)
                if rec.kind is not LeaseKind.STICKY:
                    continue
                states[rec.state.value] += 1
                node = nodes.get(rec.node) if rec.node else None
                if rec.node and (node is None or node.out_of_service):
                    pending[rec.policy.value] += 1
            for state in ReservationState:
                metrics.reservations.labels(spec.name, state.value).set(states[state.value])
        for policy in ("migrate", "wait"):
            metrics.failover_pending.labels(policy).set(pending[policy])
        # one read per node, many at once rather than one round trip after another
        names = sorted(homes | set(nodes))
        for health in await ipam.gather_limited([ipam.node_health(n) for n in names]):
            if health.heartbeat_at:
                metrics.heartbeat.labels(health.node).set(health.heartbeat_at)
        metrics.store_up.set(1)
    except IpamError as e:
        metrics.store_up.set(0)
        log.warning("IPAM statistics unavailable", extra={"error": str(e)})
