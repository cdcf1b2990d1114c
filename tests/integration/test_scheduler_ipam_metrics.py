"""The scheduler exports IPAM state as gauges: pool and block use, reservations by
state, agents' heartbeats, reservations waiting on a gone node, store reachability."""

from __future__ import annotations

import redis.asyncio as aioredis

from ipam import PoolSpec, RedisIpam, ReservationKey, ephemeral_owner
from scheduler import ipam_stats
from scheduler.cache import ClusterCache
from scheduler.metrics import Metrics


def node(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": {}}, "spec": {},
            "status": {"allocatable": {"cpu": "8", "memory": "8Gi"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


async def test_gauges_follow_the_store(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    cache = ClusterCache()
    cache.replace("nodes", [node("n1")])
    await ipam.claim(ReservationKey.of("ns", "db", 0), pool="pool-a", node="n1", holder="u")
    await ipam.claim(ReservationKey.of("ns", "db", 1), pool="pool-a", node="n1", retain=60)
    await ipam.retain_reservation(ReservationKey.of("ns", "db", 1), pool="pool-a")
    # homed on a node the cluster no longer has: waiting for failover
    await ipam.claim(ReservationKey.of("ns", "db", 2), pool="pool-a", node="gone")
    await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c1"))
    await ipam.heartbeat("n1", now=1234.5)

    m = Metrics()
    await ipam_stats.collect(ipam, m, cache)
    get = m.registry.get_sample_value
    assert get("stickyip_ipam_pool_addresses", {"pool": "pool-a", "state": "used"}) == 4
    assert get("stickyip_ipam_pool_addresses", {"pool": "pool-a", "state": "excluded"}) == 2
    assert get("stickyip_ipam_pool_addresses", {"pool": "pool-a", "state": "free"}) == 250
    assert get("stickyip_ipam_pool_blocks", {"pool": "pool-a", "state": "claimed"}) == 2
    assert get("stickyip_ipam_pool_blocks", {"pool": "pool-a", "state": "free"}) == 14
    assert get("stickyip_ipam_reservations", {"pool": "pool-a", "state": "bound"}) == 1
    assert get("stickyip_ipam_reservations", {"pool": "pool-a", "state": "retained"}) == 1
    assert get("stickyip_ipam_reservations", {"pool": "pool-a", "state": "reserved"}) == 1
    assert get("stickyip_failover_pending_reservations", {"policy": "migrate"}) == 1
    assert get("stickyip_agent_heartbeat_timestamp_seconds", {"node": "n1"}) == 1234.5
    assert get("stickyip_ipam_store_up") == 1

    # a store that cannot be reached: store_up drops to 0, the pass does not raise
    dead = RedisIpam(aioredis.Redis.from_url("redis://127.0.0.1:1/0",
                                             socket_connect_timeout=0.2))
    await ipam_stats.collect(dead, m, cache)
    assert get("stickyip_ipam_store_up") == 0
    await dead.aclose()
