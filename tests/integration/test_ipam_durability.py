"""Acknowledged means replicated (issue 16.1, client side), on real processes: with
replicas required, a write no replica confirms is refused (and a retry, even on a
fresh connection, is refused too until a replica has it); a stalled store is refused
within the call's deadline; and when the Sentinels promote a new master the client
drops its connections to the old one at once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from ipam import (
    PoolSpec,
    RedisIpam,
    ReservationKey,
    StoreUnavailable,
    ephemeral_owner,
    layout,
    open_ipam,
)
from ipam.config import IpamSettings
from ipam.connection import CLIENT_NAME, open_redis, switch_watch
from tests.support.redis_server import RedisServer, running_sentinel, sentinel_command

POOL = PoolSpec(name="dur", cidr="10.61.0.0/24", block_size=28)


@dataclass
class Pair:
    master: RedisServer
    replica: RedisServer


def paused(server: RedisServer) -> int:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    return server.proc.pid


async def wait_for(check: object, what: str, within: float = 20.0) -> None:
    """Wait for a condition the servers report (replication links, roles)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def in_sync(master_url: str, replicas: int = 1) -> bool:
    r = aioredis.Redis.from_url(master_url)
    try:
        info = await r.info("replication")
        return int(info.get("connected_slaves", 0)) >= replicas and all(
            info[k]["state"] == "online" for k in info if k.startswith("slave") and
            isinstance(info[k], dict))
    finally:
        await r.aclose()


#: a full sync starts at once instead of waiting 5 s for more replicas
FAST_SYNC = ["--repl-diskless-sync-delay", "0"]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    with RedisServer(extra=FAST_SYNC) as master, RedisServer(
            extra=[*FAST_SYNC, "--replicaof", "127.0.0.1", str(master.port)]) as replica:
        try:
            await wait_for(lambda: in_sync(master.url), "the replica to sync")
            yield Pair(master, replica)
        finally:
            for s in (master, replica):
                if s.proc is not None and s.proc.poll() is None:
                    os.kill(s.proc.pid, signal.SIGCONT)


async def test_a_write_no_replica_confirms_is_refused_and_a_retry_is_safe(pair: Pair) -> None:
    client, _ = await open_redis(pair.master.url)
    ipam = RedisIpam(client, actor="dur", replicas=1, replica_timeout=1.0)
    await ipam.apply_pool(POOL)
    first = await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("c1"))
    pid = paused(pair.replica)
    try:
        with pytest.raises(StoreUnavailable, match="not acknowledged"):
            await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("c2"))
        # the master applied it; a retry from another client (a fresh connection, so
        # WAIT alone would count no write of its own) is not confirmed either
        other, _ = await open_redis(pair.master.url)
        retry = RedisIpam(other, actor="dur", replicas=1, replica_timeout=1.0)
        try:
            with pytest.raises(StoreUnavailable, match="replicas"):
                await retry.allocate(pool="dur", node="n1", owner=ephemeral_owner("c2"))
        finally:
            await retry.aclose()
    finally:
        os.kill(pid, signal.SIGCONT)
    again = await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("c2"))
    assert again.address is not None and again.address != first.address
    # the replica holds it now, with the same address
    r = aioredis.Redis.from_url(pair.replica.url)
    try:
        assert await r.hexists(layout.RECORDS, "eph/c2/eth0")
    finally:
        await r.aclose()
    await ipam.aclose()


async def test_settings_carry_the_replica_count_to_open_ipam(pair: Pair) -> None:
    settings = IpamSettings.model_validate({"redis_replicas": 1,
                                            "redis_replica_timeout": 1.0})
    ipam = await open_ipam(pair.master.url, actor="dur", settings=settings)
    try:
        await ipam.apply_pool(POOL)
        pid = paused(pair.replica)
        try:
            with pytest.raises(StoreUnavailable, match="replicas"):
                await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("s"))
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        await ipam.aclose()


async def test_a_stalled_store_is_refused_within_the_deadline(redis_server: RedisServer,
                                                              redis_url: str) -> None:
    # the default client: 2 s socket timeout, 3 retries (about 8 s when stalled)
    client, _ = await open_redis(redis_url)
    ipam = RedisIpam(client, actor="dur")
    await ipam.apply_pool(POOL)
    await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("warm"))
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="deadline"), ipam.deadline(0.5):
            await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("late"))
        took = time.monotonic() - started
        assert 0.45 <= took < 1.0, took
        # the same bound as a setting of the client, for every call
        bounded = RedisIpam(client, actor="dur", call_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="deadline"):
            await bounded.reservation(ReservationKey.of("a", "b", 0))
        assert time.monotonic() - started < 0.8
    finally:
        os.kill(pid, signal.SIGCONT)
    # the server answers again: the refused call may have been applied, and its retry
    # returns that one allocation
    got = await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("late"))
    again = await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("late"))
    assert got.address == again.address
    assert (await ipam.pool_status("dur")).used == 2
    await ipam.aclose()


