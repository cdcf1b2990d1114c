"""The IPAM over Redis: public methods validate, then call one atomic script.

The store keeps addresses as (block, offset) pairs and records per owner (both
families in one record); this module converts between those and addresses, and
turns script replies into models and errors. Layout: ``ipam/layout.py``; scripts:
``ipam/scripts.py``; running them (batching, WAIT, deadlines): ``ipam/runner.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import NoScriptError, RedisError

from ipam import layout, ranges, scripts
from ipam.changes import ChangeBatch, Gap, RoutingSnapshot, decode_entry, parse_snapshot
from ipam.config import IpamSettings
from ipam.errors import (
    AddressTaken,
    AllocationPaused,
    InvalidAddress,
    InvalidPool,
    InvalidRequest,
    IpamError,
    PoolExhausted,
    PoolInUse,
    PoolNotFound,
    ReservationConflict,
    ReservationInUse,
    ReservationNotFound,
    StaleEpoch,
    StoreLayoutError,
    StoreUnavailable,
)
from ipam.layout import PoolRef
from ipam.models import (
    AuditEntry,
    BlockInfo,
    IpamStats,
    Lease,
    LeaseAddress,
    LeaseKind,
    NodeFailurePolicy,
    NodeHealth,
    NodeName,
    OwnerKey,
    PoolName,
    PoolSpec,
    PoolStats,
    PoolStatus,
    ReservationKey,
    ReservationState,
    RoutingView,
    check_name,
    first_overlap,
)
from ipam.ranges import IPAddress
from ipam.runner import Durability, ScriptRunner

log = logging.getLogger("stickyip.ipam")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_KINDS = {k.value: k for k in LeaseKind}
_STATES = {s.value: s for s in ReservationState}
_POLICIES = {p.value: p for p in NodeFailurePolicy}


def _built(cls: type[M], values: dict[str, Any]) -> M:
    """``cls.model_construct(**values)`` for a model whose every field is given, at a
    fraction of its cost (it runs for every lease a call returns): the same instance
    state, checked against model_construct by tests/unit/ipam/test_decoded_leases.py."""
    m = cls.__new__(cls)
    object.__setattr__(m, "__dict__", values)
    object.__setattr__(m, "__pydantic_fields_set__", set(values))
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m


#: Kept for callers of the 0.1 name: a registered pool as the client caches it.
PoolCache = PoolRef
FAMILIES = ("ip4", "ip6")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def pool_prefix(pool: str, gen: str = "g1") -> str:
    """The key prefix of a pool's generation ``gen`` (see ``ipam/layout.py``)."""
    return layout.pool_prefix(pool, gen)


def _info(raw: Any, key: str) -> str:
    """One field of an INFO reply (raw text)."""
    if isinstance(raw, dict):
        return str(raw.get(key, ""))
    for line in _s(raw).splitlines():
        k, _, v = line.partition(":")
        if k == key:
            return v.strip()
    return ""


def _batches(raw: Any) -> list[ChangeBatch]:
    """Parse an XREAD reply: RESP3 {stream: [[id, [field, value, ...]], ...]} or
    RESP2 [[stream, [[id, [field, value, ...]], ...]]]."""
    out: list[ChangeBatch] = []
    if not raw:
        return out
    streams = raw.items() if isinstance(raw, dict) else raw
    for _stream, entries in streams:
        for entry_id, fields in entries:
            flat = [_s(x) for x in fields]
            out.append(decode_entry(_s(entry_id), dict(zip(flat[::2], flat[1::2], strict=True))))
    return out


@dataclass(frozen=True, slots=True)
class PoolApplied:
    """The outcome of applying one pool: created | configured | unchanged, and how
    many newly excluded addresses an owner still holds (they stay held)."""

    name: str
    status: str
    held: int = 0


