"""Pure consistency check of the IPAM's stored state (``stickyip ipam check``).

The caller reads a snapshot; this module only compares. Each finding names one
address, owner, block, counter or key that a repair script re-checks and fixes
atomically (``ipam/repair.py``), so repairs never need allocation to stop. Findings
name addresses and block CIDRs, never raw offsets.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ipam import layout
from ipam.models import Finding, PoolName
from ipam.ranges import PoolGeometry

#: Blocks below the cursor are checked one by one only up to this many.
MAX_CURSOR_SCAN = 200_000

#: Finding kinds in the order repairs run: records' own addresses are restored
#: before any bit is freed, so a repair never hands a record's address to another.
REPAIR_ORDER = {
    "owner-without-address": 0,
    "orphan-address": 1, "bit-clear": 1, "leaked-address": 1, "excluded-bit-clear": 1,
    "migration-mismatch": 1,
    "block-bitmap-missing": 2, "block-bitmap-damaged": 2, "counter-mismatch": 2,
    "free-index-mismatch": 2, "affinity-mismatch": 2, "lost-block": 2,
    "returned-block-claimed": 2,
    "pool-counter-mismatch": 3, "index-mismatch": 3, "store-counter-mismatch": 3,
    "orphan-key": 4, "old-layout-key": 4,
    "record-damaged": 5,
}


@dataclass(slots=True)
class BlockState:
    """What the store holds about one block (any of it may be missing)."""

    bitmap: bytes | None = None
    free: int | None = None
    used: int | None = None
    owners: dict[int, str] = field(default_factory=dict)
    node: str | None = None

    def bit(self, o: int) -> bool:
        if self.bitmap is None or o // 8 >= len(self.bitmap):
            return False
        return bool(self.bitmap[o // 8] & (0x80 >> (o % 8)))


@dataclass(slots=True)
class PoolSnapshot:
    pool: PoolName
    gen: str
    geo: PoolGeometry
    cursor: str
    #: block hex -> state, for every block the store holds anything about
    blocks: dict[str, BlockState] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    mig: dict[str, str] = field(default_factory=dict)
    node_free: dict[str, set[str]] = field(default_factory=dict)
    free: set[str] = field(default_factory=set)
    returned: set[str] = field(default_factory=set)
    owners_index: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)
    #: blocks materialised after the snapshot's first read (not checked this time)
    skipped: set[str] = field(default_factory=set)


@dataclass(slots=True)
class StoreSnapshot:
    pools: dict[str, PoolSnapshot] = field(default_factory=dict)
    records: dict[str, str] = field(default_factory=dict)
    expiry: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    homes: dict[str, int] = field(default_factory=dict)
    #: the home index ("NODE|OWNER" of every homed sticky record); None when not read
    byhome: set[str] | None = None
    #: every key named ``sip:*`` (for orphan keys); None when not scanned
    keys: list[str] | None = None
    #: registered pool -> generation
    registry: dict[str, str] = field(default_factory=dict)


def _record(raw: str) -> dict[str, Any] | None:
    try:
        d = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(d, dict) or "owner" not in d or "kind" not in d:
        return None
    return d


def _class(r: dict[str, Any]) -> str:
    return "ephemeral" if r.get("kind") == "ephemeral" else str(r.get("state", ""))


def expected_counters(snap: StoreSnapshot, recs: dict[str, dict[str, Any]]
                      ) -> tuple[dict[str, int], dict[str, int], dict[str, float],
                                 dict[str, Counter[str]], dict[str, set[str]]]:
    """Counters and indexes recomputed from the records: global counts, homes,
    expiry index, per-pool record classes and per-pool owner sets."""
    counts: Counter[str] = Counter()
    homes: Counter[str] = Counter()
    expiry: dict[str, float] = {}
    per_pool: dict[str, Counter[str]] = {p: Counter() for p in snap.pools}
    owners: dict[str, set[str]] = {p: set() for p in snap.pools}
    for owner, r in recs.items():
        cls = _class(r)
        counts[cls] += 1
        for fam in ("ip4", "ip6"):
            a = r.get(fam)
            if isinstance(a, dict) and a.get("p") in snap.pools and (
                    snap.pools[a["p"]].gen == a.get("g")):
                per_pool[a["p"]][f"n:{cls}"] += 1
                owners[a["p"]].add(owner)
        if r.get("node"):
            c = "e" if r.get("kind") == "ephemeral" else (
                "w" if r.get("policy") == "wait" else "m")
            homes[f"{r['node']}|{c}"] += 1
        if r.get("kind") == "sticky" and r.get("state") == "retained" and (
                float(r.get("expires", 0)) >= 0):
            expiry[owner] = float(r.get("expires", 0))
    return dict(counts), dict(homes), expiry, per_pool, owners


def check_store(snap: StoreSnapshot) -> list[Finding]:
    out: list[Finding] = []
    recs: dict[str, dict[str, Any]] = {}
    for owner, raw in snap.records.items():
        r = _record(raw)
        if r is None or r.get("owner") != owner:
            out.append(Finding(pool=PoolName(""), kind="record-damaged", owner=owner,
                               detail=f"the record of {owner} is not a valid IPAM record"))
            continue
        recs[owner] = r
        for fam in ("ip4", "ip6"):
            a = r.get(fam)
            if isinstance(a, dict) and a.get("p") not in snap.pools:
                out.append(Finding(
                    pool=PoolName(str(a.get("p", ""))), kind="record-damaged", owner=owner,
                    detail=f"{owner} draws on pool {a.get('p')!r}, which does not exist"))
    counts, homes, expiry, per_pool, owners = expected_counters(snap, recs)
    for ps in snap.pools.values():
        out.extend(check_pool(ps, recs, per_pool[ps.pool], owners[ps.pool]))
    if {k: v for k, v in snap.counts.items() if v} != counts or (
            {k: v for k, v in snap.homes.items() if v} != homes):
        out.append(Finding(pool=PoolName(""), kind="store-counter-mismatch",
                           detail=f"record counters {snap.counts} / homes {snap.homes} differ "
                                  f"from the records ({counts} / {homes})"))
    if snap.byhome is not None:
        want = {f"{r['node']}|{o}" for o, r in recs.items()
                if r.get("kind") == "sticky" and r.get("node")}
        if snap.byhome != want:
            out.append(Finding(pool=PoolName(""), kind="store-counter-mismatch",
                               detail=f"the home index differs from the records: "
                                      f"{len(want - snap.byhome)} missing, "
                                      f"{len(snap.byhome - want)} stale"))
    if snap.expiry != expiry:
        out.append(Finding(pool=PoolName(""), kind="store-counter-mismatch",
                           detail="the expiry index of retained reservations differs from "
                                  "the records"))
    if snap.keys is not None:
        out.extend(check_keys(snap))
    return out


def check_keys(snap: StoreSnapshot) -> list[Finding]:
    out = []
    for key in snap.keys or []:
        parsed = layout.parse_pool_key(key)
        if parsed is not None:
            pool, gen, suffix = parsed
            if snap.registry.get(pool) != gen:
                why = (f"pool {pool!r} is not registered" if pool not in snap.registry
                       else f"generation {gen} of pool {pool!r} was replaced")
                out.append(Finding(pool=PoolName(pool), kind="orphan-key", key=key,
                                   detail=f"key {key}: {why}"))
            elif not layout.is_known_pool_suffix(suffix):
                out.append(Finding(pool=PoolName(pool), kind="orphan-key", key=key,
                                   detail=f"key {key} is not part of the IPAM layout"))
        elif key.startswith(layout.PREFIX):
            if not layout.is_known_global(key):
                out.append(Finding(pool=PoolName(""), kind="orphan-key", key=key,
                                   detail=f"key {key} is not part of the IPAM layout"))
        elif layout.OLD_KEY.match(key):
            out.append(Finding(pool=PoolName(""), kind="old-layout-key", key=key,
                               detail=f"key {key} belongs to stickyip 0.1's layout"))
    return out


def _popcount(bitmap: bytes, size: int) -> int:
    full, rest = divmod(size, 8)
    n = sum(bin(x).count("1") for x in bitmap[:full])
    if rest and len(bitmap) > full:
        n += bin(bitmap[full] >> (8 - rest)).count("1")
    return n


def check_pool(ps: PoolSnapshot, recs: dict[str, dict[str, Any]],
               classes: Counter[str], owners: set[str]) -> list[Finding]:
    out: list[Finding] = []
    geo = ps.geo
    bs = geo.block_size
    pool = ps.pool

    def where(bh: str, o: int) -> tuple[str, int, int]:
        b = int(bh, 16)
        return str(geo.at(b, o)), b * bs + o, b

    def addr_finding(kind: str, bh: str, o: int, detail: str, owner: str = "") -> Finding:
        addr, off, b = where(bh, o)
        return Finding(pool=pool, kind=kind, address=addr, offset=off, block=b, owner=owner,
                       key=f"{bh}:{o}", detail=detail.replace("ADDR", addr))

    def block_finding(kind: str, bh: str, detail: str) -> Finding:
        b = int(bh, 16)
        cidr = str(geo.block_cidr(b))
        return Finding(pool=pool, kind=kind, address=cidr, block=b, key=bh,
                       detail=detail.replace("BLOCK", f"block {cidr}"))

    # what the records say this pool holds
    held: dict[tuple[str, int], str] = {}
    for owner, r in recs.items():
        for fam in ("ip4", "ip6"):
            a = r.get(fam)
            if isinstance(a, dict) and a.get("p") == pool and "b" in a and (
                    a.get("g") == ps.gen):
                held[(str(a["b"]), int(a["o"]))] = owner
    excluded: dict[str, set[int]] = {}
    for k in ps.excluded:
        ebh, _, eo = k.partition(":")
        excluded.setdefault(ebh, set()).add(int(eo))

    flagged_blocks: set[str] = set()
    total_owned = 0
    exheld = 0
    for bh in sorted(set(ps.blocks) | set(excluded)):
        if bh in ps.skipped:
            continue
        st = ps.blocks.get(bh, BlockState())
        ex = excluded.get(bh, set())
        total_owned += len(st.owners)
        exheld += len(ex & set(st.owners))
        materialised = st.free is not None
        damaged = False
        if st.bitmap is None:
            if materialised or st.owners or ex or st.node:
                out.append(block_finding("block-bitmap-missing", bh,
                                         "BLOCK has no address bitmap"))
                damaged = True
        elif not materialised:
            out.append(block_finding("block-bitmap-damaged", bh,
                                     "BLOCK has a bitmap but no free counter"))
            damaged = True
        else:
            extra = any(st.bit(x) for x in range(bs, len(st.bitmap) * 8))
            if len(st.bitmap) != (bs + 7) // 8 or extra:
                out.append(block_finding(
                    "block-bitmap-damaged", bh,
                    f"BLOCK's bitmap is {len(st.bitmap)} bytes"
                    f"{' with bits past the block set' if extra else ''}, not {(bs + 7) // 8}"))
                damaged = True
        if damaged:
            flagged_blocks.add(bh)
        for o, owner in sorted(st.owners.items()):
            if held.get((bh, o)) != owner:
                out.append(addr_finding("orphan-address", bh, o,
                                        f"ADDR is held by {owner}, which has no record "
                                        "holding it", owner))
            elif not damaged and not st.bit(o):
                out.append(addr_finding("bit-clear", bh, o,
                                        f"ADDR is held by {owner} but marked free", owner))
        if st.bitmap is not None and not damaged:
            for i, byte in enumerate(st.bitmap):
                if not byte:
                    continue
                for j in range(8):
                    o = i * 8 + j
                    if o < bs and byte & (0x80 >> j) and o not in st.owners and o not in ex:
                        out.append(addr_finding("leaked-address", bh, o,
                                                "ADDR is marked used with no owner"))
        if not damaged:
            for o in sorted(ex - set(st.owners)):
                if not st.bit(o):
                    out.append(addr_finding("excluded-bit-clear", bh, o,
                                            "ADDR is excluded but marked free"))
        if st.bitmap is not None and not damaged:
            clear = bs - _popcount(st.bitmap, bs)
            if st.free != clear:
                out.append(block_finding("counter-mismatch", bh,
                                         f"BLOCK counts {st.free} free, has {clear}"))
                flagged_blocks.add(bh)
        if (st.used or 0) != len(st.owners):
            out.append(block_finding("counter-mismatch", bh,
                                     f"BLOCK counts {st.used or 0} held, holds {len(st.owners)}"))
            flagged_blocks.add(bh)
        # free-space indexes
        if st.node is not None and not damaged and bh not in flagged_blocks:
            has_free = (st.free if st.free is not None else bs) > 0
            listed = bh in ps.node_free.get(st.node, set()) and bh in ps.free
            partly = bh in ps.node_free.get(st.node, set()) or bh in ps.free
            if has_free != listed or (not has_free and partly):
                state = "has free addresses but is not" if has_free else "is full but is"
                out.append(block_finding("free-index-mismatch", bh,
                                         f"BLOCK of {st.node} {state} listed as having free "
                                         "space"))
                flagged_blocks.add(bh)
        if st.node is None and bh in ps.free:
            out.append(block_finding("free-index-mismatch", bh,
                                     "BLOCK is unclaimed but listed as a claimed block with "
                                     "free space"))
        if st.node is not None and bh in ps.returned:
            out.append(block_finding("returned-block-claimed", bh,
                                     f"BLOCK is claimed by {st.node} but also listed as "
                                     "given back"))
    # blocks listed as free for a node that does not own them
    for node, listed_blocks in sorted(ps.node_free.items()):
        for bh in sorted(listed_blocks):
            owner_node = ps.blocks.get(bh, BlockState()).node
            if owner_node != node and bh not in ps.skipped:
                out.append(block_finding("affinity-mismatch", bh,
                                         f"node {node} lists BLOCK as its own, which belongs "
                                         f"to {owner_node or 'nobody'}"))
    # blocks the cursor passed that nobody holds and nobody can get any more
    cursor = geo.block_count if ps.cursor == "end" else (
        int(ps.cursor, 16) if ps.cursor else 0)
    if cursor <= MAX_CURSOR_SCAN:
        for b in range(cursor):
            bh = geo.block_hex(b)
            seen = ps.blocks.get(bh)
            if bh in ps.returned or bh in ps.skipped or (seen is not None and seen.node):
                continue
            if seen is None or seen.free is None or seen.free > 0:
                out.append(block_finding("lost-block", bh,
                                         "BLOCK is unclaimed, below the pool's block cursor and "
                                         "not listed as given back: it would never be handed "
                                         "out"))
    # migrated addresses must agree with their holders
    for k, node in sorted(ps.mig.items()):
        mbh, _, o_text = k.partition(":")
        mo = int(o_text)
        if mbh in ps.skipped:
            continue
        mst = ps.blocks.get(mbh, BlockState())
        holder = mst.owners.get(mo)
        rec = recs.get(holder) if holder else None
        if rec is None:
            out.append(addr_finding("migration-mismatch", mbh, mo,
                                    f"ADDR is routed to {node} but nobody holds it"))
            continue
        if _want_mig(rec, mst.node) != node:
            out.append(addr_finding("migration-mismatch", mbh, mo,
                                    f"ADDR is routed to {node}, its holder {holder} is homed "
                                    f"on {rec.get('node') or 'no node'}", holder or ""))
    for (hbh, ho), howner in sorted(held.items()):
        hst = ps.blocks.get(hbh, BlockState())
        if hbh in ps.skipped:
            continue
        if hst.owners.get(ho) != howner:
            other = hst.owners.get(ho)
            state = f"held by {other}" if other else "not held"
            out.append(addr_finding("owner-without-address", hbh, ho,
                                    f"{howner} records ADDR, which is {state}", howner))
            continue
        hrec = recs[howner]
        want = _want_mig(hrec, hst.node)
        if hrec.get("kind") == "sticky" and want is not None and (
                ps.mig.get(f"{hbh}:{ho}") != want):
            out.append(addr_finding("migration-mismatch", hbh, ho,
                                    f"ADDR of {howner} (homed on {want}) is not routed to its "
                                    "home", howner))
    # pool counters and the owner index
    if ps.owners_index != owners:
        out.append(Finding(pool=pool, kind="index-mismatch",
                           detail=f"pool {pool}'s index of owners differs from the records "
                                  f"({len(ps.owners_index)} listed, {len(owners)} draw on it)"))
    want_counters = {"used": total_owned, "exheld": exheld, **classes}
    have = {k: v for k, v in ps.counters.items() if v or k in ("used", "exheld")}
    want_nonzero = {k: v for k, v in want_counters.items() if v or k in ("used", "exheld")}
    if not ps.skipped and have != want_nonzero:
        out.append(Finding(pool=pool, kind="pool-counter-mismatch",
                           detail=f"pool {pool}'s counters {have} differ from its state "
                                  f"{want_nonzero}"))
    return out


def _want_mig(r: dict[str, Any], block_node: str | None) -> str | None:
    """Where a holder's address must be routed when away from its block's node."""
    node = r.get("node") or ""
    if not node or node == block_node:
        return None
    return str(node)