# ---------------------------------------------------------------- Sentinel


@dataclass
class Cluster:
    servers: list[RedisServer]
    sentinel_port: int


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with RedisServer(extra=FAST_SYNC) as master, RedisServer(
            extra=[*FAST_SYNC, "--replicaof", "127.0.0.1", str(master.port)]) as replica, \
            running_sentinel(master, "sentinel down-after-milliseconds stickyip 2000",
                             "sentinel failover-timeout stickyip 10000",
                             ready=("SENTINEL", "replicas", "stickyip"), names=replica,
                             within=30) as port:
        yield Cluster([master, replica], port)


async def our_connections(url: str) -> int:
    r = aioredis.Redis.from_url(url)
    try:
        return sum(1 for c in await r.client_list() if c.get("name") == CLIENT_NAME)
    finally:
        await r.aclose()


async def role(url: str) -> str:
    r = aioredis.Redis.from_url(url)
    try:
        return str((await r.execute_command("ROLE"))[0].decode())
    finally:
        await r.aclose()


async def test_clients_leave_a_demoted_master_at_once(cluster: Cluster) -> None:
    old, new = cluster.servers
    await wait_for(lambda: in_sync(old.url), "the replica to sync")
    ipam = await open_ipam(f"redis+sentinel://127.0.0.1:{cluster.sentinel_port}/stickyip",
                           actor="dur", settings=IpamSettings.model_validate(
                               {"redis_replicas": 1, "redis_replica_timeout": 2.0}))
    try:
        watch = switch_watch(ipam.redis)
        assert watch is not None
        await asyncio.wait_for(watch.subscribed.wait(), 10)
        await ipam.apply_pool(POOL)
        before = await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("a"))
        assert await our_connections(old.url) >= 1
        # the Sentinel refuses (-NOGOODSLAVE) until it has seen the replica healthy
        async def failover() -> bool:
            return sentinel_command(cluster.sentinel_port, "SENTINEL", "FAILOVER",
                                "stickyip").startswith(b"+OK")

        await wait_for(failover, "the sentinel to accept a failover", within=30)
        await asyncio.wait_for(watch.switched.wait(), 30)
        # the moment the switch is announced, nothing of ours talks to the old master
        assert await our_connections(old.url) == 0
        await wait_for(lambda: in_sync(new.url), "the old master to follow the new one")
        after = await ipam.allocate(pool="dur", node="n1", owner=ephemeral_owner("b"))
        assert await role(new.url) == "master"
        assert await our_connections(new.url) >= 1 and await our_connections(old.url) == 0
        assert after.address != before.address
        r = aioredis.Redis.from_url(new.url)
        try:
            assert await r.hexists(layout.RECORDS, "eph/a/eth0")
            assert await r.hexists(layout.RECORDS, "eph/b/eth0")
        finally:
            await r.aclose()
    finally:
        await ipam.aclose()


async def test_a_retried_command_reconnects_to_the_master_the_sentinels_name(
        cluster: Cluster) -> None:
    """redis-py reconnects a broken connection to the address it had when the client
    retries a command; after a failover that address is the old master's."""
    old, new = cluster.servers
    await wait_for(lambda: in_sync(old.url), "the replica to sync")
    ipam = await open_ipam(f"redis+sentinel://127.0.0.1:{cluster.sentinel_port}/stickyip",
                           actor="dur")
    try:
        watch = switch_watch(ipam.redis)
        assert watch is not None
        await asyncio.wait_for(watch.subscribed.wait(), 10)
        pool = ipam.redis.connection_pool
        conn = await pool.get_connection()
        assert conn.port == old.port

        async def failover() -> bool:
            return sentinel_command(cluster.sentinel_port, "SENTINEL", "FAILOVER",
                                "stickyip").startswith(b"+OK")

        await wait_for(failover, "the sentinel to accept a failover", within=30)
        await asyncio.wait_for(watch.switched.wait(), 30)
        # what the retry policy does with a connection that broke: send again
        await conn.disconnect()
        await conn.send_command("PING")
        assert await conn.read_response() == b"PONG"
        assert conn.port == new.port
        await pool.release(conn)
    finally:
        await ipam.aclose()