class RedisIpam:
    """The IPAM: pools, node blocks, ephemeral leases and sticky reservations."""

    def __init__(self, client: aioredis.Redis, *, actor: str = "stickyip",
                 clock: Callable[[], float] = time.time, batching: bool = True,
                 replicas: int = 0, replica_timeout: float = 1.0,
                 call_timeout: float | None = None) -> None:
        self._r = client
        self.runner = ScriptRunner(
            client, batching=batching,
            durability=Durability(replicas=replicas,
                                  timeout_ms=max(1, int(replica_timeout * 1000))),
            call_timeout=call_timeout, many=scripts.MANY)
        self._specs: tuple[float, list[PoolSpec]] | None = None
        self.actor = actor
        self.clock = clock
        self._pools: dict[str, PoolRef] = {}
        self._layout_checked = False
        self.embedded: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        return self._r

    async def aclose(self) -> None:
        """Close the client: wait briefly for pipelines still in flight, then close the
        connections (bounded: a close must never hang a shutdown)."""
        await self.runner.settle(within=2.0)
        from ipam.connection import close_client

        try:
            async with asyncio.timeout(5.0):
                await close_client(self._r)
        except (TimeoutError, RedisError, OSError) as e:
            log.warning("closing the Redis client did not finish cleanly",
                        extra={"error": repr(e)})
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    # ---------------------------------------------------------------- plumbing

    def deadline(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        """Bound every store call made inside (retries included) to ``seconds`` from
        now; expiry raises StoreUnavailable. For the admission path::

            with ipam.deadline(1.8):
                res = await ipam.claim(...)
        """
        return self.runner.deadline(seconds)

    async def _guard(self, aw: Awaitable[T]) -> T:
        return await self.runner.bounded(aw)

    async def _eval(self, source: str, *args: Any, write: bool = True) -> list[str]:
        if not self._layout_checked:
            await self.check_layout()
        return await self.runner.call(source, layout.LAYOUT, *args, write=write)

    async def ping(self) -> bool:
        try:
            return bool(await self._guard(self._r.ping()))
        except IpamError:
            return False

    def _now(self, now: float | None) -> str:
        return repr(round(self.clock() if now is None else now, 3))

    async def check_layout(self) -> None:
        """Refuse a store written by another key layout (stickyip 0.1's per-pool tags)."""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hget(layout.LAYOUT, "version")
            pipe.exists(layout.OLD_REGISTRY)
            version, old = await self._guard(pipe.execute())
        if old:
            raise StoreLayoutError(
                f"this Redis database holds stickyip 0.1's key layout ({layout.OLD_REGISTRY!r}, "
                "'sip:{POOL}:*'), which this version does not read and never mixes with its "
                "own. No 0.1 release was ever published: flush that database (redis-cli "
                "FLUSHDB) or point STICKYIP_REDIS_URL at an empty one, then apply your pools "
                "again")
        if version is not None and _s(version) != layout.LAYOUT_VERSION:
            raise StoreLayoutError(
                f"this Redis database holds IPAM layout version {_s(version)}, this stickyip "
                f"reads version {layout.LAYOUT_VERSION}: upgrade (or downgrade) stickyip to "
                "match the store")
        self._layout_checked = True

    # ---------------------------------------------------------------- pools

    async def pool(self, name: str) -> PoolRef:
        cached = self._pools.get(name)
        if cached is not None:
            return cached
        return await self._load_pool(name)

    async def _load_pool(self, name: str) -> PoolRef:
        if not self._layout_checked:
            await self.check_layout()
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hget(layout.POOLS, name)
            pipe.hget(layout.SPECS, name)
            reg, spec_raw = await self._guard(pipe.execute())
        if reg is None or spec_raw is None:
            self._pools.pop(name, None)
            raise PoolNotFound(
                f"pool {name!r} does not exist; list pools with 'stickyip pool list'")
        spec = layout.decode_spec(spec_raw)
        ref = PoolRef(spec=spec, geo=spec.geometry(), gen=str(json.loads(reg)["g"]))
        self._pools[name] = ref
        return ref

    async def _pool_gen(self, name: str, gen: str) -> PoolRef:
        """The pool ``name`` as of generation ``gen`` (re-read when the cache is older)."""
        ref = self._pools.get(name)
        if ref is None or ref.gen != gen:
            ref = await self._load_pool(name)
        return ref

    def forget_pool_cache(self) -> None:
        self._pools.clear()
        self._specs = None

    async def pool_specs(self, *, max_age: float = 0.0) -> list[PoolSpec]:
        """All pools; ``max_age`` > 0 accepts a list read that many seconds ago."""
        if max_age > 0 and self._specs is not None and (
                time.monotonic() - self._specs[0] < max_age):
            return self._specs[1]
        if not self._layout_checked:
            await self.check_layout()
        raw = await self._guard(self._r.hgetall(layout.SPECS))
        specs = [layout.decode_spec(v) for v in raw.values()]
        specs.sort(key=lambda s: s.name)
        self._specs = (time.monotonic(), specs)
        return specs

    async def apply_pools(self, specs: Sequence[PoolSpec], *, dry_run: bool = False,
                          now: float | None = None) -> list[PoolApplied]:
        """Create or update several pools at once: the whole set is validated (each
        spec, overlaps among them and with every other pool, CIDR or block-size changes
        of pools in use) before anything is written, then written in ONE atomic script.
        ``dry_run`` validates against the store and reports without writing."""
        if not specs:
            raise InvalidPool("no pool to apply")
        names = [s.name for s in specs]
        for i, spec in enumerate(specs):
            if names.count(spec.name) > 1:
                raise InvalidPool(f"pool {spec.name!r} is defined twice")
            other = first_overlap(spec, specs[i + 1:])
            if other is not None:
                raise InvalidPool(f"pools {spec.name!r} ({spec.geometry().network}) and "
                                  f"{other.name!r} ({other.geometry().network}) overlap")
        existing = {s.name: s for s in await self.pool_specs()}
        items = []
        for spec in specs:
            geo = spec.geometry()
            other = first_overlap(spec, [s for s in existing.values() if s.name not in names])
            if other is not None:
                raise InvalidPool(
                    f"pool {spec.name!r} ({geo.network}) overlaps existing pool {other.name!r} "
                    f"({other.geometry().network}); choose a disjoint CIDR")
            excl = [geo.key_of(geo.address_at(o)) for o in spec.excluded_offsets()]
            items.append({"name": spec.name, "spec": json.dumps(spec.canonical()),
                          "reg": layout.registry_entry(geo), "span": list(geo.span()),
                          "excl": excl})
        reply = await self._eval(scripts.APPLY_POOLS, self._now(now), self.actor,
                                 "1" if dry_run else "0", secrets.token_hex(8),
                                 json.dumps(items), write=not dry_run)
        if reply[0] == "err":
            code = reply[1]
            if code == "overlap":
                other_spec = existing.get(reply[3])
                where = f" ({other_spec.geometry().network})" if other_spec else ""
                raise InvalidPool(f"pool {reply[2]!r} overlaps pool {reply[3]!r}{where}; "
                                  "choose a disjoint CIDR")
            if code == "inuse":
                raise PoolInUse(
                    f"pool {reply[2]!r} is in use ({reply[3]} leases or reservations, "
                    f"{reply[4]} claimed blocks): its CIDR and block size cannot change "
                    "(release them first, or create a new pool); nothing was applied")
            raise self._fail(None, reply, "pool apply")
        out = [PoolApplied(name=str(d["name"]), status=str(d["status"]), held=int(d["held"]))
               for d in json.loads(reply[1])]
        if not dry_run:
            for spec in specs:
                self._pools.pop(spec.name, None)
            self._specs = None
            for a in out:
                if a.status != "unchanged":
                    log.info("pool applied", extra={"pool": a.name, "status": a.status})
        return out

    async def apply_pool(self, spec: PoolSpec) -> int:
        """Create or update one pool. Returns how many newly excluded addresses are still
        held (they are not freed; they stop being handed out once released)."""
        return (await self.apply_pools([spec]))[0].held

    async def delete_pool(self, name: str, *, dry_run: bool = False) -> None:
        """Delete a pool with its blocks and audit history, in one atomic script. Refused
        (PoolInUse, naming the first owners and their addresses) while records draw on it."""
        ref = await self.pool(name)
        reply = await self._eval(scripts.DELETE_POOL, name, "1" if dry_run else "0",
                                 write=not dry_run)
        if reply[0] == "err" and reply[1] == "inuse":
            who = []
            for owner, where in json.loads(reply[3]) if reply[3] not in ("{}", "[]") else []:
                addr = ""
                with contextlib.suppress(InvalidAddress):
                    addr = f" ({ref.geo.address_of_key(where)})" if where else " (no address yet)"
                who.append(f"{owner}{addr}")
            more = int(reply[2]) - len(who)
            listed = ", ".join(who) + (f" and {more} more" if more > 0 else "")
            raise PoolInUse(f"pool {name!r} is in use by {reply[2]} leases or reservations: "
                            f"{listed}; release them first")
        if reply[0] == "err":
            raise self._fail(ref, reply, f"pool {name!r}")
        if not dry_run:
            self._pools.pop(name, None)
            self._specs = None

    async def _read_pool(self, script: str, name: str) -> tuple[PoolRef, list[str]]:
        """Run a read-only script on pool ``name`` whose reply is {'ok', generation,
        used, excluded, excluded held, blocks claimed, ...}: the pool as of that
        generation, and the reply."""
        ref = await self.pool(name)
        reply = await self._eval(script, name, write=False)
        if reply[0] == "err":
            raise self._fail(ref, reply, f"pool {name!r}")
        return await self._pool_gen(name, reply[1]), reply

    async def address_view(self, pool: str) -> AddressView:
        """What the scheduler needs of a pool, in one round trip: free addresses per node
        inside its blocks, unclaimed blocks, and the pool's exact free total."""
        ref, reply = await self._read_pool(scripts.ADDRESS_VIEW, pool)
        used, excl, exheld, claimed = (int(x) for x in reply[2:6])
        per_node: dict[NodeName, int] = {}
        blocks: dict[str, tuple[NodeName, int]] = {}
        rest = reply[7:]
        for i in range(0, len(rest), 3):
            node = NodeName(rest[i + 1])
            free = int(rest[i + 2]) if rest[i + 2] else ref.geo.block_size
            per_node[node] = per_node.get(node, 0) + free
            blocks[rest[i]] = (node, free)
        return AddressView(pool=PoolName(pool), ref=ref, used=used, excluded=excl,
                           excluded_held=exheld, blocks_claimed=claimed,
                           free_in_node_blocks=per_node, block_free=blocks)

    async def pool_status(self, name: str) -> PoolStatus:
        """A pool's size, use and blocks from counters: O(1) however many blocks."""
        ref, reply = await self._read_pool(scripts.POOL_STATUS, name)
        used, excl, exheld, claimed = (int(x) for x in reply[2:6])
        return PoolStatus(spec=ref.spec, size=ref.geo.size, excluded=excl, used=used,
                          blocks_total=ref.geo.block_count, blocks_claimed=claimed,
                          excluded_held=exheld)

    async def pool_for_address(self, address: str | IPAddress) -> PoolRef:
        addr = ranges.parse_address(address) if isinstance(address, str) else address
        # pools change rarely: a list up to 2 s old is fine for finding one; a miss
        # re-reads before refusing
        for max_age in (2.0, 0.0):
            for spec in await self.pool_specs(max_age=max_age):
                if spec.geometry().contains(addr):
                    return await self.pool(spec.name)
        raise InvalidAddress(f"{addr} is not inside any pool; see 'stickyip pool list'")

    # ---------------------------------------------------------------- records

    def _decode_with(self, refs: dict[str, PoolRef], raw: str | bytes | dict[str, Any]
                     ) -> Lease:
        # Records are written only by our scripts: build without re-validating (this
        # is on every allocation's path).
        d = json.loads(raw) if not isinstance(raw, dict) else raw
        addrs: list[LeaseAddress] = []
        pools: list[PoolName] = []
        for fam in FAMILIES:
            a = d.get(fam)
            if not isinstance(a, dict):
                continue
            pools.append(PoolName(a["p"]))
            if "b" in a:
                ref = refs[a["p"]]
                block = int(a["b"], 16)
                addrs.append(_built(LeaseAddress, {
                    "pool": PoolName(a["p"]), "address": ref.geo.at(block, int(a["o"])),
                    "block": block}))
        first_pool = addrs[0].pool if addrs else (pools[0] if pools else PoolName(""))
        node = d.get("node")
        return _built(Lease, {
            "owner": OwnerKey(d["owner"]),
            "pool": first_pool,
            "kind": _KINDS[d["kind"]],
            "address": addrs[0].address if addrs else None,
            "addresses": tuple(addrs),
            "pools": tuple(pools),
            "node": NodeName(node) if node else None,
            "epoch": int(d.get("epoch", 0)),
            "holder": d.get("holder") or "",
            "pod": d.get("pod") or "",
            "state": _STATES[d.get("state", "bound")],
            "retain": float(d.get("retain", 0)),
            "policy": _POLICIES[d.get("policy", "migrate")],
            "expires_at": float(d.get("expires", 0)),
            "created_at": float(d.get("created", 0)),
            "updated_at": float(d.get("updated", 0)),
        })

    async def _decode(self, raw: str | bytes) -> Lease:
        d = json.loads(raw)
        refs: dict[str, PoolRef] = {}
        for fam in FAMILIES:
            a = d.get(fam)
            if isinstance(a, dict) and "b" in a:
                name, gen = a["p"], str(a.get("g", ""))
                ref = self._pools.get(name)
                refs[name] = ref if ref is not None and ref.gen == gen else (
                    await self._pool_gen(name, gen))
        return self._decode_with(refs, d)

    def _fail(self, ref: PoolRef | None, reply: list[str], what: str) -> IpamError:
        code = reply[1] if len(reply) > 1 else "?"
        arg = reply[2] if len(reply) > 2 else "?"
        pool = ref.spec.name if ref else arg
        if code == "layout":
            return StoreLayoutError(
                "the store has no IPAM layout yet (apply a pool first) or another version "
                f"of it{f' ({arg})' if len(reply) > 2 else ''}")
        if code == "nopool":
            self._pools.pop(arg, None)
            return PoolNotFound(
                f"pool {arg!r} does not exist; list pools with 'stickyip pool list'")
        if code == "exhausted":
            net = self._pools[arg].geo.network if arg in self._pools else ""
            return PoolExhausted(
                f"pool {arg!r} ({net}) has no free address left for {what}; "
                "add a pool, widen this one, or release addresses"
            )
        if code == "taken":
            return AddressTaken(f"{what}: address is already held by {arg}", owner=arg)
        if code == "outside":
            return InvalidAddress(f"{what}: address is outside pool {pool!r}")
        if code == "excluded":
            return InvalidAddress(f"{what}: address is excluded from pool {arg!r}")
        if code == "conflict":
            have = reply[3]
            if arg in self._pools:
                with contextlib.suppress(InvalidAddress):
                    have = str(self._pools[arg].geo.address_of_key(reply[3]))
            return ReservationConflict(
                f"{what} already holds {have}; release it first with "
                "'stickyip ipam release' to give it another address"
            )
        if code == "otherpool":
            return ReservationConflict(
                f"{what} already holds an address of that family in pool {arg!r}; release "
                "it first to move it to another pool")
        if code == "family":
            return InvalidRequest(f"{what}: two pools of one address family ({arg!r}); a "
                                  "lease holds at most one IPv4 and one IPv6 address")
        if code == "home":
            return ReservationConflict(f"{what} is homed on node {arg!r}, not elsewhere")
        if code == "stale":
            return StaleEpoch(f"{what}: epoch is now {arg}; re-read and retry")
        if code == "kind":
            return ReservationConflict(f"{what}: owner exists with another kind of lease")
        if code == "holder":
            return ReservationConflict(f"{what} is held by pod UID {arg!r}")
        if code == "bound":
            pod = reply[3] if len(reply) > 3 else ""
            state = reply[4] if len(reply) > 4 else "bound"
            named = f"pod {pod} (UID {arg})" if pod else f"pod UID {arg}"
            if state == "quarantined":
                return ReservationInUse(
                    f"{what} was released by force and stays quarantined until {named} is "
                    "gone (the GC frees it then)", holder=arg, pod=pod)
            return ReservationInUse(
                f"{what} is held by running {named}; releasing it would hand a live address "
                "to another pod. Delete the pod first, or force it (the address then stays "
                "quarantined until the pod is gone)", holder=arg, pod=pod)
        if code == "quarantined":
            return ReservationInUse(
                f"{what} was released by force; its address stays quarantined until pod UID "
                f"{arg!r} is confirmed gone (the GC frees it), then it can be claimed again",
                holder=arg)
        if code == "reconciling":
            return AllocationPaused(
                f"{what}: the IPAM store restarted or failed over and is being reconciled "
                "with the running pods; no new address is handed out until then (seconds, "
                "while the stickyip scheduler runs): retry")
        if code == "notfrom":
            return ReservationConflict(f"{what}: block belongs to {arg or 'no node'!r}")
        if code == "busy":
            return PoolInUse(f"{what}: {arg} addresses of the block are still held")
        return IpamError(f"{what}: unexpected store reply {reply!r}")

    # ------------------------------------------------------------- ephemeral

    async def _pools_arg(self, pool: str | None, pools: Sequence[str] | None) -> list[PoolRef]:
        names = list(pools or [])
        if pool and pool not in names:
            names.insert(0, pool)
        if not names:
            raise InvalidRequest("name a pool (or one pool per address family)")
        if len(names) > 2:
            raise InvalidRequest(f"at most one IPv4 and one IPv6 pool, got {names}")
        refs = [await self.pool(n) for n in names]
        if len(refs) == 2 and refs[0].geo.family == refs[1].geo.family:
            raise InvalidRequest(
                f"pools {names[0]!r} and {names[1]!r} are both IPv{refs[0].geo.family}: a "
                "lease holds at most one address per family")
        return refs

    async def allocate(self, *, node: str, owner: OwnerKey, pool: str | None = None,
                       pools: Sequence[str] | None = None, pod: str = "", holder: str = "",
                       borrow: bool = True, now: float | None = None) -> Lease:
        """Give ``owner`` an address from ``node``'s blocks (claiming a block if needed)
        in ``pool``, or one address in each of ``pools`` (one IPv4 and one IPv6 pool
        for a dual-stack pod), atomically. Idempotent: the same owner gets the same
        lease back."""
        check_name("node", node)
        refs = await self._pools_arg(pool, pools)
        reply = await self._eval(scripts.ALLOCATE, owner, node, self._now(now), self.actor,
                                 pod, holder, "1" if borrow else "0", len(refs),
                                 *(r.spec.name for r in refs))
        if reply[0] == "err":
            raise self._fail(refs[0], reply, f"{owner} on node {node}")
        return await self._decode(reply[1])

    async def release(self, *, owner: OwnerKey, pool: str | None = None, holder: str = "",
                      force: bool = False, now: float | None = None) -> Lease | None:
        """Free ``owner``'s addresses. Idempotent: an absent owner (or, with ``pool``,
        one that draws nothing from that pool) returns None.

        A sticky reservation a pod still holds is refused (ReservationInUse) unless
        ``holder`` names that pod (the caller knows it is gone) or ``force``: forced,
        it is quarantined (returned with state ``quarantined``) and its addresses stay
        taken until :meth:`confirm_holder_gone`."""
        reply = await self._eval(scripts.RELEASE, owner, self._now(now), self.actor, holder,
                                 "1" if force else "0", pool or "")
        if reply[0] == "err":
            raise self._fail(None, reply, str(owner))
        if reply[0] == "absent":
            return None
        return await self._decode(reply[1])

    async def confirm_holder_gone(self, owner: OwnerKey, *, holder: str,
                                  now: float | None = None) -> Lease | None:
        """The pod ``holder`` (UID) of ``owner`` no longer exists (GC, reconciliation):
        a quarantined record is freed, a bound reservation becomes ``reserved``, an
        ephemeral lease is released. Anything else is left alone. Returns the record as
        it was before (freed) or is now; None when absent."""
        if not holder:
            raise InvalidRequest("name the holder pod UID that is gone")
        reply = await self._eval(scripts.HOLDER_GONE, owner, holder, self._now(now),
                                 self.actor)
        if reply[0] == "err":
            raise self._fail(None, reply, str(owner))
        if reply[0] == "absent":
            return None
        return await self._decode(reply[1])

    async def lease(self, *, owner: OwnerKey, pool: str | None = None) -> Lease | None:
        """The record of ``owner``; with ``pool``, only if it draws on that pool."""
        if not self._layout_checked:
            await self.check_layout()
        raw = await self._guard(self._r.hget(layout.RECORDS, owner))
        if raw is None:
            return None
        found = await self._decode(raw)
        if pool is not None and pool not in found.pools:
            return None
        return found

    # ----------------------------------------------------------- reservations

    async def claim(self, key: ReservationKey, *, pool: str | None = None,
                    address: str | IPAddress | None = None,
                    pools: Sequence[str] | None = None,
                    addresses: Sequence[str | IPAddress] | None = None,
                    node: str | None = None, retain: float | None = None,
                    policy: NodeFailurePolicy | None = None,
                    holder: str = "", pod: str = "",
                    now: float | None = None, dry_run: bool = False,
                    restore: bool = False, epoch: int = 0) -> Reservation:
        """Create, reactivate or complete the sticky reservation of one ordinal.

        - ``pool`` (single-stack) or ``pools`` (one IPv4 and one IPv6 pool: a
          dual-stack reservation gets one address of each, same home, same epoch, in
          one atomic step).
        - ``address`` / ``addresses``: explicit addresses (``stickyip.io/ips``), each
          inside one of the pools, taken now; the first one's block node (if its block
          is claimed) becomes the home.
        - ``node``: the node the scheduler chose; allocates every missing address from
          its blocks, and must equal the home otherwise.
        - ``holder``: the pod UID now holding it (state becomes ``bound``).
        - ``retain``/``policy``: recorded when given (None keeps what is recorded;
          a new reservation defaults to 0s and migrate).
        - ``dry_run``: validate against the store and return what would be recorded,
          writing nothing (admission ``dryRun``).
        - ``restore``: put back the reservation of a running pod that the store lost
          (the scheduler's reconciliation); taken even while new addresses are paused
          after a store restart or failover (``AllocationPaused`` otherwise).
          ``epoch``: the epoch the pod runs at (its ``stickyip.io/epoch``), which a
          restored record keeps, so that a later re-home still fences the pod.
        Idempotent on the ordinal: a retry returns the same reservation.
        """
        refs = await self._pools_arg(pool, pools)
        if node:
            check_name("node", node)
        wanted = [a for a in ([address] if address is not None else []) + list(addresses or [])]
        explicit: dict[str, tuple[str, str]] = {}
        for a in wanted:
            addr = ranges.parse_address(a) if isinstance(a, str) else a
            ref = next((r for r in refs if r.geo.contains(addr)), None)
            if ref is None:
                names = ", ".join(f"{r.spec.name!r} ({r.geo.network})" for r in refs)
                raise InvalidAddress(
                    f"reservation {key}: address {addr} is outside pool {names}")
            if ref.spec.name in explicit:
                raise InvalidRequest(
                    f"reservation {key}: two addresses in pool {ref.spec.name!r}")
            b, o = ref.geo.locate(addr)
            explicit[ref.spec.name] = (ref.geo.block_hex(b), str(o))
        if retain is not None and retain < 0 and retain != ranges.FOREVER:
            raise InvalidRequest(f"retain must be >= 0 or forever, got {retain}")
        args: list[Any] = [key.owner, node or "", "" if retain is None else repr(retain),
                           "" if policy is None else NodeFailurePolicy(policy).value,
                           holder, pod, self._now(now), self.actor, "1" if dry_run else "0",
                           len(refs)]
        for ref in refs:
            args.extend([ref.spec.name, *explicit.get(ref.spec.name, ("", ""))])
        args.append(str(max(epoch, 1)) if restore else "0")
        reply = await self._eval(scripts.CLAIM, *args, write=not dry_run)
        if reply[0] == "err":
            raise self._fail(refs[0], reply, f"reservation {key}")
        return await self._decode(reply[1])

    async def reservation(self, key: ReservationKey, *, pool: str | None = None
                          ) -> Reservation | None:
        """The reservation of one ordinal (with ``pool``: only if it draws on it)."""
        found = await self.lease(owner=key.owner, pool=pool)
        if found is not None and found.kind is not LeaseKind.STICKY:
            return None
        return found

    async def _sticky(self, source: str, key: ReservationKey, pool: str | None,
                      *args: Any) -> tuple[str, Reservation | None]:
        # Records are global per owner: ``pool`` (kept for 0.1 callers) needs no lookup.
        reply = await self._eval(source, key.owner, *args)
        if reply[0] == "err":
            raise self._fail(None, reply, f"reservation {key}")
        if reply[0] == "absent":
            return "absent", None
        return reply[0], await self._decode(reply[1])

    async def release_reservation(self, key: ReservationKey, *, pool: str | None = None,
                                  force: bool = False, now: float | None = None
                                  ) -> Reservation | None:
        """Release one ordinal's reservation. None when there is none (the caller
        decides whether that is an error). Refused with ReservationInUse, naming the
        pod, while a pod holds it; ``force`` quarantines it instead (returned with state
        ``quarantined``): its addresses stay taken until the pod is confirmed gone."""
        return await self.release(owner=key.owner, pool=pool, force=force, now=now)

    async def retain_reservation(self, key: ReservationKey, *, pool: str | None = None,
                                 now: float | None = None) -> tuple[str, Reservation | None]:
        """The ordinal is gone: keep per its retain policy ('ok'), or free it now
        ('released') when retain is 0s."""
        return await self._sticky(scripts.RETAIN, key, pool, self._now(now), self.actor)

    async def expire_reservation(self, key: ReservationKey, *, pool: str | None = None,
                                 now: float | None = None) -> bool:
        """Free a retained reservation whose retain time has passed. True when freed."""
        status, _ = await self._sticky(scripts.EXPIRE, key, pool, self._now(now), self.actor)
        return status == "released"

    async def unbind(self, key: ReservationKey, *, pool: str | None = None, holder: str = "",
                     now: float | None = None) -> Reservation | None:
        """The holder pod is gone but its ordinal remains: keep the address, clear holder."""
        _, res = await self._sticky(scripts.UNBIND, key, pool, holder, self._now(now))
        return res

    async def rehome_reservation(self, key: ReservationKey, *, to_node: str,
                                 pool: str | None = None, expect_epoch: int = -1,
                                 now: float | None = None) -> Reservation:
        """Re-home one reservation (both families: each address becomes a migrated /32 or
        /128 unless its block is ``to_node``'s) to ``to_node``, epoch + 1."""
        check_name("node", to_node)
        _, res = await self._sticky(scripts.REHOME_ADDRESS, key, pool, to_node,
                                    expect_epoch, self._now(now), self.actor)
        if res is None:
            raise ReservationNotFound(f"no reservation for {key}")
        return res

    async def rehome_block(self, *, pool: str, block: int, from_node: str, to_node: str,
                           now: float | None = None) -> list[OwnerKey]:
        """Move a whole block from ``from_node`` to ``to_node``; reservations homed on
        ``from_node`` follow with epoch + 1 (their other-family address too). Returns
        the owners re-homed (empty if the block had already moved)."""
        check_name("node", to_node)
        ref = await self.pool(pool)
        reply = await self._eval(scripts.REHOME_BLOCK, pool, ref.geo.block_hex(block),
                                 from_node, to_node, self._now(now), self.actor)
        if reply[0] == "err":
            raise self._fail(ref, reply, f"block {block} of pool {pool!r}")
        if reply[0] == "already":
            return []
        moved = json.loads(reply[1]) if reply[1] not in ("{}", "[]") else []
        return [OwnerKey(o) for o in moved]

    async def release_block(self, *, pool: str, block: int, node: str,
                            now: float | None = None) -> bool:
        """Give an empty block of ``node`` back to the pool (handed out again before any
        fresh block). False when it was not claimed; PoolInUse while addresses of it
        are held."""
        ref = await self.pool(pool)
        reply = await self._eval(scripts.RELEASE_BLOCK, pool, ref.geo.block_hex(block), node,
                                 self._now(now), self.actor)
        if reply[0] == "err":
            raise self._fail(ref, reply, f"block {ref.geo.block_cidr(block)} of pool {pool!r}")
        return reply[0] == "ok"

    async def owners_of(self, pool: str, addresses: Sequence[str | IPAddress]
                        ) -> dict[IPAddress, Lease | None]:
        """Who holds each of ``addresses`` (all inside ``pool``), in two round trips."""
        ref = await self.pool(pool)
        addrs = [ranges.parse_address(a) if isinstance(a, str) else a for a in addresses]
        if not addrs:
            return {}
        where = [ref.geo.locate(a) for a in addrs]
        async with self._r.pipeline(transaction=False) as pipe:
            for b, o in where:
                pipe.hget(ref.prefix + f"o:{ref.geo.block_hex(b)}", str(o))
            owners = await self._guard(pipe.execute())
        keys = sorted({_s(o) for o in owners if o is not None})
        raws = await self._guard(self._r.hmget(layout.RECORDS, keys)) if keys else []
        recs = dict(zip(keys, raws, strict=True))
        out: dict[IPAddress, Lease | None] = {}
        for a, o in zip(addrs, owners, strict=True):
            raw = recs.get(_s(o)) if o is not None else None
            out[a] = await self._decode(raw) if raw is not None else None
        return out

    async def owner_of(self, address: str | IPAddress) -> Lease | None:
        """The lease or reservation holding ``address`` (None when free).
        Raises InvalidAddress when the address is in no pool."""
        ref = await self.pool_for_address(address)
        b, o = ref.geo.locate(address)
        owner = await self._guard(self._r.hget(ref.prefix + f"o:{ref.geo.block_hex(b)}", str(o)))
        if owner is None:
            return None
        return await self.lease(owner=OwnerKey(_s(owner)))

    # ---------------------------------------------------------------- views

    async def records(self, pool: str) -> AsyncIterator[Lease]:
        """Every record drawing on ``pool`` (read in batches)."""
        ref = await self.pool(pool)
        refs = {pool: ref}
        batch: list[str] = []
        async for owner in self._r.sscan_iter(ref.prefix + "ow", count=500):
            batch.append(_s(owner))
            if len(batch) >= 500:
                for lease in await self._records_of(refs, batch):
                    yield lease
                batch = []
        if batch:
            for lease in await self._records_of(refs, batch):
                yield lease

    async def _records_of(self, refs: dict[str, PoolRef], owners: list[str]) -> list[Lease]:
        raws = await self._guard(self._r.hmget(layout.RECORDS, owners))
        out = []
        for raw in raws:
            if raw is None:
                continue
            d = json.loads(raw)
            for fam in FAMILIES:
                a = d.get(fam)
                if isinstance(a, dict) and a.get("p") not in refs:
                    refs[a["p"]] = await self.pool(a["p"])
            out.append(self._decode_with(refs, raw))
        return out

    async def all_records(self, pool: str) -> list[Lease]:
        try:
            return [lease async for lease in self.records(pool)]
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"Redis store error: {e}") from e

    async def blocks(self, pool: str) -> list[BlockInfo]:
        ref = await self.pool(pool)
        p = ref.prefix
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(p + "blk")
            pipe.hgetall(p + "bu")
            pipe.hgetall(p + "bf")
            owners, used, free = await self._guard(pipe.execute())
        counts = {_s(k): int(v) for k, v in used.items()}
        frees = {_s(k): int(v) for k, v in free.items()}
        out = []
        for bh, n in owners.items():
            b = ref.geo.parse_block_hex(_s(bh))
            out.append(BlockInfo(pool=PoolName(pool), index=b, cidr=ref.geo.block_cidr(b),
                                 node=NodeName(_s(n)), used=counts.get(_s(bh), 0),
                                 free=frees.get(_s(bh), ref.geo.block_size)))
        return sorted(out, key=lambda b: b.index)

    async def routing_view(self) -> RoutingView:
        """Blocks per node and migrated /32s and /128s across every pool (one round
        trip; agents follow :meth:`routing_snapshot` and the change log instead)."""
        snap = await self.routing_snapshot()
        return snap.view()

    async def routing_snapshot(self) -> RoutingSnapshot:
        """The routing and fencing state at one revision, read in one round trip with
        the store's identity (see :meth:`read_changes`)."""
        if not self._layout_checked:
            await self.check_layout()
        identity, reply = await self._with_identity(scripts.ROUTING_SNAPSHOT)
        if _s(reply[0]) == "err":
            raise self._fail(None, [_s(x) for x in reply], "routing snapshot")
        snap: RoutingSnapshot = parse_snapshot([_s(x) for x in reply], identity=identity)
        return snap

    async def _with_identity(self, source: str, *args: Any) -> tuple[str, list[Any]]:
        """Run a read-only script on the same connection as the reads of the server's
        identity (run_id, replication id), so both describe one server process."""
        sc = self.runner.script(source)
        for _ in range(2):
            if not sc.sha:
                sc.sha = _s(await self._guard(self._r.script_load(sc.source)))
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.info("server")
                pipe.info("replication")
                pipe.evalsha(sc.sha, 1, layout.LAYOUT, *args)
                server, repl, reply = await self._guard(pipe.execute(raise_on_error=False))
            if isinstance(reply, NoScriptError):
                sc.sha = ""  # a restarted server: load the script again
                continue
            for r in (server, repl, reply):
                if isinstance(r, Exception):
                    raise StoreUnavailable(f"Redis store error: {r}") from r
            ident = f"{server.get('run_id', '')}/{repl.get('master_replid', '')}"
            return ident, reply
        raise StoreUnavailable("the store keeps forgetting the IPAM's scripts")

    async def read_changes(self, after: int, *, identity: str, block_ms: int = 30_000,
                           count: int = 1000) -> list[ChangeBatch] | Gap:
        """The changes after revision ``after`` of the store named ``identity`` (both
        from :meth:`routing_snapshot` or the last batch applied), oldest first.

        Blocks up to ``block_ms`` (a server-side blocking read, no polling) while there
        is nothing new, then returns ``[]``. Returns a :class:`Gap` when those changes
        cannot be read any more: the log was trimmed past them, or the store is not the
        one the follower knows (restarted, failed over, restored from an older state;
        see docs/ipam.md): the follower takes a fresh snapshot. One connection serves
        the whole call, so the identity read and the changes describe one server."""
        if not self._layout_checked:
            await self.check_layout()
        pool = self._r.connection_pool
        try:
            conn = await self._guard(pool.get_connection())  # type: ignore[no-untyped-call]
        except IpamError:
            raise
        clean = False
        try:
            async with asyncio.timeout(max(block_ms, 0) / 1000 + 10.0):
                cmds: list[tuple[Any, ...]] = [
                    ("INFO", "server"), ("INFO", "replication"),
                    ("HMGET", layout.LAYOUT, "gen", "rev"),
                    ("XREAD", "COUNT", count, "STREAMS", layout.LOG, f"0-{after}")]
                await conn.send_packed_command(conn.pack_commands(cmds))
                server, repl, lay, entries = [await conn.read_response() for _ in cmds]
                if isinstance(lay, Exception) or isinstance(entries, Exception):
                    raise lay if isinstance(lay, Exception) else entries
                ident = (f"{_s(lay[0] or b'')}/{_info(server, 'run_id')}/"
                         f"{_info(repl, 'master_replid')}")
                rev = int(lay[1] or 0)
                clean = True
                if ident != identity:
                    return Gap(after=after, reason=f"the store's identity changed ({identity} "
                                                   f"-> {ident}): restart or failover")
                if rev < after:
                    return Gap(after=after, reason=f"the store is at revision {rev}, behind "
                                                   f"revision {after}: it lost changes")
                batches = _batches(entries)
                if not batches and rev == after and block_ms > 0:
                    clean = False
                    await conn.send_command("XREAD", "BLOCK", block_ms, "COUNT", count,
                                            "STREAMS", layout.LOG, f"0-{after}")
                    raw = await conn.read_response(timeout=block_ms / 1000 + 5.0)
                    clean = True
                    batches = _batches(raw)
                if (batches and batches[0].revision != after + 1) or (
                        not batches and rev > after):
                    return Gap(after=after, reason="the change log no longer holds revision "
                                                   f"{after + 1} (trimmed)")
                return batches
        except (RedisError, OSError) as e:
            clean = False
            raise StoreUnavailable(f"reading the change log failed: {e}") from e
        finally:
            if not clean:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            await pool.release(conn)

    async def stats(self, *, nodes: bool = True) -> IpamStats:
        """Every pool's counters and records by class, and (``nodes``) records homed per
        node, heartbeats and fences, in one round trip: counters the scripts keep,
        O(pools) (+ O(nodes)), never a scan of the records."""
        if not self._layout_checked:
            await self.check_layout()
        specs = {s.name: s for s in await self.pool_specs()}
        raw = json.loads(await self._guard(self.runner.raw(
            scripts.STATS, layout.LAYOUT, "1" if nodes else "0")))

        def ints(d: Any) -> dict[str, int]:
            return {str(k): int(v) for k, v in d.items()} if isinstance(d, dict) else {}

        pools = []
        for name, d in sorted((raw.get("pools") or {}).items()):
            spec = specs.get(name)
            if spec is None:
                continue
            geo = spec.geometry()
            # the counters (the hash also holds the next-block cursor, in hex)
            m = ints({k: v for k, v in (d.get("m") or {}).items() if k != "cur"})
            pools.append(PoolStats(
                pool=PoolName(name), size=geo.size, used=m.get("used", 0),
                excluded=int(d.get("ex", 0)), excluded_held=m.get("exheld", 0),
                blocks_total=geo.block_count, blocks_claimed=int(d.get("blk", 0)),
                records={k[2:]: v for k, v in m.items() if k.startswith("n:") and v}))
        homes: dict[NodeName, dict[str, int]] = {}
        names = {"e": "ephemeral", "m": "migrate", "w": "wait"}
        for field, n in ints(raw.get("homes")).items():
            node, _, cls = field.rpartition("|")
            if n:
                homes.setdefault(NodeName(node), {})[names.get(cls, cls)] = n

        def times(d: Any) -> dict[NodeName, float]:
            return {NodeName(str(k)): float(v) for k, v in d.items()} if isinstance(
                d, dict) else {}

        return IpamStats(pools=pools, records={k: v for k, v in ints(raw.get("counts")).items()
                                               if v},
                         homes=homes, heartbeats=times(raw.get("hb")),
                         fenced=times(raw.get("fenced")))

    async def expired(self, *, now: float | None = None, limit: int = 500) -> list[OwnerKey]:
        """Retained reservations whose retain time has passed (an index, no scan):
        hand each to :meth:`expire_reservation`. At most ``limit`` per call."""
        if not self._layout_checked:
            await self.check_layout()
        when = self.clock() if now is None else now
        raw = await self._guard(self._r.zrangebyscore(layout.EXPIRY, "-inf", when, start=0,
                                                      num=limit))
        return [OwnerKey(_s(o)) for o in raw]

    async def scan_records(self, cursor: int = 0, *, count: int = 500
                           ) -> tuple[int, list[Lease]]:
        """One bounded page of all records (about ``count``), and the cursor to resume
        from (0 when done). Every record present for the whole scan is returned at
        least once (Redis HSCAN's guarantee); one may come twice."""
        if not self._layout_checked:
            await self.check_layout()
        nxt, page = await self._guard(self._r.hscan(layout.RECORDS, cursor, count=count))
        values = page.values() if isinstance(page, dict) else page[1::2]
        out = [await self._decode(raw) for raw in values]
        return int(nxt), out

    async def open_allocation(self) -> str:
        """The running pods were reconciled with this server process: hand out new
        addresses again (until the store next restarts or fails over). Returns the
        server's run_id ('' for a store with no pool yet). The first call arms the pause
        for good."""
        reply = await self._eval(scripts.OPEN_ALLOCATION)
        if reply[0] == "err":
            raise self._fail(None, reply, "open allocation")
        return reply[1]

    async def allocation_paused(self) -> bool:
        """Are new addresses paused (the store changed since the last reconciliation)?"""
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hget(layout.LAYOUT, "open")
            pipe.info("server")
            want, server = await self._guard(pipe.execute())
        return want is not None and _s(want) != str(server.get("run_id", ""))

    async def homed_on(self, node: str, *, chunk: int = 500) -> list[Lease]:
        """Every sticky record homed on ``node``, from the home index: O(log N + k) for
        k reservations there, never a scan. A store whose index predates it (no
        ``byhome`` mark on the layout) is walked in bounded pages instead; ``stickyip
        ipam check --repair`` builds the index."""
        if not self._layout_checked:
            await self.check_layout()
        check_name("node", node)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hget(layout.LAYOUT, "byhome")
            pipe.zrangebylex(layout.BYHOME, f"[{node}|", f"({node}}}")
            mark, members = await self._guard(pipe.execute())
        if mark is None:
            return await self._homed_on_by_scan(node)
        owners = [_s(m).split("|", 1)[1] for m in members]
        out: list[Lease] = []
        refs: dict[str, PoolRef] = {}
        for i in range(0, len(owners), chunk):
            for lease in await self._records_of(refs, owners[i:i + chunk]):
                if lease.node == node and lease.kind is LeaseKind.STICKY:
                    out.append(lease)
        return out

    async def _homed_on_by_scan(self, node: str) -> list[Lease]:
        seen: dict[OwnerKey, Lease] = {}
        cursor = 0
        while True:
            cursor, page = await self.scan_records(cursor, count=1000)
            seen.update((r.owner, r) for r in page
                        if r.node == node and r.kind is LeaseKind.STICKY)
            if cursor == 0:
                return list(seen.values())

    async def free_in_node_blocks(self, pool: str) -> dict[NodeName, int]:
        """Free addresses per node inside the blocks it already holds (exact)."""
        return (await self.address_view(pool)).free_in_node_blocks

    async def history(self, address: str) -> list[AuditEntry]:
        ref = await self.pool_for_address(address)
        b, o = ref.geo.locate(address)
        raw = await self._guard(
            self._r.lrange(ref.prefix + f"a:{ref.geo.block_hex(b)}:{o}", 0,
                           scripts.AUDIT_CAP - 1))
        entries = []
        addr = str(ref.geo.at(b, o))
        for item in raw:
            d = json.loads(item)
            entries.append(AuditEntry(address=addr, **d))
        return entries

    # ---------------------------------------------------------------- nodes

    async def heartbeat(self, node: str, *, now: float | None = None) -> None:
        check_name("node", node)
        await self._guard(self._r.hset(layout.HEARTBEATS, node, self._now(now)))

    async def fence_node(self, node: str, *, now: float | None = None) -> None:
        """Mark ``node`` fenced (agents see it in the change log)."""
        reply = await self._eval(scripts.FENCE, node, self._now(now), "1")
        if reply[0] == "err":
            raise self._fail(None, reply, f"fence node {node}")

    async def unfence_node(self, node: str) -> None:
        reply = await self._eval(scripts.FENCE, node, self._now(None), "0")
        if reply[0] == "err":
            raise self._fail(None, reply, f"unfence node {node}")

    async def node_health(self, node: str) -> NodeHealth:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hget(layout.HEARTBEATS, node)
            pipe.hget(layout.FENCED, node)
            hb, fenced = await self._guard(pipe.execute())
        return NodeHealth(node=NodeName(node), heartbeat_at=float(hb or 0.0),
                          fenced_at=float(fenced or 0.0))

    # ------------------------------------------------------------- utilities

    async def gather_limited(self, coros: Sequence[Awaitable[T]], limit: int = 64) -> list[T]:
        sem = asyncio.Semaphore(limit)

        async def one(c: Awaitable[T]) -> T:
            async with sem:
                return await c

        return await asyncio.gather(*(one(c) for c in coros))


