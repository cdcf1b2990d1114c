"""The IPAM over Redis: public methods validate, then call one atomic script.

Addresses are kept as offsets inside their pool; this module converts between
offsets and addresses and turns script replies into models and errors.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ipam import check, ranges, scripts
from ipam.errors import (
    AddressTaken,
    InvalidAddress,
    InvalidPool,
    InvalidRequest,
    IpamError,
    PoolExhausted,
    PoolInUse,
    PoolNotFound,
    ReservationConflict,
    ReservationNotFound,
    StaleEpoch,
    StoreUnavailable,
)
from ipam.models import (
    AuditEntry,
    BlockInfo,
    Finding,
    Lease,
    LeaseKind,
    MigratedAddress,
    NodeFailurePolicy,
    NodeHealth,
    NodeName,
    OwnerKey,
    PoolName,
    PoolSpec,
    PoolStatus,
    ReservationKey,
    ReservationState,
    RoutingView,
    check_name,
    first_overlap,
)

log = logging.getLogger("stickyip.ipam")

REGISTRY = "sip:pools"
T = TypeVar("T")


def pool_prefix(pool: str) -> str:
    """Every key of a pool shares the hash tag ``{POOL}``: one Redis Cluster slot."""
    return f"sip:{{{pool}}}:"


def node_key(node: str) -> str:
    return f"sip:node:{node}"


@dataclass(slots=True)
class _Script:
    source: str
    sha: str = ""


@dataclass(slots=True)
class PoolCache:
    spec: PoolSpec
    geo: ranges.PoolGeometry


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _Batcher:
    """Sends the script calls made by concurrent callers in the same event-loop turn
    as one pipeline: one round trip and far less client CPU per call under load, no
    added latency when alone. Safe because every script is atomic and idempotent, so
    a pipeline re-sent by the retry policy cannot apply a call twice."""

    def __init__(self, client: aioredis.Redis, max_batch: int = 512) -> None:
        self._r = client
        self._max = max_batch
        self._queue: list[tuple[_Script, str, tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, sc: _Script, key: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((sc, key, args, fut))
        if len(self._queue) >= self._max:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    async def settle(self, *, within: float) -> None:
        """Send what is queued and wait (at most ``within`` s) for pipelines in flight;
        those still running then are cancelled, failing their callers."""
        self._flush()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[_Script, str, tuple[Any, ...], asyncio.Future[Any]]],
                    *, reload: bool = True) -> None:
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for sc, key, args, _ in batch:
                    pipe.evalsha(sc.sha, 1, key, *args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as e:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else RedisError(str(e)))
            if not isinstance(e, Exception):
                raise
            return
        redo = []
        for item, res in zip(batch, results, strict=True):
            fut = item[3]
            if fut.done():
                continue
            if isinstance(res, NoScriptError) and reload:
                redo.append(item)
            elif isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)
        if redo:
            try:
                for sc in {id(i[0]): i[0] for i in redo}.values():
                    sc.sha = _s(await self._r.script_load(sc.source))
            except (RedisError, OSError) as e:
                for *_, fut in redo:
                    fut.set_exception(e)
                return
            await self._send(redo, reload=False)


class RedisIpam:
    """The IPAM: pools, node blocks, ephemeral leases and sticky reservations."""

    def __init__(self, client: aioredis.Redis, *, actor: str = "stickyip",
                 clock: Callable[[], float] = time.time, batching: bool = True) -> None:
        self._r = client
        self._batcher = _Batcher(client) if batching else None
        self._inflight = 0
        self._specs: tuple[float, list[PoolSpec]] | None = None
        self.actor = actor
        self.clock = clock
        self._scripts: dict[str, _Script] = {}
        self._pools: dict[str, PoolCache] = {}
        self.embedded: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        return self._r

    async def aclose(self) -> None:
        """Close the client: wait briefly for pipelines still in flight, then close the
        connections (bounded: a close must never hang a shutdown)."""
        if self._batcher is not None:
            await self._batcher.settle(within=2.0)
        try:
            async with asyncio.timeout(5.0):
                await self._r.aclose()
        except (TimeoutError, RedisError, OSError) as e:
            log.warning("closing the Redis client did not finish cleanly",
                        extra={"error": repr(e)})
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None

    # ---------------------------------------------------------------- plumbing

    async def _guard(self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except IpamError:
            raise
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"Redis store error: {e}") from e

    async def _eval(self, source: str, key: str, *args: Any) -> list[str]:
        sc = self._scripts.get(source)
        if sc is None:
            sc = self._scripts[source] = _Script(source)
        try:
            if not sc.sha:
                sc.sha = _s(await self._r.script_load(source))
            if self._batcher is not None and self._inflight:
                # others are waiting on Redis: ride along in the next pipeline
                reply = await self._batcher.submit(sc, key, args)
            else:
                # alone: a plain call is cheaper than a pipeline of one
                self._inflight += 1
                try:
                    try:
                        reply = await self._r.evalsha(sc.sha, 1, key, *args)
                    except NoScriptError:
                        sc.sha = _s(await self._r.script_load(source))
                        reply = await self._r.evalsha(sc.sha, 1, key, *args)
                finally:
                    self._inflight -= 1
        except ResponseError as e:
            raise StoreUnavailable(f"IPAM script failed: {e}") from e
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"Redis store error: {e}") from e
        return [_s(x) for x in reply]

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisError, OSError):
            return False

    def _now(self, now: float | None) -> str:
        return repr(round(self.clock() if now is None else now, 3))

    # ---------------------------------------------------------------- pools

    async def pool(self, name: str) -> PoolCache:
        cached = self._pools.get(name)
        if cached is not None:
            return cached
        raw = await self._guard(self._r.hget(REGISTRY, name))
        if raw is None:
            raise PoolNotFound(
                f"pool {name!r} does not exist; list pools with 'stickyip pool list'")
        spec = PoolSpec.model_validate(json.loads(raw)["spec"])
        pc = PoolCache(spec=spec, geo=spec.geometry())
        self._pools[name] = pc
        return pc

    def forget_pool_cache(self) -> None:
        self._pools.clear()

    async def pool_specs(self, *, max_age: float = 0.0) -> list[PoolSpec]:
        """All pools; ``max_age`` > 0 accepts a list read that many seconds ago."""
        if max_age > 0 and self._specs is not None and (
                time.monotonic() - self._specs[0] < max_age):
            return self._specs[1]
        raw = await self._guard(self._r.hgetall(REGISTRY))
        specs = [PoolSpec.model_validate(json.loads(v)["spec"]) for v in raw.values()]
        specs.sort(key=lambda s: s.name)
        self._specs = (time.monotonic(), specs)
        return specs

    async def apply_pool(self, spec: PoolSpec) -> int:
        """Create or update a pool. Returns how many newly excluded addresses are still
        held (they are not freed; they stop being handed out once released)."""
        geo = spec.geometry()
        excluded = spec.excluded_offsets()
        existing = {s.name: s for s in await self.pool_specs()}
        other = first_overlap(spec, existing.values())
        if other is not None:
            raise InvalidPool(
                f"pool {spec.name!r} ({geo.network}) overlaps pool {other.name!r} "
                f"({other.geometry().network}); choose a disjoint CIDR"
            )
        prev = existing.get(spec.name)
        prefix = pool_prefix(spec.name)
        reply = await self._eval(
            scripts.POOL_PUT, prefix + "meta", prefix, str(geo.network), geo.size,
            geo.block_size, geo.block_count, ",".join(map(str, excluded)),
        )
        if reply[0] == "err":
            raise PoolInUse(
                f"pool {spec.name!r} has allocations: its CIDR and block size cannot change "
                "(release them first, or create a new pool)"
            )
        entry = json.dumps({"spec": spec.canonical(), "first": geo.first, "last": geo.last})
        reg = await self._eval(scripts.REGISTRY_PUT, REGISTRY, spec.name, entry, geo.first,
                               geo.last)
        if reg[0] == "err":
            if prev is None:
                await self._eval(scripts.POOL_DELETE, prefix + "meta", prefix)
            raise InvalidPool(f"pool {spec.name!r} ({geo.network}) overlaps pool {reg[2]!r}")
        self._pools.pop(spec.name, None)
        log.info("pool applied", extra={"pool": spec.name, "cidr": str(geo.network)})
        return int(reply[1])

    async def delete_pool(self, name: str) -> None:
        await self.pool(name)
        prefix = pool_prefix(name)
        reply = await self._eval(scripts.POOL_DELETE, prefix + "meta", prefix)
        if reply[0] == "err":
            raise PoolInUse(f"pool {name!r} still holds leases or reservations; release them first")
        await self._guard(self._r.hdel(REGISTRY, name))
        self._pools.pop(name, None)

    async def pool_status(self, name: str) -> PoolStatus:
        pc = await self.pool(name)
        p = pool_prefix(name)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hlen(p + "owner")
            pipe.scard(p + "excl")
            pipe.hlen(p + "blocks")
            used, excl, blocks = await self._guard(pipe.execute())
        return PoolStatus(spec=pc.spec, size=pc.geo.size, excluded=int(excl), used=int(used),
                          blocks_total=pc.geo.block_count, blocks_claimed=int(blocks))

    async def pool_for_address(self, address: str | ipaddress.IPv4Address) -> PoolCache:
        addr = ranges.parse_address(address) if isinstance(address, str) else address
        # pools change rarely: a list up to 2 s old is fine for finding one; a miss
        # re-reads before refusing
        for max_age in (2.0, 0.0):
            for spec in await self.pool_specs(max_age=max_age):
                pc = await self.pool(spec.name)
                if pc.geo.contains(addr):
                    return pc
        raise InvalidAddress(f"{addr} is not inside any pool; see 'stickyip pool list'")

    # ---------------------------------------------------------------- records

    def _lease(self, pc: PoolCache, raw: str) -> Lease:
        # Records are written only by our scripts: build without re-validating (this
        # is on every allocation's path).
        d = json.loads(raw)
        off = int(d.get("off", -1))
        return Lease.model_construct(
            owner=OwnerKey(d["owner"]),
            pool=PoolName(pc.spec.name),
            kind=LeaseKind(d["kind"]),
            address=ipaddress.IPv4Address(pc.geo.first + off) if off >= 0 else None,
            node=NodeName(d["node"]) if d.get("node") else None,
            epoch=int(d.get("epoch", 0)),
            holder=d.get("holder") or "",
            pod=d.get("pod") or "",
            state=ReservationState(d.get("state", "bound")),
            retain=float(d.get("retain", 0)),
            policy=NodeFailurePolicy(d.get("policy", "migrate")),
            expires_at=float(d.get("expires", 0)),
            created_at=float(d.get("created", 0)),
            updated_at=float(d.get("updated", 0)),
        )

    def _fail(self, pc: PoolCache, reply: list[str], what: str) -> IpamError:
        code = reply[1] if len(reply) > 1 else "?"
        pool = pc.spec.name
        if code == "nopool":
            self._pools.pop(pool, None)
            return PoolNotFound(f"pool {pool!r} does not exist")
        if code == "exhausted":
            return PoolExhausted(
                f"pool {pool!r} ({pc.geo.network}) has no free address left for {what}; "
                "add a pool, widen this one, or release addresses"
            )
        if code == "taken":
            holder = reply[2] if len(reply) > 2 else "?"
            return AddressTaken(f"{what}: address is already held by {holder}", owner=holder)
        if code == "outside":
            return InvalidAddress(f"{what}: address is outside pool {pool!r} ({pc.geo.network})")
        if code == "excluded":
            return InvalidAddress(f"{what}: address is excluded from pool {pool!r}")
        if code == "conflict":
            have = pc.geo.address_at(int(reply[2]))
            return ReservationConflict(
                f"{what} already holds {have}; release it first with "
                "'stickyip ipam release' to give it another address"
            )
        if code == "home":
            return ReservationConflict(f"{what} is homed on node {reply[2]!r}, not elsewhere")
        if code == "stale":
            return StaleEpoch(f"{what}: epoch is now {reply[2]}; re-read and retry")
        if code == "kind":
            return ReservationConflict(f"{what}: owner exists with another kind of lease")
        if code == "holder":
            return ReservationConflict(f"{what} is held by pod UID {reply[2]!r}")
        if code == "notfrom":
            return ReservationConflict(f"{what}: block belongs to {reply[2] or 'no node'!r}")
        return IpamError(f"{what}: unexpected store reply {reply!r}")

    # ------------------------------------------------------------- ephemeral

    async def allocate(self, *, pool: str, node: str, owner: OwnerKey, pod: str = "",
                       holder: str = "", borrow: bool = True,
                       now: float | None = None) -> Lease:
        """Give ``owner`` an address from ``node``'s blocks (claiming a block if needed).
        Idempotent: the same owner gets the same lease back."""
        check_name("node", node)
        pc = await self.pool(pool)
        p = pool_prefix(pool)
        reply = await self._eval(scripts.ALLOCATE, p + "meta", p, owner, node, self._now(now),
                                 self.actor, pod, holder, "1" if borrow else "0")
        if reply[0] == "err":
            raise self._fail(pc, reply, f"{owner} on node {node}")
        return self._lease(pc, reply[1])

    async def release(self, *, pool: str, owner: OwnerKey, holder: str = "",
                      now: float | None = None) -> Lease | None:
        """Free ``owner``'s address. Idempotent: releasing an absent owner returns None."""
        pc = await self.pool(pool)
        p = pool_prefix(pool)
        reply = await self._eval(scripts.RELEASE, p + "meta", p, owner, self._now(now),
                                 self.actor, holder)
        if reply[0] == "err":
            raise self._fail(pc, reply, str(owner))
        if reply[0] == "absent":
            return None
        return self._lease(pc, reply[1])

    async def lease(self, *, pool: str, owner: OwnerKey) -> Lease | None:
        pc = await self.pool(pool)
        raw = await self._guard(self._r.hget(pool_prefix(pool) + "rec", owner))
        return self._lease(pc, _s(raw)) if raw is not None else None

    # ----------------------------------------------------------- reservations

    async def claim(self, key: ReservationKey, *, pool: str,
                    address: str | ipaddress.IPv4Address | None = None,
                    node: str | None = None, retain: float | None = None,
                    policy: NodeFailurePolicy | None = None,
                    holder: str = "", pod: str = "",
                    now: float | None = None) -> Reservation:
        """Create, reactivate or complete the sticky reservation of one ordinal.

        - ``address``: an explicit address (``stickyip.io/ips``), taken now.
        - ``node``: the node the scheduler chose; allocates from its blocks if the
          reservation has no address yet, and must equal the home otherwise.
        - ``holder``: the pod UID now holding it (state becomes ``bound``).
        - ``retain``/``policy``: recorded when given (None keeps what is recorded;
          a new reservation defaults to 0s and migrate).
        Idempotent on the ordinal: a retry returns the same reservation.
        """
        pc = await self.pool(pool)
        if node:
            check_name("node", node)
        offset = -1
        if address is not None:
            offset = pc.geo.offset_of(address)
        if retain is not None and retain < 0 and retain != ranges.FOREVER:
            raise InvalidRequest(f"retain must be >= 0 or forever, got {retain}")
        p = pool_prefix(pool)
        reply = await self._eval(
            scripts.CLAIM, p + "meta", p, key.owner, node or "", offset,
            "" if retain is None else repr(retain),
            "" if policy is None else NodeFailurePolicy(policy).value,
            holder, pod, self._now(now), self.actor,
        )
        if reply[0] == "err":
            raise self._fail(pc, reply, f"reservation {key}")
        return self._lease(pc, reply[1])

    async def reservation(self, key: ReservationKey, *, pool: str | None = None
                          ) -> Reservation | None:
        """Look a reservation up in ``pool``, or in every pool when not given."""
        names = [pool] if pool else [s.name for s in await self.pool_specs()]
        for name in names:
            found = await self.lease(pool=name, owner=key.owner)
            if found is not None:
                return found
        return None

    async def _sticky_op(self, source: str, key: ReservationKey, pool: str | None,
                         *args: Any) -> tuple[str, Reservation | None]:
        if pool is None:
            found = await self.reservation(key)
            if found is None:
                raise ReservationNotFound(f"no reservation for {key}")
            pool = found.pool
        pc = await self.pool(pool)
        p = pool_prefix(pool)
        reply = await self._eval(source, p + "meta", p, key.owner, *args)
        if reply[0] == "err":
            raise self._fail(pc, reply, f"reservation {key}")
        if reply[0] == "absent":
            return "absent", None
        return reply[0], self._lease(pc, reply[1])

    async def release_reservation(self, key: ReservationKey, *, pool: str | None = None,
                                  now: float | None = None) -> Reservation | None:
        _, res = await self._sticky_op(scripts.RELEASE, key, pool, self._now(now),
                                            self.actor, "")
        return res

    async def retain_reservation(self, key: ReservationKey, *, pool: str | None = None,
                                 now: float | None = None) -> tuple[str, Reservation | None]:
        """The ordinal is gone: keep per its retain policy ('ok'), or free it now
        ('released') when retain is 0s."""
        return await self._sticky_op(scripts.RETAIN, key, pool, self._now(now), self.actor)

    async def expire_reservation(self, key: ReservationKey, *, pool: str | None = None,
                                 now: float | None = None) -> bool:
        """Free a retained reservation whose retain time has passed. True when freed."""
        status, _ = await self._sticky_op(scripts.EXPIRE, key, pool, self._now(now), self.actor)
        return status == "released"

    async def unbind(self, key: ReservationKey, *, pool: str, holder: str = "",
                     now: float | None = None) -> Reservation | None:
        """The holder pod is gone but its ordinal remains: keep the address, clear holder."""
        _, res = await self._sticky_op(scripts.UNBIND, key, pool, holder, self._now(now),
                                       self.actor)
        return res

    async def rehome_reservation(self, key: ReservationKey, *, pool: str, to_node: str,
                                 expect_epoch: int = -1,
                                 now: float | None = None) -> Reservation:
        """Re-home one reservation's /32 to ``to_node`` (epoch + 1)."""
        check_name("node", to_node)
        _, res = await self._sticky_op(scripts.REHOME_ADDRESS, key, pool, to_node,
                                            expect_epoch, self._now(now), self.actor)
        if res is None:
            raise ReservationNotFound(f"no reservation for {key} in pool {pool!r}")
        return res

    async def rehome_block(self, *, pool: str, block: int, from_node: str, to_node: str,
                           now: float | None = None) -> list[OwnerKey]:
        """Move a whole block from ``from_node`` to ``to_node``; reservations homed on
        ``from_node`` follow with epoch + 1. Returns the owners re-homed (empty if the
        block had already moved)."""
        check_name("node", to_node)
        pc = await self.pool(pool)
        p = pool_prefix(pool)
        reply = await self._eval(scripts.REHOME_BLOCK, p + "meta", p, block, from_node,
                                 to_node, self._now(now), self.actor)
        if reply[0] == "err":
            raise self._fail(pc, reply, f"block {block} of pool {pool!r}")
        if reply[0] == "already":
            return []
        moved = json.loads(reply[1]) if reply[1] not in ("{}", "[]") else []
        return [OwnerKey(o) for o in moved]

    async def owners_of(self, pool: str, addresses: Sequence[str | ipaddress.IPv4Address]
                        ) -> dict[ipaddress.IPv4Address, Lease | None]:
        """Who holds each of ``addresses`` (all inside ``pool``), in two round trips."""
        pc = await self.pool(pool)
        addrs = [ranges.parse_address(a) if isinstance(a, str) else a for a in addresses]
        offs = [pc.geo.offset_of(a) for a in addrs]
        if not offs:
            return {}
        p = pool_prefix(pool)
        owners = await self._guard(self._r.hmget(p + "owner", offs))
        keys = sorted({_s(o) for o in owners if o is not None})
        recs = dict(zip(keys, await self._guard(self._r.hmget(p + "rec", keys)), strict=True)
                    ) if keys else {}
        out: dict[ipaddress.IPv4Address, Lease | None] = {}
        for a, o in zip(addrs, owners, strict=True):
            raw = recs.get(_s(o)) if o is not None else None
            out[a] = self._lease(pc, _s(raw)) if raw is not None else None
        return out

    async def owner_of(self, address: str | ipaddress.IPv4Address) -> Lease | None:
        """The lease or reservation holding ``address`` (None when free).
        Raises InvalidAddress when the address is in no pool."""
        pc = await self.pool_for_address(address)
        off = pc.geo.offset_of(address)
        p = pool_prefix(pc.spec.name)
        owner = await self._guard(self._r.hget(p + "owner", off))
        if owner is None:
            return None
        return await self.lease(pool=pc.spec.name, owner=OwnerKey(_s(owner)))

    # ---------------------------------------------------------------- views

    async def records(self, pool: str) -> AsyncIterator[Lease]:
        pc = await self.pool(pool)
        async for _, raw in self._r.hscan_iter(pool_prefix(pool) + "rec", count=500):
            yield self._lease(pc, _s(raw))

    async def all_records(self, pool: str) -> list[Lease]:
        try:
            return [lease async for lease in self.records(pool)]
        except (RedisError, OSError) as e:
            raise StoreUnavailable(f"Redis store error: {e}") from e

    async def blocks(self, pool: str) -> list[BlockInfo]:
        pc = await self.pool(pool)
        p = pool_prefix(pool)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(p + "blocks")
            pipe.hgetall(p + "bused")
            owners, used = await self._guard(pipe.execute())
        counts = {int(k): int(v) for k, v in used.items()}
        out = [
            BlockInfo(pool=PoolName(pool), index=int(b), cidr=pc.geo.block_cidr(int(b)),
                      node=NodeName(_s(n)), used=counts.get(int(b), 0))
            for b, n in owners.items()
        ]
        return sorted(out, key=lambda b: b.index)

    async def routing_view(self) -> RoutingView:
        """Blocks per node and migrated /32s across every pool (what agents route)."""
        blocks: list[BlockInfo] = []
        migrated: list[MigratedAddress] = []
        for spec in await self.pool_specs():
            pc = await self.pool(spec.name)
            bl = await self.blocks(spec.name)
            blocks.extend(bl)
            by_index = {b.index: b.node for b in bl}
            mig = await self._guard(self._r.hgetall(pool_prefix(spec.name) + "mig"))
            for off, node in mig.items():
                o = int(off)
                migrated.append(MigratedAddress(
                    pool=PoolName(spec.name), address=pc.geo.address_at(o), node=NodeName(_s(node)),
                    block_node=by_index.get(pc.geo.block_of(o))))
        return RoutingView(blocks=blocks, migrated=sorted(migrated, key=lambda m: int(m.address)))

    async def free_in_node_blocks(self, pool: str) -> dict[NodeName, int]:
        """Free addresses per node inside the blocks it already holds (one consistent
        read; schedulers call this for thousands of blocks, so no models are built)."""
        pc = await self.pool(pool)
        p = pool_prefix(pool)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(p + "blocks")
            pipe.hgetall(p + "bused")
            pipe.smembers(p + "excl")
            owners, used, excl = await self._guard(pipe.execute())
        size = pc.geo.block_size
        taken: dict[int, int] = {int(b): int(n) for b, n in used.items()}
        for o in excl:
            b = int(o) // size
            taken[b] = taken.get(b, 0) + 1
        out: dict[NodeName, int] = {}
        for b, node in owners.items():
            name = NodeName(_s(node))
            out[name] = out.get(name, 0) + max(size - taken.get(int(b), 0), 0)
        return out

    async def history(self, address: str) -> list[AuditEntry]:
        pc = await self.pool_for_address(address)
        off = pc.geo.offset_of(address)
        raw = await self._guard(
            self._r.lrange(pool_prefix(pc.spec.name) + f"audit:{off}", 0, -1))
        entries = []
        for item in raw:
            d = json.loads(item)
            entries.append(AuditEntry(address=str(pc.geo.address_at(off)), **d))
        return entries

    # ---------------------------------------------------------------- nodes

    async def heartbeat(self, node: str, *, now: float | None = None) -> None:
        check_name("node", node)
        await self._guard(self._r.hset(node_key(node), "hb", self._now(now)))

    async def fence_node(self, node: str, *, now: float | None = None) -> None:
        await self._guard(self._r.hset(node_key(node), "fenced", self._now(now)))

    async def unfence_node(self, node: str) -> None:
        await self._guard(self._r.hdel(node_key(node), "fenced"))

    async def node_health(self, node: str) -> NodeHealth:
        raw = await self._guard(self._r.hgetall(node_key(node)))
        d = {_s(k): float(v) for k, v in raw.items()}
        return NodeHealth(node=NodeName(node), heartbeat_at=d.get("hb", 0.0),
                          fenced_at=d.get("fenced", 0.0))

    # ------------------------------------------------------------- utilities

    async def gather_limited(self, coros: Sequence[Awaitable[T]], limit: int = 64) -> list[T]:
        sem = asyncio.Semaphore(limit)

        async def one(c: Awaitable[T]) -> T:
            async with sem:
                return await c

        return await asyncio.gather(*(one(c) for c in coros))


