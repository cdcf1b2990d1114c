"""Following the IPAM's routing state: one consistent snapshot at revision R, then the
changes after R read with a blocking read (no polling); a :class:`~ipam.changes.Gap`
(log trimmed, store restarted or failed over, identity changed) takes a fresh
snapshot after a random delay, so thousands of followers told at once do not all
read the store in the same instant (a Kubernetes watch answering 410, then a relist).

A :class:`Follower` reads from a :class:`ChangeSource`: :class:`StoreSource` reads the
store itself (one connection of its own), the fan-out tier's client
(``datapath.feed.FeedSource``) reads a tier that follows the store on many
followers' behalf. Whoever owns the follower is told of every step through
``on_update`` (see :class:`Update`) and reads :attr:`Follower.view`, which is never
re-read from the store between snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ipam.changes import ChangeBatch, Gap, RoutingSnapshot
from ipam.errors import IpamError
from ipam.redis_store import RedisIpam

log = logging.getLogger("stickyip.ipam.follow")


async def cancel(task: asyncio.Task[Any], *, within: float = 10.0) -> None:
    """Cancel ``task`` and wait until it has ended. Python 3.11's ``asyncio.wait_for``
    (redis-py sends every command through it) loses a cancellation that lands just as
    the inner call completes, so a task reading the store may ignore one cancel: it is
    cancelled again until it ends (at most ``within`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.05)
        if loop.time() > deadline:
            log.warning("a task did not end when cancelled", extra={"task": task.get_name()})
            return
    if not task.cancelled() and task.exception() is not None:
        log.debug("cancelled task had failed", extra={"error": repr(task.exception())})


class ChangeSource(Protocol):
    """Where a follower reads the routing state: a snapshot, then the changes after it."""

    async def snapshot(self) -> RoutingSnapshot:
        """The routing state at one revision, with the store's identity."""
        ...

    async def changes(self, after: int, *, identity: str,
                      block_ms: int) -> list[ChangeBatch] | Gap:
        """The batches after ``after`` (oldest first), ``[]`` when nothing came within
        ``block_ms``, or a Gap when they cannot be read any more."""
        ...

    async def aclose(self) -> None: ...


class StoreSource:
    """Reads the store directly (``RedisIpam.routing_snapshot`` and ``read_changes``)."""

    def __init__(self, ipam: RedisIpam, *, own: bool = False) -> None:
        self.ipam = ipam
        #: close the store client with the source
        self.own = own

    async def snapshot(self) -> RoutingSnapshot:
        return await self.ipam.routing_snapshot()

    async def changes(self, after: int, *, identity: str,
                      block_ms: int) -> list[ChangeBatch] | Gap:
        return await self.ipam.read_changes(after, identity=identity, block_ms=block_ms)

    async def aclose(self) -> None:
        if self.own:
            await self.ipam.aclose()


@dataclass(frozen=True, slots=True)
class Update:
    """One step of a follower, as its owner is told of it.

    ``fresh``: :attr:`Follower.view` was replaced by a new snapshot (at start or after
    a gap): recompute everything from it; ``batches`` is empty then. Otherwise
    ``batches`` were just applied to the view, in order.
    ``identity_changed``: a fresh snapshot of another store than the previous one (a
    restart, a failover, a restore) or of the same store at an older revision (it lost
    writes): whatever this follower's owner asserted to the old store may be gone.
    """

    view: RoutingSnapshot
    batches: tuple[ChangeBatch, ...] = ()
    fresh: bool = False
    identity_changed: bool = False
    #: why a fresh snapshot was taken ("start", or the gap's reason)
    reason: str = ""


OnUpdate = Callable[[Update], Awaitable[None] | None]


@dataclass(slots=True)
class FollowStats:
    """Counters of one follower (exported as metrics by its owner)."""

    snapshots: int = 0
    gaps: int = 0
    batches: int = 0
    errors: int = 0
    #: time.monotonic() of the last successful read (snapshot or changes)
    last_ok: float = 0.0
    #: gaps by kind (see :func:`gap_kind`)
    gap_reasons: dict[str, int] = field(default_factory=dict)


def gap_kind(reason: str) -> str:
    """A short label for a gap's reason (for metrics): trimmed, identity, behind, other."""
    r = reason.lower()
    if "trim" in r:
        return "trimmed"
    if "identity" in r or "restart" in r or "failover" in r:
        return "identity"
    if "behind" in r or "lost" in r:
        return "behind"
    return "other"


class Follower:
    """Keeps :attr:`view` equal to the store's routing state, change by change.

    ``block_ms``: how long one blocking read waits on the server when nothing changes
    (an idle follower costs the store one short exchange per ``block_ms``).
    ``resnapshot_spread``: after a gap, the fresh snapshot is taken after a random
    delay in ``[0, resnapshot_spread)`` seconds. ``retry_max``: the longest wait
    between attempts while the source is unreachable (exponential, with jitter).
    """

    def __init__(self, source: ChangeSource, *, on_update: OnUpdate | None = None,
                 block_ms: int = 30_000, resnapshot_spread: float = 2.0,
                 retry_max: float = 5.0, rng: random.Random | None = None,
                 name: str = "", on_gap: Callable[[Gap], None] | None = None) -> None:
        self.source = source
        self.on_update = on_update
        #: told of every gap (before the fresh snapshot), e.g. to count them
        self.on_gap = on_gap
        self.block_ms = block_ms
        self.resnapshot_spread = resnapshot_spread
        self.retry_max = retry_max
        self.rng = rng or random.Random()
        self.name = name
        #: the routing state at :attr:`revision` (None before the first snapshot)
        self.view: RoutingSnapshot | None = None
        self.stats = FollowStats()
        #: set once the first snapshot is in :attr:`view`
        self.ready = asyncio.Event()
        #: a healthy follower reads its source without errors
        self.healthy = False
        self._stale_reason = "start"
        self._prev: tuple[str, int] | None = None

    @property
    def revision(self) -> int:
        return self.view.revision if self.view is not None else 0

    @property
    def identity(self) -> str:
        return self.view.identity if self.view is not None else ""

    async def _tell(self, update: Update) -> None:
        if self.on_update is None:
            return
        res = self.on_update(update)
        if res is not None:
            await res

    async def resnapshot(self, reason: str) -> Update:
        """Replace the view by a fresh snapshot now (no delay) and tell the owner."""
        snap = await self.source.snapshot()
        prev = self._prev
        changed = prev is not None and (prev[0] != snap.identity or snap.revision < prev[1])
        self.view = snap
        self._prev = (snap.identity, snap.revision)
        self.stats.snapshots += 1
        self.stats.last_ok = time.monotonic()
        self._stale_reason = ""
        update = Update(view=snap, fresh=True, identity_changed=changed, reason=reason)
        self.ready.set()
        await self._tell(update)
        return update

    async def step(self) -> Update | None:
        """One read: a snapshot when the view is stale, else the next changes (blocking
        up to ``block_ms``). Returns what changed (None: nothing within block_ms, or a
        gap that makes the next step re-snapshot)."""
        if self.view is None or self._stale_reason:
            return await self.resnapshot(self._stale_reason or "start")
        got = await self.source.changes(self.view.revision, identity=self.view.identity,
                                        block_ms=self.block_ms)
        self.stats.last_ok = time.monotonic()
        if isinstance(got, Gap):
            self.stats.gaps += 1
            kind = gap_kind(got.reason)
            self.stats.gap_reasons[kind] = self.stats.gap_reasons.get(kind, 0) + 1
            log.info("change log gap: taking a fresh snapshot",
                     extra={"follower": self.name, "reason": got.reason,
                            "revision": self.view.revision})
            self._stale_reason = got.reason
            if self.on_gap is not None:
                self.on_gap(got)
            return None
        if not got:
            return None
        for batch in got:
            self.view.apply(batch)
        self._prev = (self.view.identity, self.view.revision)
        self.stats.batches += len(got)
        update = Update(view=self.view, batches=tuple(got))
        await self._tell(update)
        return update

    async def run(self) -> None:
        """Follow until cancelled. Source errors are retried with exponential backoff
        and jitter; the view stays as it was (the last known state) meanwhile."""
        delay = 0.0
        while True:
            if self._stale_reason and self._stale_reason != "start" and self.view is not None:
                # a gap: spread the fresh snapshots of the many followers told at once
                await asyncio.sleep(self.rng.uniform(0.0, self.resnapshot_spread))
            try:
                await self.step()
            except (IpamError, OSError, ConnectionError) as e:
                self.stats.errors += 1
                if self.healthy:
                    log.warning("following the routing state failed (retrying)",
                                extra={"follower": self.name, "error": str(e)})
                self.healthy = False
                delay = min(self.retry_max, max(0.1, delay * 2))
                await asyncio.sleep(self.rng.uniform(delay / 2, delay))
                continue
            delay = 0.0
            self.healthy = True
