"""Extender round trips over HTTP with the kube-scheduler extender JSON: filter,
prioritize and bind for a first placement, then the home node only; the pool's
node selector; the non-cache-capable ``Nodes`` form; bad requests."""

from __future__ import annotations

from typing import Any

import aiohttp

from ipam import PoolSpec, RedisIpam, ReservationKey
from kubestandin import KubeStandIn, objects
from tests.integration.test_scheduler_cache import pods_of, replica, standin, sts
from tests.support.redis_server import free_port

NODES = ["node-0", "node-1", "node-2"]


def extender_sts(name: str, replicas: int, **ann: str) -> Any:
    obj = sts(name, replicas, **ann)
    obj["spec"]["template"]["spec"].pop("schedulerName")  # kube-scheduler places these
    return obj


async def pending_pod(api: KubeStandIn, sts_name: str, pod: str) -> dict[str, Any]:
    async def there(_: object) -> bool:
        return pod in await pods_of(api, sts_name)
    await api.wait_for(there)
    return (await pods_of(api, sts_name))[pod]


async def test_extender_filter_prioritize_bind_round_trip(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    port = free_port()
    async with standin(3) as api, replica(api, redis_url, extender_port=port,
                                         extender_host="127.0.0.1") as app, \
            aiohttp.ClientSession(app.extender_url) as http:
        async def post(verb: str, body: Any) -> Any:
            async with http.post(f"/{verb}", json=body) as r:
                assert r.status == 200, await r.text()
                return await r.json()

        await api.create(extender_sts("ext", 2))
        pod = await pending_pod(api, "ext", "ext-0")
        first = await post("filter", {"Pod": pod, "Nodes": None, "NodeNames": NODES})
        assert first["NodeNames"] == NODES and first["Error"] == ""
        prio = await post("prioritize", {"Pod": pod, "NodeNames": NODES})
        assert {p["Host"] for p in prio} == set(NODES)
        assert all(0 <= p["Score"] <= 10 for p in prio)

        result = await post("bind", {"PodName": "ext-0", "PodNamespace": "default",
                                     "PodUID": pod["metadata"]["uid"], "Node": "node-1"})
        assert result == {"Error": ""}
        bound = (await pods_of(api, "ext"))["ext-0"]
        assert bound["spec"]["nodeName"] == "node-1"
        ip = bound["metadata"]["annotations"]["stickyip.io/ip"]
        res = await ipam.reservation(ReservationKey.parse("default/ext/0"), pool="pool-a")
        assert res is not None and str(res.address) == ip and res.node == "node-1"

        # The re-created pod may only go home.
        old_uid = pod["metadata"]["uid"]
        await api.delete("v1", "Pod", "ext-0")

        async def recreated(_: object) -> bool:
            p = (await pods_of(api, "ext")).get("ext-0")
            return p is not None and p["metadata"]["uid"] != old_uid
        await api.wait_for(recreated)
        pod = (await pods_of(api, "ext"))["ext-0"]
        again = await post("filter", {"Pod": pod, "NodeNames": NODES})
        assert again["NodeNames"] == ["node-1"]
        assert set(again["FailedAndUnresolvableNodes"]) == {"node-0", "node-2"}
        assert f"reserved {ip} is homed on node-1" in again["FailedAndUnresolvableNodes"][
            "node-0"]
        prio = {p["Host"]: p["Score"] for p in await post(
            "prioritize", {"Pod": pod, "NodeNames": NODES})}
        assert prio == {"node-0": 0, "node-1": 10, "node-2": 0}

        # Without nodeCacheCapable, whole Node objects travel both ways.
        node_objs = [await api.get("v1", "Node", n) for n in NODES]
        full = await post("filter", {"Pod": pod, "Nodes": {"items": node_objs}})
        assert [n["metadata"]["name"] for n in full["Nodes"]["items"]] == ["node-1"]
        assert full["NodeNames"] is None

        plain = objects.pod("plain")
        plain["metadata"]["uid"] = "u-plain"
        assert (await post("filter", {"Pod": plain, "NodeNames": NODES}))["NodeNames"] == NODES

        async with http.post("/filter", data=b"{not json") as r:
            assert r.status == 400 and "bad request" in (await r.json())["Error"]
        async with http.post("/filter", json={"NodeNames": NODES}) as r:
            assert r.status == 400
        async with http.get("/metrics") as r:
            assert "stickyip_scheduler_extender_seconds" in await r.text()


async def test_extender_applies_the_pool_node_selector(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    await ipam.apply_pool(PoolSpec(name="rack-2", cidr="10.30.0.0/24", block_size=28,
                                   node_selector={"rack": "2"}))
    port = free_port()
    async with standin(2) as api, replica(api, redis_url, extender_port=port,
                                         extender_host="127.0.0.1") as app, \
            aiohttp.ClientSession(app.extender_url) as http:
        await api.create(objects.node("node-2", labels={"rack": "2"}))
        await api.wait_for(lambda _: "node-2" in app.cache.nodes)
        await api.create(extender_sts("racked", 1, pool="rack-2"))
        pod = await pending_pod(api, "racked", "racked-0")
        async with http.post("/filter", json={"Pod": pod, "NodeNames": NODES}) as r:
            out = await r.json()
        assert out["NodeNames"] == ["node-2"]
        assert "nodeSelector" in out["FailedAndUnresolvableNodes"]["node-0"]
