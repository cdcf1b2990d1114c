"""IPAM benchmark (``make bench-ipam`` → bench/results/ipam.json).

Allocate+release pairs through the product's client (``RedisIpam``, its batching on)
against a real redis-server with AOF everysec, in ONE declared layout (``LAYOUT``:
client processes x concurrent callers, each caller allocating on its own node).
Every worker connects and warms up first, then all start at one shared instant and
stop at one shared deadline; a pair counts only if it completed inside that window.
Every series runs ``ROUNDS`` rounds; rows take the median over rounds, and every
round is in ``detail``.

Baselines in the same run, all from redis-benchmark (C, no Python client) at the same
connection counts and rounds: our ALLOCATE and RELEASE scripts as one allocate+release
call (the server-side ceiling of the product's scripts), and a bare Lua allocator (a
bitmap and an owner hash, nothing else). Then a hold phase allocates without
releasing from every caller at once and counts addresses handed out twice.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ipam_failover
from bench.common import Report, percentile, tool_version
from ipam import PoolSpec, RedisIpam, check_and_repair, layout, scripts
from ipam.connection import open_redis
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
POOL = "bench"
ROUNDS = int(os.environ.get("STICKYIP_BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("STICKYIP_BENCH_IPAM_SECONDS", "4"))
#: Development only: STICKYIP_BENCH_IPAM_FAILOVER=0 skips the failover rows (~2 min);
#: a published run (the default) measures them.
FAILOVER = os.environ.get("STICKYIP_BENCH_IPAM_FAILOVER", "1") != "0"
#: The declared layout of the headline: client processes (a node agent, webhook or
#: scheduler replica each), concurrent callers per process (pods being set up at
#: once), Redis connections per process (at most one per caller), and one node per
#: caller (each allocates from its own node's block, as agents do).
LAYOUT = {"processes": 4, "callers_per_process": 16, "connections_per_process": 16}
#: Further series: name -> (processes, callers per process, batching)
SERIES: dict[str, tuple[int, int, bool]] = {
    "1_client": (1, 1, True),
    "8_clients": (2, 4, True),
    "64_clients": (LAYOUT["processes"], LAYOUT["callers_per_process"], True),
    "64_clients_unbatched": (LAYOUT["processes"], LAYOUT["callers_per_process"], False),
}
RAW_CLIENTS = (1, 8, 64)
RAW_REQUESTS = {1: 20000, 8: 60000, 64: 60000}

#: Our two scripts as one allocate+release call, for redis-benchmark (which cannot
#: chain calls): the same bodies the product runs. ARGV: owner, node, now, actor, pool.
OUR_PAIR = scripts.lean(
    scripts.PRELUDE + "local function allocate(ARGV)\n" + scripts.ALLOCATE_BODY + "end\n"
    + "local function release(ARGV)\n" + scripts.RELEASE_BODY + "end\n" + """
local a = allocate({ARGV[1], ARGV[2], ARGV[3], ARGV[4], '', '', '1', '1', ARGV[5]})
if a[1] ~= 'new' then return a end
CH = {}
return release({ARGV[1], ARGV[3], ARGV[4], '', '0', ''})
""")
#: A bare Lua allocator: a free-address bitmap and an owner hash, nothing else.
BARE_PAIR = """
local u, o = KEYS[1]..':u', KEYS[1]..':o'
local a = redis.call('BITPOS', u, 0)
redis.call('SETBIT', u, a, 1)
redis.call('HSET', o, ARGV[1], a)
local got = tonumber(redis.call('HGET', o, ARGV[1]))
redis.call('HDEL', o, ARGV[1])
redis.call('SETBIT', u, got, 0)
return a
"""


class Workers:
    """Client processes that connect and warm up, then take one command together."""

    def __init__(self, url: str, procs: int, callers: int, *, batching: bool, tag: str,
                 connections: int | None = None) -> None:
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "bench.ipam_worker", url, POOL, f"{tag}{i}", str(callers),
             str(connections or callers), str(i * callers), "1" if batching else "0"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for i in range(procs)]
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                self.close()
                raise RuntimeError(f"a bench worker did not start (said {line!r})")

    def command(self, text: str) -> list[dict[str, Any]]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(text + "\n")
            p.stdin.flush()
        out = []
        for p in self.procs:
            stdout, _ = p.communicate(timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"a bench worker failed with {p.returncode}")
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def redis_cpu_s(port: int) -> tuple[float, float]:
    """Redis's CPU time so far, and the part of it spent running scripts (s)."""
    info = subprocess.run(["redis-cli", "-p", str(port), "INFO", "all"], capture_output=True,
                          text=True, check=True).stdout
    vals = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    scripts_us = 0.0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        if name in vals:
            fields = dict(kv.split("=") for kv in vals[name].split(","))
            scripts_us += float(fields["usec"])
    return float(vals["used_cpu_sys"]) + float(vals["used_cpu_user"]), scripts_us / 1e6


