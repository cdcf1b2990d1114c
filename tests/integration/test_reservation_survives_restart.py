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


class Workers:
    """Allocating client processes that run until told to stop; their acknowledged
    allocations are read as they come (``acked``), so the test acts on what the
    clients have seen, not on a clock."""

    def __init__(self, url: str, n: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.alloc_worker", url, "crash",
                 f"n{i % 3}", f"w{i}", "0"],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            for i in range(n)]
        self.acked: dict[str, str] = {}
        self._lock = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(p,), daemon=True)
                         for p in self.procs]
        for t in self._readers:
            t.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            owner, addr = line.split()
            with self._lock:
                self.acked[owner] = addr
                self._lock.notify_all()

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    async def wait_acked(self, n: int, *, within: float = 60.0) -> None:
        """Until ``n`` allocations in all are acknowledged (a failure after ``within``)."""
        def wait() -> bool:
            with self._lock:
                return self._lock.wait_for(lambda: len(self.acked) >= n, timeout=within)
        assert await asyncio.to_thread(wait), (
            f"only {self.count()} of {n} allocations acknowledged within {within} s")

    def stop(self) -> int:
        """Stop every worker; the number of calls they reported unacknowledged."""
        errors = 0
        for p in self.procs:
            assert p.stdin is not None and p.stderr is not None
            p.stdin.close()
        for p, t in zip(self.procs, self._readers, strict=True):
            assert p.stderr is not None
            errors += p.stderr.read().count("unacked")
            p.wait(timeout=30)
            t.join(timeout=30)
        return errors


async def test_acknowledged_allocations_survive_kill9(server: RedisServer) -> None:
    ipam = await _ipam(server.url)
    await ipam.apply_pool(PoolSpec(name="crash", cidr="10.40.0.0/16", block_size=26))
    await ipam.aclose()

    workers = Workers(server.url, 4)
    try:
        await workers.wait_acked(150)  # the clients are busy allocating
        server.kill9()  # mid-run, without warning
        before = workers.count()
        server.start()  # same port and directory: replays the AOF
        await workers.wait_acked(before + 100)  # and they carry on against the restart
    finally:
        workers.stop()
    acked = dict(workers.acked)

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

    # The server is resumed once the client has timed out and is about to re-send:
    # the first attempt sits unanswered in the stopped server, the retry follows it.
    backoff = client.connection_pool.connection_kwargs["retry"]._backoff
    compute = backoff.compute
    retried = asyncio.Event()

    def counting(failures: int) -> float:
        retried.set()
        return float(compute(failures))

    backoff.compute = counting
    os.kill(pid, signal.SIGSTOP)  # the server takes the request but cannot answer
    try:
        calls = asyncio.gather(*(
            retrying.allocate(pool="crash", node="n1", owner=ephemeral_owner(f"r{i}"))
            for i in range(5)))
        await asyncio.wait_for(retried.wait(), timeout=30)
        os.kill(pid, signal.SIGCONT)
        results = await calls
    finally:
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
