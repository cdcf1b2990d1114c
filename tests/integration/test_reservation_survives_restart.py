"""Crash safety: SIGKILL of redis-server during concurrent allocations, restart from
AOF; every acknowledged allocation is still there, and no address has two owners.
And a client that times out and retries never allocates twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipam import PoolSpec, RedisIpam, check_and_repair, ephemeral_owner
from ipam.connection import open_redis
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(appendfsync="everysec") as s:
        yield s


async def _ipam(url: str) -> RedisIpam:
    client, _ = await open_redis(url)
    return RedisIpam(client, actor="test")


def _workers(url: str, n: int, seconds: float) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.alloc_worker", url, "crash", f"n{i % 3}",
             f"w{i}", str(seconds)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(n)
    ]


async def test_acknowledged_allocations_survive_kill9(server: RedisServer) -> None:
    ipam = await _ipam(server.url)
    await ipam.apply_pool(PoolSpec(name="crash", cidr="10.40.0.0/16", block_size=26))
    await ipam.aclose()

    procs = _workers(server.url, 4, seconds=3.0)
    await asyncio.sleep(1.2)
    server.kill9()  # mid-run, without warning
    await asyncio.sleep(0.3)
    server.start()  # same port and directory: replays the AOF
    acked: dict[str, str] = {}
    errors = 0
    for p in procs:
        out, err = p.communicate(timeout=30)
        errors += err.count("unacked")
        for line in out.splitlines():
            owner, addr = line.split()
            acked[owner] = addr
    assert len(acked) > 100, "the workers acknowledged too few allocations to mean anything"

    ipam = await _ipam(server.url)
    try:
        lost = []
        for owner, addr in acked.items():
            lease = await ipam.lease(pool="crash", owner=owner)  # type: ignore[arg-type]
            if lease is None or str(lease.address) != addr:
                lost.append((owner, addr, lease))
        assert lost == [], f"{len(lost)} acknowledged allocations lost after kill -9"
        recs = await ipam.all_records("crash")
        addresses = [r.address for r in recs]
        assert len(addresses) == len(set(addresses)), "an address has two owners"
        assert await check_and_repair(ipam) == []
    finally:
        await ipam.aclose()


async def test_retry_after_timeout_allocates_once(server: RedisServer) -> None:
    ipam = await _ipam(server.url)
    await ipam.apply_pool(PoolSpec(name="crash", cidr="10.40.0.0/16", block_size=26))
    await ipam.aclose()
    assert server.proc is not None
    pid = server.proc.pid
    client, _ = await open_redis(server.url, socket_timeout=0.2, retries=10)
    retrying = RedisIpam(client, actor="retrying")
    await retrying.pool("crash")  # cache the pool so the next call is the script itself
    await retrying.allocate(pool="crash", node="n1", owner=ephemeral_owner("warm"))

    os.kill(pid, signal.SIGSTOP)  # the server takes the request but cannot answer
    resume = threading.Timer(0.7, os.kill, (pid, signal.SIGCONT))
    resume.start()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(
            retrying.allocate(pool="crash", node="n1", owner=ephemeral_owner(f"r{i}"))
            for i in range(5)))
        assert time.monotonic() - started > 0.2, "the server was never stalled"
    finally:
        resume.join()
        os.kill(pid, signal.SIGCONT)
    await retrying.aclose()

    ipam = await _ipam(server.url)
    try:
        held = sorted(r.owner for r in await ipam.all_records("crash"))
        assert held == sorted(["eph/warm/eth0"] + [f"eph/r{i}/eth0" for i in range(5)]), (
            "a retried call allocated twice")
        for r in results:
            lease = await ipam.lease(pool="crash", owner=r.owner)
            assert lease is not None and lease.address == r.address
        assert await check_and_repair(ipam) == []
    finally:
        await ipam.aclose()