def one_round(url: str, port: int, procs: int, callers: int, batching: bool, tag: str
              ) -> dict[str, Any]:
    workers = Workers(url, procs, callers, batching=batching, tag=tag,
                      connections=min(callers, LAYOUT["connections_per_process"]))
    try:
        start = time.time() + 0.2  # every worker is connected and warm: a shared start
        deadline = start + SECONDS
        cpu0, scripts0 = redis_cpu_s(port)
        res = workers.command(f"go {start!r} {deadline!r}")
        cpu1, scripts1 = redis_cpu_s(port)
        redis_cpu, scripts_s = cpu1 - cpu0, scripts1 - scripts0
    finally:
        workers.close()
    pairs = sum(r["pairs"] for r in res)
    lat = [x for r in res for x in r["lat"]]
    client_cpu = sum(r["cpu_s"] for r in res)
    return {"pairs": pairs, "allocs_per_s": pairs / SECONDS,
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "client_cpu_us_per_pair": client_cpu / pairs * 1e6 if pairs else None,
            "redis_cpu_us_per_pair": redis_cpu / pairs * 1e6 if pairs else None,
            "redis_script_us_per_pair": scripts_s / pairs * 1e6 if pairs else None}


def redis_benchmark(port: int, clients: int, n: int, args: list[str]) -> float:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise RuntimeError("redis-benchmark not found (apt-get install redis-tools)")
    cmd = [exe, "-p", str(port), "-c", str(clients), "-n", str(n), "-r", "100000000",
           "--csv", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1])


async def setup(url: str) -> tuple[str, str]:
    client, _ = await open_redis(url)
    ipam = RedisIpam(client)
    await client.flushall()
    # a /12 cut in /26 blocks: 16,384 blocks, never exhausted by the pairs
    await ipam.apply_pool(PoolSpec(name=POOL, cidr="10.96.0.0/12", block_size=26))
    ours = str(await client.script_load(OUR_PAIR))
    bare = str(await client.script_load(BARE_PAIR))
    await client.setbit("bare:u", 65535, 0)  # a 2^16-address bitmap
    await ipam.aclose()
    return ours, bare


async def consistency(url: str) -> int:
    client, _ = await open_redis(url)
    ipam = RedisIpam(client)
    findings = await check_and_repair(ipam)
    await ipam.aclose()
    return len(findings)


def med(rounds: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rounds))


