"""IPAM benchmark (``make bench-ipam`` → bench/results/ipam.json).

Allocate+release pairs through the project's own allocator (RedisIpam, several
client processes) at 1, 8 and 64 concurrent clients against a real redis-server
with AOF everysec; in the same run, redis-benchmark calls the same ALLOCATE and
RELEASE scripts raw (the server-side ceiling). Then a hold phase allocates without
releasing from every client at once and counts addresses handed out twice.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ipam_failover
from bench.common import Report, percentile
from ipam import PoolSpec, RedisIpam, check_and_repair, layout, scripts
from ipam.connection import open_redis
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
POOL = "bench"
SECONDS = 4.0
#: clients -> processes (each process runs clients/processes concurrent loops)
LAYOUT = {1: 1, 8: 2, 64: 4}


def run_workers(url: str, clients: int, procs: int, seconds: float, *, batching: bool = True,
                tag: str = "w") -> list[dict[str, Any]]:
    start_at = time.time() + 1.0  # let every process connect first
    per = clients // procs
    ps = [subprocess.Popen(
        [sys.executable, "-m", "bench.ipam_worker", url, POOL, f"node-{i}", f"{tag}{i}",
         str(per), str(seconds), "1" if batching else "0", str(start_at)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True) for i in range(procs)]
    out = []
    for p in ps:
        stdout, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"bench worker failed with {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def redis_benchmark(port: int, clients: int, n: int, args: list[str]) -> float:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark not found (apt-get install redis-tools)")
    cmd = [exe, "-p", str(port), "-c", str(clients), "-n", str(n), "-r", "1000000", "--csv",
           *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1])


async def setup(url: str) -> tuple[str, str]:
    client, _ = await open_redis(url)
    ipam = RedisIpam(client)
    await client.flushall()
    # a /12 cut in /26 blocks: 16,384 blocks, never exhausted by the pairs
    await ipam.apply_pool(PoolSpec(name=POOL, cidr="10.96.0.0/12", block_size=26))
    alloc = str(await client.script_load(scripts.ALLOCATE))
    release = str(await client.script_load(scripts.RELEASE))
    await ipam.aclose()
    return alloc, release


async def consistency(url: str) -> int:
    client, _ = await open_redis(url)
    ipam = RedisIpam(client)
    findings = await check_and_repair(ipam)
    await ipam.aclose()
    return len(findings)


def main() -> None:
    report = Report("ipam")
    with RedisServer(appendfsync="everysec") as server:
        alloc_sha, release_sha = asyncio.run(setup(server.url))
        series: dict[str, Any] = {}
        for clients, procs in LAYOUT.items():
            for batching in (True, False) if clients == 64 else (True,):
                res = run_workers(server.url, clients, procs, SECONDS, batching=batching,
                                  tag=f"c{clients}{'b' if batching else 'u'}-")
                pairs = sum(r["pairs"] for r in res)
                lat = [x for r in res for x in r["lat"]]
                key = f"{clients}_clients" + ("" if batching else "_unbatched")
                series[key] = {"processes": procs, "pairs": pairs,
                               "allocs_per_s": pairs / SECONDS,
                               "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}
                print(f"ours {key}: {series[key]['allocs_per_s']:.0f} allocs/s "
                      f"p50 {series[key]['p50_ms']:.3f} ms p99 {series[key]['p99_ms']:.3f} ms",
                      flush=True)
        # raw ceiling: the same scripts from redis-benchmark (C, 64 connections)
        raw: dict[str, Any] = {}
        for clients in (1, 8, 64):
            n = 20000 if clients == 1 else 60000
            # ALLOCATE: owner, node, now, actor, pod, holder, borrow, npools, pool
            a = redis_benchmark(server.port, clients, n, [
                "EVALSHA", alloc_sha, "1", layout.LAYOUT, "eph/r__rand_int__/eth0",
                f"raw-{clients}", "1000", "raw", "", "", "1", "1", POOL])
            # RELEASE: owner, now, actor, expect_holder, force, pool
            r = redis_benchmark(server.port, clients, n, [
                "EVALSHA", release_sha, "1", layout.LAYOUT, "eph/r__rand_int__/eth0",
                "1000", "raw", "", "0", ""])
            raw[f"{clients}_clients"] = {"allocate_per_s": a, "release_per_s": r,
                                         "pairs_per_s": 1 / (1 / a + 1 / r)}
            print(f"raw {clients} clients: allocate {a:.0f}/s release {r:.0f}/s "
                  f"pairs {raw[f'{clients}_clients']['pairs_per_s']:.0f}/s", flush=True)
        # duplicates: every client holds what it allocates, all at once
        hold = run_workers(server.url, 64, 4, -150, tag="hold-")
        addrs = [a for r in hold for a in r["addresses"]]
        dups = len(addrs) - len(set(addrs))
        findings = asyncio.run(consistency(server.url))
    best = max(series[k]["allocs_per_s"] for k in series)
    report.row("allocs_per_s_aggregate", best, "1/s", 20000, "higher")
    report.row("p99_ms_8_clients", series["8_clients"]["p99_ms"], "ms", 2, "lower")
    report.row("duplicates", dups, "count", 0, "lower")
    report.row("ratio_vs_raw_64_clients",
               series["64_clients"]["allocs_per_s"] / raw["64_clients"]["pairs_per_s"],
               "ratio", 0.5, "higher")
    report.detail = {"ours": series, "raw_redis_benchmark": raw, "seconds_per_point": SECONDS,
                     "hold_phase": {"addresses": len(addrs), "duplicates": dups,
                                    "check_findings": findings},
                     "notes": "allocs/s counts allocate+release pairs; raw pairs/s combines "
                              "separate redis-benchmark runs of the ALLOCATE and RELEASE scripts "
                              "(random owners; releases of absent owners are cheaper, so the "
                              "raw ceiling is optimistic)"}
    ipam_failover.rows(report)  # the Sentinel overlay's failovers (bench/ipam_failover.py)
    report.write()


if __name__ == "__main__":
    main()
