"""StatefulSet pods keep their addresses and nodes: across pod deletions, through
scale-down and scale-up within and beyond ``retain``, with explicit addresses."""

from __future__ import annotations

import asyncio

from ipam import OwnerKey, PoolSpec, RedisIpam, ReservationKey, ReservationState
from kubestandin import objects
from tests.integration.test_scheduler_cache import (
    SCHED,
    has_ip,
    placement,
    pods_of,
    replica,
    standin,
    sts,
    wait_bound,
)


async def test_three_replicas_keep_address_and_node_across_deletions(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(3) as api, replica(api, redis_url):
        await api.create(sts("db", 3))
        pods = await wait_bound(api, "db", 3, check=has_ip)
        first = placement(pods)
        assert len({node for node, _ in first.values()}) == 3, "replicas spread over nodes"
        assert len({ip for _, ip in first.values()}) == 3
        for name, p in pods.items():
            ann = p["metadata"]["annotations"]
            res = await ipam.reservation(ReservationKey.parse(f"default/db/{name[-1]}"),
                                         pool="pool-a")
            assert res is not None and str(res.address) == ann["stickyip.io/ip"]
            assert res.node == p["spec"]["nodeName"] == ann["stickyip.io/node"]
            assert res.holder == p["metadata"]["uid"] and res.state is ReservationState.BOUND
            assert ann["stickyip.io/epoch"] == str(res.epoch)

        for victims in (("db-0", "db-2"), ("db-1",)):
            gone = {pods[n]["metadata"]["uid"] for n in victims}
            for name in victims:
                await api.delete("v1", "Pod", name)
            pods = await wait_bound(
                api, "db", 3, check=lambda p, gone=gone: p["metadata"]["uid"] not in gone)
            assert placement(pods) == first
        res = await ipam.reservation(ReservationKey.parse("default/db/1"), pool="pool-a")
        assert res is not None and res.holder == pods["db-1"]["metadata"]["uid"]
        assert res.epoch == 1


async def test_scale_down_and_up_within_retain_gets_the_same_addresses(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(3) as api, replica(api, redis_url) as app:
        await api.create(sts("kept", 3, retain="1h"))
        first = placement(await wait_bound(api, "kept", 3, check=has_ip))
        await api.patch("apps/v1", "StatefulSet", "kept", {"spec": {"replicas": 1}})
        await wait_bound(api, "kept", 1)
        await app.gc.run_once()
        for o in (1, 2):
            res = await ipam.reservation(ReservationKey.parse(f"default/kept/{o}"),
                                         pool="pool-a")
            assert res is not None and res.state is ReservationState.RETAINED
            assert res.expires_at > 0
        await api.patch("apps/v1", "StatefulSet", "kept", {"spec": {"replicas": 3}})
        again = placement(await wait_bound(api, "kept", 3, check=has_ip))
        assert again == first
        res = await ipam.reservation(ReservationKey.parse("default/kept/2"), pool="pool-a")
        assert res is not None and res.state is ReservationState.BOUND


async def test_scale_down_beyond_retain_frees_the_addresses(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(1) as api, replica(api, redis_url) as app:
        await api.create(sts("brief", 2, retain="1s"))
        first = placement(await wait_bound(api, "brief", 2, check=has_ip))
        freed_ip = first["brief-1"][1]
        await api.patch("apps/v1", "StatefulSet", "brief", {"spec": {"replicas": 1}})
        await wait_bound(api, "brief", 1)
        await app.gc.run_once()
        key = ReservationKey.parse("default/brief/1")
        res = await ipam.reservation(key, pool="pool-a")
        assert res is not None and res.state is ReservationState.RETAINED
        await asyncio.sleep(1.1)
        await app.gc.run_once()
        assert await ipam.reservation(key, pool="pool-a") is None
        # Someone else takes the freed address; the scaled-up ordinal gets another one.
        taker = await ipam.allocate(pool="pool-a", node="node-0", owner=OwnerKey("eph/c1/eth0"))
        assert str(taker.address) == freed_ip
        await api.patch("apps/v1", "StatefulSet", "brief", {"spec": {"replicas": 2}})
        again = placement(await wait_bound(api, "brief", 2, check=has_ip))
        assert again["brief-0"] == first["brief-0"]
        assert again["brief-1"][1] not in (freed_ip, "")


async def test_retain_zero_frees_at_once_on_scale_down(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(2) as api, replica(api, redis_url) as app:
        await api.create(sts("zero", 2))
        await wait_bound(api, "zero", 2)
        await api.patch("apps/v1", "StatefulSet", "zero", {"spec": {"replicas": 1}})
        await wait_bound(api, "zero", 1)
        done = await app.gc.run_once()
        assert [a.owner for a in done] == ["sts/default/zero/1"]
        assert await ipam.reservation(ReservationKey.parse("default/zero/1"),
                                      pool="pool-a") is None
        assert await ipam.reservation(ReservationKey.parse("default/zero/0"),
                                      pool="pool-a") is not None


async def test_explicit_addresses_by_ordinal_and_a_taken_one_is_reported(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(3) as api, replica(api, redis_url):
        await api.create(sts("fixed", 3, ips="10.20.0.10-10.20.0.12"))
        pods = await wait_bound(api, "fixed", 3, check=has_ip)
        got = {n: ip for n, (_, ip) in placement(pods).items()}
        assert got == {"fixed-0": "10.20.0.10", "fixed-1": "10.20.0.11", "fixed-2": "10.20.0.12"}
        # The explicit addresses share one block, so its node is every replica's home.
        assert len({node for node, _ in placement(pods).values()}) == 1

        await api.create(sts("clash", 1, ips="10.20.0.11"))

        async def reported(_: object) -> bool:
            events = await api.list("v1", "Event", "default")
            return any(e.get("reason") == "AddressTaken"
                       and e["involvedObject"]["name"] == "clash-0" for e in events)
        await api.wait_for(reported, timeout=10)
        clash = await pods_of(api, "clash")
        assert not clash["clash-0"]["spec"].get("nodeName")


async def test_plain_pods_are_scheduled_without_a_reservation(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    async with standin(2, cpu="1") as api, replica(api, redis_url):
        for i in range(3):
            await api.create(objects.pod(f"web-{i}", labels={"app": "web"},
                                         scheduler_name=SCHED, cpu="600m"))
        await api.wait_for(lambda _: True)

        async def placed(_: object) -> bool:
            pods = await pods_of(api, "web")
            return sum(1 for p in pods.values() if p["spec"].get("nodeName")) == 2
        await api.wait_for(placed, timeout=10)

        async def said_why(_: object) -> bool:
            events = await api.list("v1", "Event", "default")
            return any(e.get("reason") == "FailedScheduling" and "insufficient cpu" in
                       e.get("message", "") for e in events)
        # The third pod was decided (and refused) once its event exists: nothing later
        # can place it, so the placements below are final.
        await api.wait_for(said_why, timeout=10)
        pods = await pods_of(api, "web")
        nodes = [p["spec"].get("nodeName") for p in pods.values()]
        assert sorted(n for n in nodes if n) == ["node-0", "node-1"], "600m twice never fits 1"
        assert [r async for r in ipam.records("pool-a")] == []
