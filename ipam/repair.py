"""``stickyip ipam check [--repair]``: read the store in one transaction, compare with
the pure :mod:`ipam.check`, and fix each finding with a script that re-checks it
atomically (so allocation never has to stop)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from ipam import layout, scripts
from ipam.check import REPAIR_ORDER, BlockState, PoolSnapshot, StoreSnapshot, check_store
from ipam.errors import StoreUnavailable
from ipam.models import Finding, PoolName, PoolSpec
from ipam.redis_store import RedisIpam


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def _scan_keys(ipam: RedisIpam) -> list[str]:
    return [_s(k) async for k in ipam.redis.scan_iter(match="sip:*", count=1000)]


async def read_store(ipam: RedisIpam, *, pools: Sequence[str] | None = None,
                     keys: bool = True) -> StoreSnapshot:
    """Every record and every key of the chosen pools, read in one transaction (the
    key names are listed first; blocks that appear in between are skipped)."""
    r = ipam.redis
    try:
        all_keys = await _scan_keys(ipam) if keys else []
        async with r.pipeline(transaction=False) as pipe:
            pipe.hgetall(layout.POOLS)
            pipe.hgetall(layout.SPECS)
            regs_raw, specs_raw = await pipe.execute()
        regs = {_s(k): json.loads(v) for k, v in regs_raw.items()}
        specs = {_s(k): PoolSpec.model_validate(json.loads(v)) for k, v in specs_raw.items()}
        names = [n for n in sorted(regs) if n in specs and (not pools or n in pools)]
        # blocks and nodes per pool, from the key names and the counters' fields
        per_pool: dict[str, tuple[list[str], list[str]]] = {}
        blocks: set[str]
        nodes: set[str]
        async with r.pipeline(transaction=False) as pipe:
            for n in names:
                k = layout.pool_prefix(n, str(regs[n]["g"]))
                pipe.hkeys(k + "bf")
                pipe.hkeys(k + "blk")
                pipe.hkeys(k + "bu")
                pipe.smembers(k + "nodes")
            listed = await pipe.execute()
        for i, n in enumerate(names):
            gen = str(regs[n]["g"])
            blocks = {_s(x) for x in listed[4 * i]} | {_s(x) for x in listed[4 * i + 1]} | {
                _s(x) for x in listed[4 * i + 2]}
            nodes = {_s(x) for x in listed[4 * i + 3]}
            for key in all_keys:
                parsed = layout.parse_pool_key(key)
                if parsed and parsed[0] == n and parsed[1] == gen:
                    suffix = parsed[2]
                    if suffix.startswith(("u:", "o:")):
                        blocks.add(suffix[2:])
                    elif suffix.startswith("nf:"):
                        nodes.add(suffix[3:])
            per_pool[n] = (sorted(blocks), sorted(nodes))
        async with r.pipeline(transaction=True) as pipe:
            pipe.hgetall(layout.RECORDS)
            pipe.zrange(layout.EXPIRY, 0, -1, withscores=True)
            pipe.hgetall(layout.COUNTS)
            pipe.hgetall(layout.HOMES)
            pipe.zrange(layout.BYHOME, 0, -1)
            for n in names:
                k = layout.pool_prefix(n, str(regs[n]["g"]))
                pool_blocks, pool_nodes = per_pool[n]
                pipe.hgetall(k + "m")
                pipe.hgetall(k + "blk")
                pipe.hgetall(k + "bf")
                pipe.hgetall(k + "bu")
                pipe.smembers(k + "ex")
                pipe.hgetall(k + "mig")
                pipe.zrange(k + "free", 0, -1)
                pipe.zrange(k + "fb", 0, -1)
                pipe.smembers(k + "ow")
                for b in pool_blocks:
                    pipe.get(k + f"u:{b}")
                    pipe.hgetall(k + f"o:{b}")
                for node in pool_nodes:
                    pipe.zrange(k + f"nf:{node}", 0, -1)
            res = await pipe.execute()
    except (RedisError, OSError) as e:
        raise StoreUnavailable(f"Redis store error: {e}") from e
    recs, expiry, counts, homes, byhome = res[:5]
    snap = StoreSnapshot(
        records={_s(k): _s(v) for k, v in recs.items()},
        expiry={_s(k): float(v) for k, v in expiry},
        counts={_s(k): int(v) for k, v in counts.items()},
        homes={_s(k): int(v) for k, v in homes.items()},
        byhome={_s(m) for m in byhome},
        keys=all_keys if keys else None,
        registry={n: str(v["g"]) for n, v in regs.items()})
    pos = 5
    for n in names:
        pool_blocks, pool_nodes = per_pool[n]
        m, blk, bf, bu, ex, mig, free, fb, ow = res[pos:pos + 9]
        pos += 9
        mm = {_s(k): _s(v) for k, v in m.items()}
        ps = PoolSnapshot(
            pool=PoolName(n), gen=str(regs[n]["g"]), geo=specs[n].geometry(),
            cursor=mm.get("cur", ""),
            excluded={_s(x) for x in ex}, mig={_s(k): _s(v) for k, v in mig.items()},
            free={_s(x) for x in free}, returned={_s(x) for x in fb},
            owners_index={_s(x) for x in ow},
            counters={k: int(v) for k, v in mm.items() if k != "cur"})
        bfs = {_s(k): int(v) for k, v in bf.items()}
        bus = {_s(k): int(v) for k, v in bu.items()}
        nodes_of = {_s(k): _s(v) for k, v in blk.items()}
        for b in pool_blocks:
            bitmap, owners = res[pos:pos + 2]
            pos += 2
            ps.blocks[b] = BlockState(
                bitmap=bitmap, free=bfs.get(b), used=bus.get(b),
                owners={int(k): _s(v) for k, v in owners.items()}, node=nodes_of.get(b))
        for node in pool_nodes:
            ps.node_free[node] = {_s(x) for x in res[pos]}
            pos += 1
        # blocks materialised between listing and reading are checked next time
        ps.skipped = (set(bfs) | set(nodes_of) | set(bus)) - set(pool_blocks)
        snap.pools[n] = ps
    return snap


async def check_and_repair(ipam: RedisIpam, *, repair: bool = False,
                           pools: Sequence[str] | None = None) -> list[Finding]:
    """Find inconsistencies (every pool or ``pools``, the records, the counters and,
    for the whole store, keys that belong to nothing); with ``repair``, fix each one
    atomically, records' own addresses first."""
    snap = await read_store(ipam, pools=pools, keys=not pools)
    findings = check_store(snap)
    findings.sort(key=lambda f: (REPAIR_ORDER.get(f.kind, 9), f.pool, f.offset))
    if not repair:
        return findings
    if any(f.kind == "old-layout-key" for f in findings):
        old = [f.key for f in findings if f.kind == "old-layout-key"]
        try:
            for i in range(0, len(old), 500):
                await ipam.redis.delete(*old[i:i + 500])
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"Redis store error: {e}") from e
        for f in findings:
            if f.kind == "old-layout-key":
                f.repaired = True
        ipam._layout_checked = False
    if all(f.repaired for f in findings):
        return findings
    await ipam.check_layout()
    counters_done = False
    blocks_done: set[tuple[str, str]] = set()
    orphans = [f for f in findings if f.kind == "orphan-key"]
    for f in findings:
        if f.repaired or f.kind in ("orphan-key", "record-damaged"):
            continue
        if f.kind == "owner-without-address":
            reply = await ipam._eval(scripts.REPAIR_OWNER, f.owner, ipam._now(None),
                                     ipam.actor)
        elif REPAIR_ORDER.get(f.kind) == 1:
            bh, _, o = f.key.partition(":")
            reply = await ipam._eval(scripts.REPAIR_ADDRESS, f.pool, bh, o, ipam._now(None),
                                     ipam.actor)
        elif REPAIR_ORDER.get(f.kind) == 2:
            if (f.pool, f.key) not in blocks_done:
                reply = await ipam._eval(scripts.REPAIR_BLOCK, f.pool, f.key)
                blocks_done.add((f.pool, f.key))
            else:
                reply = ["ok"]
        elif REPAIR_ORDER.get(f.kind) == 3:
            if not counters_done:
                reply = await ipam._eval(scripts.REPAIR_COUNTERS)
                counters_done = True
            else:
                reply = ["ok"]
        else:
            continue
        f.repaired = reply[0] != "err"
    if orphans:
        keys = [f.key for f in orphans]
        for i in range(0, len(keys), 500):
            reply = await ipam._eval(scripts.DELETE_ORPHANS, *keys[i:i + 500])
        for f in orphans:
            f.repaired = reply[0] != "err"
    return findings
