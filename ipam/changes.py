"""The IPAM's routing state as followers see it: a snapshot at a revision, the typed
change records of the change log, and the pure step that applies one to the other.

A follower reads :class:`RoutingSnapshot` once (``RedisIpam.routing_snapshot``), then
applies every :class:`ChangeBatch` after its revision (``RedisIpam.read_changes``);
a :class:`Gap` means the changes it needs are gone (log trimmed, or the store's
identity changed: restart, failover) and it must take a fresh snapshot, as a
Kubernetes watch answering 410. Change records carry everything a follower needs
(pool CIDR and block prefix included), so applying one never re-reads the store.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ipam.models import (
    BlockInfo,
    MigratedAddress,
    NodeName,
    PoolName,
    PoolSpec,
    RoutingView,
)
from ipam.ranges import IPAddress, IPNetwork


class ChangeOp(StrEnum):
    #: A pool was created or changed (``spec``); a changed CIDR drops its old blocks.
    POOL_PUT = "pool.put"
    POOL_DELETE = "pool.delete"
    #: ``node`` claimed block ``cidr`` (index ``block``) of ``pool``.
    BLOCK_CLAIM = "block.claim"
    #: Block re-homed from ``from_node`` to ``node``.
    BLOCK_MOVE = "block.move"
    #: Block given back to the pool by ``node``.
    BLOCK_RELEASE = "block.release"
    #: ``address`` is served by ``node`` away from its block's node (a /32 or /128),
    #: held by ``owner`` at ``epoch``.
    MIG_SET = "mig.set"
    #: ``address`` is routed with its block again (or free).
    MIG_CLEAR = "mig.clear"
    #: Reservation ``owner`` is now homed on ``node`` at ``epoch`` with ``addresses``:
    #: any other node serving those addresses must withdraw them (fencing).
    RES_HOME = "res.home"
    NODE_FENCE = "node.fence"
    NODE_UNFENCE = "node.unfence"


@dataclass(frozen=True, slots=True)
class Change:
    """One change record. Fields not relevant to ``op`` keep their defaults."""

    op: ChangeOp
    pool: str = ""
    block: int | None = None
    cidr: IPNetwork | None = None
    address: IPAddress | None = None
    node: str = ""
    from_node: str = ""
    owner: str = ""
    epoch: int = 0
    addresses: tuple[IPAddress, ...] = ()
    spec: PoolSpec | None = None
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """The changes of one revision (one atomic script), in order."""

    revision: int
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Gap:
    """The changes after ``after`` cannot be read: take a fresh snapshot."""

    after: int
    reason: str


def _net(net: str, bp: int, block: int) -> IPNetwork:
    pool = ipaddress.ip_network(net)
    size = 1 << (pool.max_prefixlen - bp)
    base = int(pool.network_address) + block * size
    if pool.version == 4:
        return ipaddress.IPv4Network((base, bp))
    return ipaddress.IPv6Network((base, bp))


def _addr(d: dict[str, Any]) -> tuple[int, IPNetwork, IPAddress]:
    block = int(d["block"], 16)
    cidr = _net(d["net"], int(d["bp"]), block)
    return block, cidr, cidr[int(d["o"])] if "o" in d else cidr.network_address


def decode_change(d: dict[str, Any]) -> Change:
    """One change record of the log (schema in docs/ipam.md) as a typed Change."""
    op = ChangeOp(d["op"])
    if op in (ChangeOp.BLOCK_CLAIM, ChangeOp.BLOCK_MOVE, ChangeOp.BLOCK_RELEASE):
        block, cidr, _ = _addr(d)
        return Change(op=op, pool=d["pool"], block=block, cidr=cidr, node=d.get("node", ""),
                      from_node=d.get("from", ""))
    if op in (ChangeOp.MIG_SET, ChangeOp.MIG_CLEAR):
        block, cidr, address = _addr(d)
        return Change(op=op, pool=d["pool"], block=block, cidr=cidr, address=address,
                      node=d.get("node", ""), owner=d.get("owner", ""),
                      epoch=int(d.get("epoch", 0)))
    if op is ChangeOp.RES_HOME:
        addrs = d.get("addrs") or []
        return Change(op=op, owner=d["owner"], node=d["node"], epoch=int(d["epoch"]),
                      addresses=tuple(_addr(a)[2] for a in addrs if isinstance(a, dict)))
    if op is ChangeOp.POOL_PUT:
        spec = d["spec"]
        return Change(op=op, pool=d["pool"], spec=PoolSpec.model_validate(
            json.loads(spec) if isinstance(spec, str) else spec))
    if op is ChangeOp.POOL_DELETE:
        return Change(op=op, pool=d["pool"])
    return Change(op=op, node=d["node"], at=float(d.get("at", 0.0)))


def decode_entry(entry_id: str, fields: dict[str, str]) -> ChangeBatch:
    """A log entry (id ``0-REVISION``, field ``c``) as a ChangeBatch."""
    rev = int(entry_id.partition("-")[2])
    raw = json.loads(fields["c"])
    items = raw if isinstance(raw, list) else []
    return ChangeBatch(revision=rev, changes=tuple(decode_change(d) for d in items))


@dataclass(frozen=True, slots=True)
class Migration:
    node: str
    owner: str
    epoch: int


@dataclass(slots=True)
class RoutingSnapshot:
    """The routing and fencing state at ``revision``; a follower's view.

    ``identity`` names the store (its layout generation and the Redis server's
    run id and replication id): a follower that sees another identity re-snapshots.
    """

    revision: int
    identity: str
    pools: dict[str, PoolSpec] = field(default_factory=dict)
    #: (pool, block index) -> node
    blocks: dict[tuple[str, int], str] = field(default_factory=dict)
    #: (pool, address) -> who serves it away from its block
    migrated: dict[tuple[str, IPAddress], Migration] = field(default_factory=dict)
    #: fenced node -> when
    fenced: dict[str, float] = field(default_factory=dict)

    def apply(self, batch: ChangeBatch) -> None:
        """Apply the changes of the next revision (``revision + 1``)."""
        if batch.revision != self.revision + 1:
            raise ValueError(f"revision {batch.revision} does not follow {self.revision}")
        for c in batch.changes:
            self._apply_one(c)
        self.revision = batch.revision

    def _drop_pool(self, pool: str) -> None:
        self.blocks = {k: v for k, v in self.blocks.items() if k[0] != pool}
        self.migrated = {k: v for k, v in self.migrated.items() if k[0] != pool}

    def _apply_one(self, c: Change) -> None:
        if c.op is ChangeOp.POOL_PUT and c.spec is not None:
            old = self.pools.get(c.pool)
            if old is not None and (old.geometry() != c.spec.geometry()):
                self._drop_pool(c.pool)
            self.pools[c.pool] = c.spec
        elif c.op is ChangeOp.POOL_DELETE:
            self.pools.pop(c.pool, None)
            self._drop_pool(c.pool)
        elif c.op in (ChangeOp.BLOCK_CLAIM, ChangeOp.BLOCK_MOVE) and c.block is not None:
            self.blocks[(c.pool, c.block)] = c.node
        elif c.op is ChangeOp.BLOCK_RELEASE and c.block is not None:
            self.blocks.pop((c.pool, c.block), None)
        elif c.op is ChangeOp.MIG_SET and c.address is not None:
            self.migrated[(c.pool, c.address)] = Migration(c.node, c.owner, c.epoch)
        elif c.op is ChangeOp.MIG_CLEAR and c.address is not None:
            self.migrated.pop((c.pool, c.address), None)
        elif c.op is ChangeOp.NODE_FENCE:
            self.fenced[c.node] = c.at
        elif c.op is ChangeOp.NODE_UNFENCE:
            self.fenced.pop(c.node, None)

    def state(self) -> tuple[Any, ...]:
        """Everything but the revision and identity, for comparing two views."""
        return (sorted((k, v.canonical()["cidr"], v.block_size) for k, v in self.pools.items()),
                sorted(self.blocks.items()),
                sorted(((p, str(a)), m) for (p, a), m in self.migrated.items()),
                sorted(self.fenced))

    def view(self) -> RoutingView:
        """The 0.1 routing view (blocks per node, migrated addresses) of this snapshot."""
        geos = {name: spec.geometry() for name, spec in self.pools.items()}
        blocks = [
            BlockInfo(pool=PoolName(pool), index=b, cidr=geos[pool].block_cidr(b),
                      node=NodeName(node), used=0)
            for (pool, b), node in sorted(self.blocks.items()) if pool in geos]
        migrated = []
        for (pool, addr), m in self.migrated.items():
            geo = geos.get(pool)
            bn = self.blocks.get((pool, geo.block_of(geo.offset_of(addr)))) if geo else None
            migrated.append(MigratedAddress(
                pool=PoolName(pool), address=addr, node=NodeName(m.node),
                block_node=NodeName(bn) if bn else None, owner=m.owner, epoch=m.epoch))
        migrated.sort(key=lambda m: (m.address.version, int(m.address)))
        return RoutingView(blocks=blocks, migrated=migrated)


def parse_snapshot(reply: list[str], *, identity: str) -> RoutingSnapshot:
    """Build a snapshot from the ROUTING_SNAPSHOT script's flat reply."""
    pos = 1
    rev = int(reply[pos] or 0)
    gen = reply[pos + 1]
    pos += 2
    snap = RoutingSnapshot(revision=rev, identity=f"{gen}/{identity}")
    npools = int(reply[pos])
    pos += 1
    regs: dict[str, dict[str, Any]] = {}
    for _ in range(npools):
        name, reg_raw, spec = reply[pos:pos + 3]
        pos += 3
        regs[name] = json.loads(reg_raw)
        snap.pools[name] = PoolSpec.model_validate(json.loads(spec))
    nblocks = int(reply[pos])
    pos += 1
    for _ in range(nblocks):
        pool, b, node = reply[pos:pos + 3]
        pos += 3
        snap.blocks[(pool, int(b, 16))] = node
    nmig = int(reply[pos])
    pos += 1
    for _ in range(nmig):
        pool, key, node, owner, epoch = reply[pos:pos + 5]
        pos += 5
        reg = regs[pool]
        bh, _, o = key.partition(":")
        _, _, addr = _addr({"net": reg["net"], "bp": reg["bp"], "block": bh, "o": int(o)})
        snap.migrated[(pool, addr)] = Migration(node, owner, int(epoch))
    nfenced = int(reply[pos])
    pos += 1
    for _ in range(nfenced):
        node, at = reply[pos:pos + 2]
        pos += 2
        snap.fenced[node] = float(at)
    return snap