@dataclass(frozen=True, slots=True)
class AddressView:
    """One pool as the scheduler sees it (read in one round trip)."""

    pool: PoolName
    ref: PoolRef
    used: int
    excluded: int
    excluded_held: int
    blocks_claimed: int
    free_in_node_blocks: dict[NodeName, int]
    #: block hex -> (node, free addresses)
    block_free: dict[str, tuple[NodeName, int]]

    @property
    def unclaimed_blocks(self) -> int:
        return self.ref.geo.block_count - self.blocks_claimed

    @property
    def free_total(self) -> int:
        return self.ref.geo.size - self.excluded - self.used + self.excluded_held

    def status(self) -> PoolStatus:
        return PoolStatus(spec=self.ref.spec, size=self.ref.geo.size, excluded=self.excluded,
                          used=self.used, blocks_total=self.ref.geo.block_count,
                          blocks_claimed=self.blocks_claimed,
                          excluded_held=self.excluded_held)

    def nodes(self) -> Iterator[NodeName]:
        return iter(self.free_in_node_blocks)


#: Kept for readability at call sites: a reservation is a sticky lease.
Reservation = Lease


async def check_and_repair(ipam: RedisIpam, *, repair: bool = False,
                           pools: Sequence[str] | None = None) -> list[Any]:
    """Find inconsistencies (every pool, the owner records, orphan keys); with
    ``repair``, fix each one atomically. See ``ipam/repair.py``."""
    from ipam.repair import check_and_repair as run

    return await run(ipam, repair=repair, pools=pools)


async def open_ipam(url: str | None, *, actor: str = "stickyip",
                    embedded_path: str | None = None,
                    settings: IpamSettings | None = None) -> RedisIpam:
    """Connect to the store at ``url`` (or the embedded one) and return the IPAM.
    ``settings`` (built by the entry point) set how many replicas must confirm each
    write and the per-call deadline; without them writes wait for no replica."""
    from ipam.connection import open_redis

    client, embedded = await open_redis(url, embedded_path=embedded_path)
    s = settings or IpamSettings.model_construct(
        redis_replicas=0, redis_replica_timeout=1.0, redis_call_timeout=0.0)
    ipam = RedisIpam(client, actor=actor, replicas=s.redis_replicas,
                     replica_timeout=s.redis_replica_timeout,
                     call_timeout=s.redis_call_timeout or None)
    ipam.embedded = embedded
    return ipam