def main() -> None:
    report = Report("ipam")
    with RedisServer(appendfsync="everysec") as server:
        ours_sha, bare_sha = asyncio.run(setup(server.url))
        series: dict[str, list[dict[str, Any]]] = {k: [] for k in SERIES}
        raw: dict[str, list[float]] = {f"{who}_{c}_clients": [] for who in ("ours", "bare")
                                       for c in RAW_CLIENTS}
        for rnd in range(ROUNDS):
            # every contender once per round, in turn, so load from elsewhere on the
            # machine spreads over all of them
            for name, (procs, callers, batching) in SERIES.items():
                got = one_round(server.url, server.port, procs, callers, batching,
                                tag=f"r{rnd}{name[:2]}{'b' if batching else 'u'}-")
                series[name].append(got)
                print(f"round {rnd} {name}: {got['allocs_per_s']:.0f} pairs/s "
                      f"p50 {got['p50_ms']:.3f} ms p99 {got['p99_ms']:.3f} ms", flush=True)
            for c in RAW_CLIENTS:
                o = redis_benchmark(server.port, c, RAW_REQUESTS[c], [
                    "EVALSHA", ours_sha, "1", layout.LAYOUT, "eph/raw__rand_int__/eth0",
                    f"raw-{c}", "1000", "raw", POOL])
                b = redis_benchmark(server.port, c, RAW_REQUESTS[c], [
                    "EVALSHA", bare_sha, "1", "bare", "own__rand_int__"])
                raw[f"ours_{c}_clients"].append(o)
                raw[f"bare_{c}_clients"].append(b)
                print(f"round {rnd} raw {c} clients: our scripts {o:.0f} pairs/s, "
                      f"bare allocator {b:.0f} pairs/s", flush=True)
        # duplicates: every caller of the layout holds what it allocates, all at once
        hold_workers = Workers(server.url, LAYOUT["processes"], LAYOUT["callers_per_process"],
                               batching=True, tag="hold-")
        try:
            hold = hold_workers.command("hold 150")
        finally:
            hold_workers.close()
        addrs = [a for r in hold for a in r["addresses"]]
        dups = len(addrs) - len(set(addrs))
        findings = asyncio.run(consistency(server.url))
        fsync = subprocess.run(["redis-cli", "-p", str(server.port), "CONFIG", "GET",
                                "appendfsync"], capture_output=True, text=True).stdout.split()

    head = series["64_clients"]
    aggregate = med(head, "allocs_per_s")
    raw_med = {k: float(statistics.median(v)) for k, v in raw.items()}
    report.row("allocs_per_s_aggregate", aggregate, "1/s", 20000, "higher")
    report.row("p99_ms_8_clients", med(series["8_clients"], "p99_ms"), "ms", 2, "lower")
    report.row("duplicates", dups, "count", 0, "lower")
    report.row("ratio_vs_raw_64_clients", aggregate / raw_med["ours_64_clients"], "ratio", 0.5,
               "higher")
    report.row("ratio_vs_bare_lua_allocator", raw_med["ours_64_clients"]
               / raw_med["bare_64_clients"], "ratio", 0.25, "higher")
    report.detail = {
        "layout": {**LAYOUT, "nodes": LAYOUT["processes"] * LAYOUT["callers_per_process"],
                   "batching": True, "seconds_per_round": SECONDS, "rounds": ROUNDS,
                   "window": "one shared start and deadline for every worker; pairs "
                             "completed inside it"},
        "statistic": "median over rounds (each round: pairs in the window / window; "
                     "p99 over that round's pairs)",
        "series": {k: {"processes": SERIES[k][0], "callers_per_process": SERIES[k][1],
                       "batching": SERIES[k][2],
                       "median_allocs_per_s": med(v, "allocs_per_s"),
                       "median_p99_ms": med(v, "p99_ms"), "rounds": v}
                   for k, v in series.items()},
        "raw_redis_benchmark_pairs_per_s": {"rounds": raw, "median": raw_med,
                                            "requests": RAW_REQUESTS},
        "hold_phase": {"addresses": len(addrs), "duplicates": dups,
                       "check_findings": findings},
        "baseline_config": {"redis_server": tool_version(["redis-server", "--version"]),
                            "appendfsync": fsync[-1] if fsync else "?",
                            "redis_benchmark": tool_version(["redis-benchmark", "--version"])},
        "notes": "allocs/s counts allocate+release pairs. The raw baselines are one "
                 "EVALSHA per pair (our ALLOCATE and RELEASE bodies in one script; the "
                 "bare allocator: BITPOS+SETBIT+HSET, HGET+HDEL+SETBIT) with random "
                 "owners, at the same connection counts and rounds.",
    }
    if FAILOVER:
        ipam_failover.rows(report)  # the Sentinel overlay's failovers (bench/ipam_failover.py)
    else:
        report.detail["failover"] = "skipped (STICKYIP_BENCH_IPAM_FAILOVER=0, development only)"
    report.write()


if __name__ == "__main__":
    main()
