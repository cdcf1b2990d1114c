"""Node failure: a confirmed-gone node's ``migrate`` pods are re-homed (new epoch,
same address, the old node fenced); ``wait`` pods stay Pending and say why; a
NotReady node whose agent still beats keeps everything."""

from __future__ import annotations

from ipam import PoolSpec, RedisIpam, ReservationKey
from kubestandin import KubeStandIn, objects
from tests.integration.test_scheduler_cache import (
    has_ip,
    placement,
    pods_of,
    replica,
    standin,
    sts,
    wait_bound,
)
from tests.support.clock import SkewClock


async def events_for(api: KubeStandIn, pod: str, reason: str) -> list[str]:
    return [e.get("message", "") for e in await api.list("v1", "Event", "default")
            if e.get("reason") == reason and e["involvedObject"]["name"] == pod]


async def test_killed_node_rehomes_migrate_pods_with_a_new_epoch(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(3) as api, replica(api, redis_url):
        await api.create(sts("db", 2, node_failure="migrate"))
        pods = await wait_bound(api, "db", 2, check=has_ip)
        before = placement(pods)
        dead, ip0 = before["db-0"]
        old_uid = pods["db-0"]["metadata"]["uid"]

        await api.set_node_ready(dead, False)  # kubelet gone; its agent never beat
        pods = await wait_bound(api, "db", 2, within=20, check=lambda p: has_ip(p) and (
            p["metadata"]["name"] != "db-0" or p["metadata"]["uid"] != old_uid))
        after = placement(pods)
        assert after["db-0"][1] == ip0, "the address moved with the pod"
        assert after["db-0"][0] != dead
        assert after["db-1"] == before["db-1"], "the healthy replica is untouched"
        res0 = await ipam.reservation(ReservationKey.parse("default/db/0"), pool="pool-a")
        assert res0 is not None and res0.epoch == 2 and res0.node == after["db-0"][0]
        assert pods["db-0"]["metadata"]["annotations"]["stickyip.io/epoch"] == "2"
        res1 = await ipam.reservation(ReservationKey.parse("default/db/1"), pool="pool-a")
        assert res1 is not None and res1.epoch == 1
        assert (await ipam.node_health(dead)).fenced_at > 0
        # Preferred path: the whole block moved, so routes stay aggregated.
        blocks = {b.index: b.node for b in await ipam.blocks("pool-a")}
        assert dead not in blocks.values()
        # and the user is told, on the pod, what happened and where it went
        msgs = await events_for(api, "db-0", "Rehomed")
        assert any(f"node {dead} is confirmed gone" in m and after["db-0"][0] in m
                   and "whole block moved" in m for m in msgs), msgs


async def test_wait_pods_stay_pending_with_an_event_until_the_node_returns(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(2) as api, replica(api, redis_url):
        await api.create(sts("w", 1, node_failure="wait"))
        home, ip = placement(await wait_bound(api, "w", 1, check=has_ip))["w-0"]
        await api.delete("v1", "Node", home)

        async def held(_: object) -> bool:
            return any("node-failure=wait" in m
                       for m in await events_for(api, "w-0", "WaitingForHomeNode"))
        await api.wait_for(held, timeout=10)
        # The pod is evicted (as an operator or the taint manager would do).
        await api.delete("v1", "Pod", "w-0", "default")

        async def pending_said_why(_: object) -> bool:
            msgs = await events_for(api, "w-0", "WaitingForHomeNode")
            return any(f"reserved {ip} is homed on {home}, which no longer exists; waiting "
                       "(node-failure=wait)" in m for m in msgs)
        await api.wait_for(pending_said_why, timeout=10)
        pods = await pods_of(api, "w")
        assert not pods["w-0"]["spec"].get("nodeName"), "Pending: never placed elsewhere"
        res = await ipam.reservation(ReservationKey.parse("default/w/0"), pool="pool-a")
        assert res is not None and res.node == home and res.epoch == 1
        assert (await ipam.node_health(home)).fenced_at == 0

        await api.create(objects.node(home))
        after = placement(await wait_bound(api, "w", 1, check=has_ip))
        assert after["w-0"] == (home, ip)


async def test_not_ready_but_alive_node_keeps_everything(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    clock = SkewClock()
    ipam.clock = clock  # the agent's heartbeats are stamped with the same clock
    async with standin(3) as api, replica(api, redis_url, clock=clock,
                                          failover_period=3600.0) as app:
        await api.create(sts("slow", 2))
        pods = await wait_bound(api, "slow", 2, check=has_ip)
        before = placement(pods)
        node, _ = before["slow-0"]
        uid = pods["slow-0"]["metadata"]["uid"]

        await api.set_node_ready(node, False)
        await api.wait_for(lambda _: not app.cache.nodes[node].ready, timeout=10)
        clock.advance(app.settings.node_grace + 1.5)  # well past the grace...
        await ipam.heartbeat(node)  # ...but its agent still beats
        report = await app.failover.run_once()
        assert node in report.slow and "heartbeat is fresh" in report.slow[node]
        assert not report.gone
        pods = await pods_of(api, "slow")
        assert placement(pods) == before
        assert pods["slow-0"]["metadata"]["uid"] == uid
        res = await ipam.reservation(ReservationKey.parse("default/slow/0"), pool="pool-a")
        assert res is not None and res.node == node and res.epoch == 1
        assert (await ipam.node_health(node)).fenced_at == 0

        # The same node, once its heartbeat expires too, is confirmed gone and drained.
        clock.advance(app.settings.heartbeat_ttl + 1.0)
        report = await app.failover.run_once()
        assert node in report.gone
        pods = await wait_bound(api, "slow", 2, within=20, check=lambda p: has_ip(p) and (
            p["metadata"]["name"] != "slow-0" or p["metadata"]["uid"] != uid))
        assert placement(pods)["slow-0"][0] != node
