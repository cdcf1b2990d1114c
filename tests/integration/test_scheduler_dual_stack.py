"""A dual-stack StatefulSet: every ordinal gets one IPv4 and one IPv6 address on
one home node at one epoch, keeps both across pod deletion, and takes both to
its new home when the node is confirmed gone."""

from __future__ import annotations

import ipaddress

from ipam import PoolSpec, RedisIpam, ReservationKey
from tests.integration.test_scheduler_cache import placement, replica, standin, sts, wait_bound


def both(p: dict[str, object]) -> bool:
    ann = p["metadata"]["annotations"]  # type: ignore[index]
    return "," in ann.get("stickyip.io/ip", "")  # type: ignore[union-attr,operator]


async def test_dual_stack_ordinals_keep_both_addresses_and_move_together(
        redis_url: str, ipam: RedisIpam, pool_a: PoolSpec) -> None:
    await ipam.apply_pool(PoolSpec(name="pool-a-v6", cidr="fd00:20::/112", block_size=124))
    async with standin(3) as api, replica(api, redis_url):
        await api.create(sts("ds", 2, pool="pool-a,pool-a-v6", node_failure="migrate"))
        pods = await wait_bound(api, "ds", 2, check=both)
        for name, p in pods.items():
            ann = p["metadata"]["annotations"]
            v4, v6 = (ipaddress.ip_address(a) for a in ann["stickyip.io/ip"].split(","))
            assert v4.version == 4 and v6.version == 6
            res = await ipam.reservation(ReservationKey.parse(f"default/ds/{name[-1]}"))
            assert res is not None
            assert (res.address4, res.address6) == (v4, v6)
            assert res.node == p["spec"]["nodeName"] == ann["stickyip.io/node"]
            assert ann["stickyip.io/epoch"] == str(res.epoch) == "1"
        before = placement(pods)

        # Deleted pods come back to the same node with the same two addresses.
        gone = pods["ds-1"]["metadata"]["uid"]
        await api.delete("v1", "Pod", "ds-1")
        pods = await wait_bound(api, "ds", 2, check=lambda p: both(p) and (
            p["metadata"]["uid"] != gone))
        assert placement(pods) == before

        # The home of ds-0 is confirmed gone: both addresses move, one new epoch.
        dead = before["ds-0"][0]
        old = pods["ds-0"]["metadata"]["uid"]
        await api.set_node_ready(dead, False)
        pods = await wait_bound(api, "ds", 2, within=20, check=lambda p: both(p) and (
            p["metadata"]["name"] != "ds-0" or p["metadata"]["uid"] != old))
        after = placement(pods)
        assert after["ds-0"][1] == before["ds-0"][1], "both addresses moved with the pod"
        assert after["ds-0"][0] != dead
        res = await ipam.reservation(ReservationKey.parse("default/ds/0"))
        assert res is not None and res.node == after["ds-0"][0] and res.epoch == 2
        assert pods["ds-0"]["metadata"]["annotations"]["stickyip.io/epoch"] == "2"
