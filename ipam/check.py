"""Pure consistency check of one pool's IPAM state (``stickyip ipam check``).

The caller reads a snapshot; this module only compares. Each finding names one
offset, owner or block that a repair script re-checks and fixes atomically, so
repairs never need allocation to stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ipam.models import Finding, PoolName


@dataclass(slots=True)
class PoolSnapshot:
    pool: PoolName
    size: int
    block_size: int
    used: bytes
    excluded: set[int]
    owners: dict[int, str]
    records: dict[str, str]
    bused: dict[int, int]
    blocks: dict[int, str]
    node_blocks: dict[str, set[int]] = field(default_factory=dict)
    node_free: dict[str, set[int]] = field(default_factory=dict)

    def bit(self, off: int) -> bool:
        byte = off // 8
        if byte >= len(self.used):
            return False
        return bool(self.used[byte] & (0x80 >> (off % 8)))


def check_pool(snap: PoolSnapshot) -> list[Finding]:
    out: list[Finding] = []
    pool = snap.pool
    rec_off: dict[str, int] = {}
    for owner, raw in snap.records.items():
        try:
            rec_off[owner] = int(json.loads(raw).get("off", -1))
        except (ValueError, TypeError):
            rec_off[owner] = -1
    # addresses marked used with no (valid) owner, and owners whose bit is clear
    for off, owner in snap.owners.items():
        if rec_off.get(owner) != off:
            out.append(Finding(pool=pool, kind="orphan-address", offset=off, owner=owner,
                               detail=f"offset {off} is held by {owner}, which has no record "
                                      "pointing at it"))
        elif not snap.bit(off):
            out.append(Finding(pool=pool, kind="bit-clear", offset=off, owner=owner,
                               detail=f"offset {off} is held by {owner} but marked free"))
    for byte_index, byte in enumerate(snap.used):
        if not byte:
            continue
        for i in range(8):
            off = byte_index * 8 + i
            if off >= snap.size:
                break
            if byte & (0x80 >> i) and off not in snap.owners and off not in snap.excluded:
                out.append(Finding(pool=pool, kind="leaked-address", offset=off,
                                   detail=f"offset {off} is marked used with no owner"))
    # owners with no address
    for owner, off in rec_off.items():
        if off >= 0 and snap.owners.get(off) != owner:
            holder = snap.owners.get(off)
            state = f"held by {holder}" if holder else "not held"
            out.append(Finding(pool=pool, kind="owner-without-address", owner=owner, offset=off,
                               detail=f"{owner} records offset {off}, which is {state}"))
    # block counters and affinity indexes
    counts: dict[int, int] = {}
    for off in snap.owners:
        b = off // snap.block_size
        counts[b] = counts.get(b, 0) + 1
    for b in sorted(set(counts) | set(snap.bused)):
        if counts.get(b, 0) != snap.bused.get(b, 0):
            out.append(Finding(pool=pool, kind="counter-mismatch", block=b,
                               detail=f"block {b} counts {snap.bused.get(b, 0)} used, "
                                      f"holds {counts.get(b, 0)}"))
    for node, blocks in snap.node_blocks.items():
        for b in blocks:
            if snap.blocks.get(b) != node:
                out.append(Finding(pool=pool, kind="affinity-mismatch", block=b,
                                   detail=f"node {node} lists block {b}, which belongs to "
                                          f"{snap.blocks.get(b) or 'nobody'}"))
    for b, node in snap.blocks.items():
        if b not in snap.node_blocks.get(node, set()):
            out.append(Finding(pool=pool, kind="affinity-mismatch", block=b,
                               detail=f"block {b} belongs to {node}, which does not list it"))
    # the index of blocks with free space must match the bitmap
    for b, node in snap.blocks.items():
        has_free = any(not snap.bit(o) for o in range(b * snap.block_size,
                                                       (b + 1) * snap.block_size))
        listed = b in snap.node_free.get(node, set())
        if has_free != listed:
            state = "has free addresses but is not" if has_free else "is full but is"
            out.append(Finding(pool=pool, kind="free-index-mismatch", block=b,
                               detail=f"block {b} of {node} {state} listed as having free space"))
    for node, blocks in snap.node_free.items():
        for b in blocks:
            if snap.blocks.get(b) != node:
                out.append(Finding(pool=pool, kind="free-index-mismatch", block=b,
                                   detail=f"node {node} lists block {b} as free, "
                                          "but does not own it"))
    return out
