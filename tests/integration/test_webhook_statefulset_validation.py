"""StatefulSets through the real HTTPS server: impossible requests (missing pool,
addresses held by others, scale-up beyond capacity, re-IP on update) are refused
up front with a message that names the fix; possible ones are allowed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ipam import PoolSpec, RedisIpam, ReservationKey
from tests.support.admission import Client, live_webhook, review, statefulset, statefulset_pod


@pytest.fixture
async def hook(ipam: RedisIpam, tmp_path: Path) -> AsyncIterator[Client]:
    # 16 addresses, minus the first and last: 14 usable.
    await ipam.apply_pool(PoolSpec(name="small", cidr="10.40.0.0/28", block_size=28))
    await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28,
                                   exclude=["10.20.0.100"]))
    async with live_webhook(ipam, str(tmp_path)) as (_, client, _):
        yield client


async def judge(client: Client, sts: dict[str, Any], old: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    body = review(sts, old=old, operation="UPDATE" if old else "CREATE")
    status, answer = await client.post("/validate-statefulsets", body)
    assert status == 200, answer
    resp: dict[str, Any] = answer["response"]
    assert resp["uid"] == body["request"]["uid"] and "patch" not in resp
    return resp


def small(replicas: int, name: str = "db") -> dict[str, Any]:
    return statefulset(name, replicas=replicas, annotations={"stickyip.io/pool": "small"})


async def test_possible_statefulset_is_allowed(hook: Client) -> None:
    resp = await judge(hook, statefulset("db", annotations={
        "stickyip.io/pool": "pool-a", "stickyip.io/ips": "10.20.0.10-10.20.0.12",
        "stickyip.io/retain": "24h", "stickyip.io/node-failure": "wait"}))
    assert resp["allowed"] is True


async def test_missing_pool(hook: Client) -> None:
    resp = await judge(hook, statefulset("db", annotations={"stickyip.io/pool": "prod-z"}))
    assert resp["allowed"] is False
    msg = resp["status"]["message"]
    assert "'prod-z' does not exist" in msg and "pool-a" in msg and "small" in msg


async def test_default_pool_must_exist_too(hook: Client) -> None:
    resp = await judge(hook, statefulset("db"))
    assert resp["allowed"] is False and "'default' does not exist" in resp["status"]["message"]


async def test_syntax_error(hook: Client) -> None:
    resp = await judge(hook, statefulset("db", annotations={"stickyip.io/retain": "1 day"}))
    assert resp["allowed"] is False and resp["status"]["code"] == 422
    assert "'24h'" in resp["status"]["message"]


async def test_addresses_outside_excluded_or_held(hook: Client, ipam: RedisIpam) -> None:
    await ipam.claim(ReservationKey.of("prod", "cache", 0), pool="pool-a", address="10.20.0.11")
    resp = await judge(hook, statefulset("db", annotations={
        "stickyip.io/pool": "pool-a", "stickyip.io/ips": "10.20.0.10,10.20.0.11,10.20.0.100"}))
    assert resp["allowed"] is False and resp["status"]["code"] == 409
    msg = resp["status"]["message"]
    assert "10.20.0.11 (ordinal 1) is held by sts/prod/cache/0" in msg
    assert "10.20.0.100 (ordinal 2) is excluded" in msg
    resp = await judge(hook, statefulset("db", replicas=1, annotations={
        "stickyip.io/pool": "pool-a", "stickyip.io/ips": "10.99.0.1"}))
    assert "outside pool 'pool-a'" in resp["status"]["message"]


async def test_own_addresses_do_not_conflict(hook: Client, ipam: RedisIpam) -> None:
    sts = statefulset("db", annotations={"stickyip.io/pool": "pool-a",
                                         "stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    for i in range(3):
        _, answer = await hook.post("/mutate-pods", review(statefulset_pod(sts, i)))
        assert answer["response"]["allowed"] is True
    assert (await judge(hook, sts, old=sts))["allowed"] is True


async def test_too_few_listed_addresses(hook: Client) -> None:
    resp = await judge(hook, statefulset("db", replicas=4, annotations={
        "stickyip.io/pool": "pool-a", "stickyip.io/ips": "10.20.0.10-10.20.0.12"}))
    assert resp["allowed"] is False
    assert "add 1 address(es) to stickyip.io/ips or set replicas to 3" in \
        resp["status"]["message"]


async def test_scale_up_beyond_capacity(hook: Client, ipam: RedisIpam) -> None:
    assert (await judge(hook, small(14)))["allowed"] is True
    resp = await judge(hook, small(15))
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    assert "14 free address(es)" in resp["status"]["message"]
    # Another StatefulSet takes 10 addresses; db (4 replicas, all placed) may not
    # grow past the 4 free left plus the 4 it holds.
    for i in range(10):
        await ipam.claim(ReservationKey.of("prod", "other", i), pool="small", node="node-1")
    for i in range(4):
        await ipam.claim(ReservationKey.of("prod", "db", i), pool="small", node="node-1")
    assert (await judge(hook, small(4), old=small(4)))["allowed"] is True
    resp = await judge(hook, small(5), old=small(4))
    assert resp["allowed"] is False
    assert "0 free address(es) but 5 replicas need 1 more" in resp["status"]["message"]


async def test_reip_on_update_is_refused_with_how(hook: Client) -> None:
    old = statefulset("db", annotations={"stickyip.io/pool": "pool-a",
                                         "stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    moved = statefulset("db", annotations={"stickyip.io/pool": "small"})
    resp = await judge(hook, moved, old=old)
    assert resp["allowed"] is False
    assert "stickyip ipam release prod/db/ORDINAL" in resp["status"]["message"]
    renumbered = statefulset("db", annotations={"stickyip.io/pool": "pool-a",
                                                "stickyip.io/ips": "10.20.0.13-10.20.0.15"})
    resp = await judge(hook, renumbered, old=old)
    assert resp["allowed"] is False and "only grow" in resp["status"]["message"]
    grown = statefulset("db", replicas=5, annotations={
        "stickyip.io/pool": "pool-a", "stickyip.io/ips": "10.20.0.10-10.20.0.14"})
    assert (await judge(hook, grown, old=old))["allowed"] is True


async def test_recreated_statefulset_with_reservations_elsewhere(
        hook: Client, ipam: RedisIpam) -> None:
    await ipam.claim(ReservationKey.of("prod", "db", 0), pool="pool-a", address="10.20.0.30",
                     retain=3600.0)
    await ipam.retain_reservation(ReservationKey.of("prod", "db", 0), pool="pool-a")
    resp = await judge(hook, small(2))
    assert resp["allowed"] is False
    assert "ordinal 0 still holds a reservation in pool 'pool-a'" in resp["status"]["message"]
    resp = await judge(hook, statefulset("db", replicas=1, annotations={
        "stickyip.io/pool": "pool-a", "stickyip.io/ips": "10.20.0.31"}))
    assert "ordinal 0 already holds 10.20.0.30" in resp["status"]["message"]


async def test_not_opted_in_and_deletes_are_allowed(hook: Client) -> None:
    assert (await judge(hook, statefulset("db", opt_in=False)))["allowed"] is True
    body = review(statefulset("db"), operation="DELETE")
    status, answer = await hook.post("/validate-statefulsets", body)
    assert status == 200 and answer["response"]["allowed"] is True
