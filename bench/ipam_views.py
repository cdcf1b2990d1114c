"""What the IPAM's read paths cost at size (``python -m bench.ipam_views`` →
bench/results/ipam_views.json): 100,000 records (IPv4, dual-stack, ephemeral,
retained, some migrated) over 5,000 nodes on a real redis-server, then Redis CPU
(INFO used_cpu_user + used_cpu_sys) and client wall time per call of each view, and
the idle cost of followers parked on the change log.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import Report, percentile
from ipam import PoolSpec, RedisIpam, ReservationKey, check_and_repair, ephemeral_owner
from ipam.connection import open_redis
from tests.support.redis_server import RedisServer

NODES = 5000
V4, V6 = "big", "big6"
PLAN = {"sticky_v4": 60_000, "sticky_dual": 20_000, "ephemeral": 15_000, "retained": 5_000}
MIGRATED = 500
FOLLOWERS = 200
FOLLOW_SECONDS = 10.0
FOLLOW_BLOCK_MS = 1000


async def cpu(ipam: RedisIpam) -> float:
    info = await ipam.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def populate(ipam: RedisIpam) -> None:
    await ipam.apply_pools([PoolSpec(name=V4, cidr="10.64.0.0/12", block_size=26),
                            PoolSpec(name=V6, cidr="fd00:64::/64", block_size=122)])
    sem = asyncio.Semaphore(256)

    async def one(aw: Awaitable[Any]) -> None:
        async with sem:
            await aw

    jobs: list[Awaitable[Any]] = []
    i = 0
    for kind, n in PLAN.items():
        for _ in range(n):
            node = f"n{i % NODES:04d}"
            if kind == "ephemeral":
                jobs.append(ipam.allocate(pool=V4, node=node, owner=ephemeral_owner(f"c{i}")))
            else:
                key = ReservationKey.of("ns", f"s{i // 100}", i % 100)
                pools = [V4, V6] if kind == "sticky_dual" else [V4]
                retain = 3600.0 if kind == "retained" else None
                jobs.append(ipam.claim(key, pools=pools, node=node, holder=f"u{i}",
                                       retain=retain))
            i += 1
    started = time.monotonic()
    await asyncio.gather(*(one(j) for j in jobs))
    print(f"populated {i} records in {time.monotonic() - started:.1f} s", flush=True)
    first_retained = PLAN["sticky_v4"] + PLAN["sticky_dual"] + PLAN["ephemeral"]
    await asyncio.gather(*(one(ipam.retain_reservation(
        ReservationKey.of("ns", f"s{j // 100}", j % 100), now=1000.0 + j))
        for j in range(first_retained, first_retained + PLAN["retained"])))
    await asyncio.gather(*(one(ipam.rehome_reservation(
        ReservationKey.of("ns", f"s{j // 100}", j % 100), to_node=f"n{(j + 1) % NODES:04d}"))
        for j in range(0, MIGRATED * 7, 7)))


async def measure(ipam: RedisIpam, name: str, call: Callable[[], Awaitable[Any]],
                  n: int) -> dict[str, float]:
    await call()  # warm: scripts loaded, pools cached
    before = await cpu(ipam)
    walls = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        walls.append((time.perf_counter() - t0) * 1000)
    spent = await cpu(ipam) - before
    out = {"redis_ms_per_call": spent / n * 1000, "wall_ms_p50": percentile(walls, 50),
           "wall_ms_p99": percentile(walls, 99), "calls": n}
    print(f"{name:28s} redis {out['redis_ms_per_call']:8.3f} ms/call  wall p50 "
          f"{out['wall_ms_p50']:8.2f} ms", flush=True)
    return out


async def followers_idle(url: str, ipam: RedisIpam) -> dict[str, float]:
    snap = await ipam.routing_snapshot()
    client, _ = await open_redis(url, max_connections=FOLLOWERS + 8)
    f = RedisIpam(client)
    stop = asyncio.Event()
    wakeups = 0

    async def follow() -> None:
        nonlocal wakeups
        while not stop.is_set():
            got = await f.read_changes(snap.revision, identity=snap.identity,
                                       block_ms=FOLLOW_BLOCK_MS)
            assert got == [], got
            wakeups += 1

    tasks = [asyncio.create_task(follow()) for _ in range(FOLLOWERS)]
    await asyncio.sleep(FOLLOW_BLOCK_MS / 1000 * 2)  # all parked
    w0, c0, t0 = wakeups, await cpu(ipam), time.monotonic()
    await asyncio.sleep(FOLLOW_SECONDS)
    spent, took, n = await cpu(ipam) - c0, time.monotonic() - t0, wakeups - w0
    stop.set()
    await asyncio.gather(*tasks)
    await f.aclose()
    per_wakeup = spent / max(n, 1)
    return {"followers": FOLLOWERS, "block_ms": FOLLOW_BLOCK_MS, "wakeups": n,
            "redis_cores": spent / took, "redis_us_per_wakeup": per_wakeup * 1e6,
            # 5,000 followers parked 30 s per read: 5000/30 wake-ups per second
            "redis_cores_5000_followers_30s_block": per_wakeup * NODES / 30.0}


async def main() -> None:
    report = Report("ipam_views")
    with RedisServer(appendfsync="everysec") as server:
        client, _ = await open_redis(server.url, max_connections=300)
        ipam = RedisIpam(client, actor="bench")
        await populate(ipam)
        st = await ipam.stats()
        assert sum(st.records.values()) == sum(PLAN.values()), st.records
        d: dict[str, Any] = {}
        d["address_view"] = await measure(ipam, "address_view (5000 nodes)",
                                          lambda: ipam.address_view(V4), 50)
        d["stats"] = await measure(ipam, "stats (with 5000 nodes)", ipam.stats, 50)
        d["stats_pools"] = await measure(ipam, "stats (pools only)",
                                         lambda: ipam.stats(nodes=False), 50)
        d["expired"] = await measure(ipam, "expired (limit 500)",
                                     lambda: ipam.expired(now=1e12), 200)
        d["scan_page"] = await measure(ipam, "scan_records page (500)",
                                       lambda: ipam.scan_records(0, count=500), 50)
        d["routing_snapshot"] = await measure(ipam, "routing_snapshot",
                                              ipam.routing_snapshot, 20)
        d["pool_status"] = await measure(ipam, "pool_status", lambda: ipam.pool_status(V4),
                                         200)
        d["all_records_scan"] = await measure(ipam, "all_records (0.1 stats pass)",
                                              lambda: ipam.all_records(V4), 3)
        d["check"] = await measure(ipam, "ipam check (whole store)",
                                   lambda: check_and_repair(ipam), 1)
        d["followers_idle"] = await followers_idle(server.url, ipam)
        print(d["followers_idle"], flush=True)
        await ipam.aclose()
    report.row("address_view_redis_ms_100k", d["address_view"]["redis_ms_per_call"], "ms",
               5.0, "lower")
    report.row("stats_redis_ms_100k", d["stats"]["redis_ms_per_call"], "ms", 5.0, "lower")
    report.row("stats_pools_only_redis_ms_100k", d["stats_pools"]["redis_ms_per_call"], "ms",
               1.0, "lower")
    report.row("pool_status_redis_ms_100k", d["pool_status"]["redis_ms_per_call"], "ms", 1.0,
               "lower")
    report.row("expired_redis_ms_100k", d["expired"]["redis_ms_per_call"], "ms", 1.0, "lower")
    report.row("scan_page_redis_ms_100k", d["scan_page"]["redis_ms_per_call"], "ms", 5.0,
               "lower")
    report.row("routing_snapshot_redis_ms_5000_nodes",
               d["routing_snapshot"]["redis_ms_per_call"], "ms", 50.0, "lower")
    report.row("idle_followers_redis_cores_5000_extrapolated",
               d["followers_idle"]["redis_cores_5000_followers_30s_block"], "cores", 0.05,
               "lower")
    report.detail = {"records": PLAN, "nodes": NODES, "migrated": MIGRATED, "calls": d}
    report.write()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
