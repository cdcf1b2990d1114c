"""Shared fixtures: a real redis-server on loopback and an IPAM client on it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from ipam import PoolSpec, RedisIpam
from ipam.connection import open_redis
from tests.support.pools import V4, V6
from tests.support.redis_server import RedisServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/tests/privileged/" in path:
            item.add_marker(pytest.mark.privileged)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(
                    reason="needs root (network namespaces, eBPF); run 'make test' as root"))
        if "/tests/e2e/" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop, kill or restart it;
    appendfsync always, so what it acknowledged survives kill -9."""
    with RedisServer(appendfsync="always") as server:
        yield server


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture
async def ipam(redis_url: str) -> AsyncIterator[RedisIpam]:
    client, _ = await open_redis(redis_url)
    store = RedisIpam(client, actor="test")
    yield store
    await store.aclose()


@pytest.fixture
async def pool_a(ipam: RedisIpam) -> PoolSpec:
    """A /24 pool cut into /28 blocks (16 addresses each)."""
    spec = PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28)
    await ipam.apply_pool(spec)
    return spec


@pytest.fixture
async def dual(ipam: RedisIpam) -> RedisIpam:
    """The store with the dual-stack pools ``v4`` and ``v6`` of tests.support.pools."""
    await ipam.apply_pools([V4, V6])
    return ipam