#: Kept for readability at call sites: a reservation is a sticky lease.
Reservation = Lease


async def snapshot_pool(ipam: RedisIpam, pool: str) -> check.PoolSnapshot:
    pc = await ipam.pool(pool)
    p = pool_prefix(pool)
    r = ipam.redis
    try:
        nodes = [_s(n) for n in await r.smembers(p + "nodes")]
        async with r.pipeline(transaction=True) as pipe:
            pipe.get(p + "used")
            pipe.smembers(p + "excl")
            pipe.hgetall(p + "owner")
            pipe.hgetall(p + "rec")
            pipe.hgetall(p + "bused")
            pipe.hgetall(p + "blocks")
            for n in nodes:
                pipe.smembers(p + f"nb:{n}")
            for n in nodes:
                pipe.zrange(p + f"nf:{n}", 0, -1)
            res = await pipe.execute()
    except (RedisError, OSError) as e:
        raise StoreUnavailable(f"Redis store error: {e}") from e
    used, excl, owners, recs, bused, blocks = res[:6]
    return check.PoolSnapshot(
        pool=PoolName(pool), size=pc.geo.size, block_size=pc.geo.block_size,
        used=used or b"", excluded={int(x) for x in excl},
        owners={int(k): _s(v) for k, v in owners.items()},
        records={_s(k): _s(v) for k, v in recs.items()},
        bused={int(k): int(v) for k, v in bused.items()},
        blocks={int(k): _s(v) for k, v in blocks.items()},
        node_blocks={n: {int(b) for b in s}
                     for n, s in zip(nodes, res[6:6 + len(nodes)], strict=True)},
        node_free={n: {int(b) for b in s}
                   for n, s in zip(nodes, res[6 + len(nodes):], strict=True)},
    )


async def check_and_repair(ipam: RedisIpam, *, repair: bool = False,
                           pools: Sequence[str] | None = None) -> list[Finding]:
    """Find inconsistencies in every pool; with ``repair``, fix each one atomically."""
    names = list(pools) if pools else [s.name for s in await ipam.pool_specs()]
    findings: list[Finding] = []
    for name in names:
        snap = await snapshot_pool(ipam, name)
        found = check.check_pool(snap)
        # Restore records' own addresses first, so freeing a leaked bit can never
        # hand a reservation's address to someone else in between.
        order = {"owner-without-address": 0, "orphan-address": 1, "bit-clear": 1,
                 "leaked-address": 1}
        found.sort(key=lambda f: order.get(f.kind, 2))
        if repair:
            p = pool_prefix(name)
            for f in found:
                if f.kind in ("orphan-address", "bit-clear", "leaked-address"):
                    reply = await ipam._eval(scripts.REPAIR_OFFSET, p + "meta", p, f.offset)
                elif f.kind == "owner-without-address":
                    reply = await ipam._eval(scripts.REPAIR_OWNER, p + "meta", p, f.owner,
                                             ipam._now(None), ipam.actor)
                else:
                    reply = await ipam._eval(scripts.REPAIR_BLOCK, p + "meta", p, f.block)
                f.repaired = reply[0] != "err"
        findings.extend(found)
    return findings


async def open_ipam(url: str | None, *, actor: str = "stickyip",
                    embedded_path: str | None = None) -> RedisIpam:
    """Connect to the store at ``url`` (or the embedded one) and return the IPAM."""
    from ipam.connection import open_redis

    client, embedded = await open_redis(url, embedded_path=embedded_path)
    ipam = RedisIpam(client, actor=actor)
    ipam.embedded = embedded
    return ipam
