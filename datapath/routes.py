"""The agent's routes: keeps the kernel's inter-node routes (direct mode) or BIRD's
configuration (bgp mode) equal to what IPAM says, and fences the endpoints whose
address IPAM now places elsewhere — driven by changes, not by polling.

A :class:`ipam.follow.Follower` keeps the routing state (from the feed, or from the
store itself when no feed is configured); each update recomputes only what it touched
(:class:`datapath.routestate.RouteState`) and applies the difference to the routes
last applied, without reading the store or dumping the kernel. Fencing comes from the
same stream: a block or address served elsewhere, a reservation re-homed with a
newer epoch. A fresh snapshot (start, gap) recomputes everything and reads the
leases of this node's sticky endpoints once; a fresh snapshot of another store
(restart, failover) also re-asserts every endpoint (:mod:`datapath.reassert`). The
full diff against the kernel runs at start and every ``full_resync_interval`` as
drift repair, from the view in memory. Decisions are :mod:`datapath.routing`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from datapath import bird, leases, routing
from datapath.birdctl import BirdControl
from datapath.config import AgentSettings
from datapath.endpoints import EndpointManager
from datapath.errors import DatapathError
from datapath.feedwire import Peers
from datapath.interfaces import NetlinkOps
from datapath.metrics import AgentMetrics
from datapath.routestate import RouteState, Touched
from ipam import IpamError, OwnerKey, RedisIpam
from ipam.follow import Follower, Update, cancel

log = logging.getLogger("stickyip.datapath")

#: called with the reason when a fresh snapshot shows another store (restart, failover)
OnNewStore = Callable[[str], Awaitable[object]]
Announced = tuple[list[routing.IPNetwork], list[routing.IPAddress]]


class RouteManager:
    """Route sync, BIRD configuration and fencing for one node."""

    def __init__(self, settings: AgentSettings, ipam: RedisIpam, *, netlink: NetlinkOps,
                 endpoints: EndpointManager, follower: Follower, bird_control: BirdControl,
                 metrics: AgentMetrics, lock: asyncio.Lock) -> None:
        self.settings = settings
        self.node = settings.node
        self.ipam = ipam
        self.netlink = netlink
        self.endpoints = endpoints
        self.follower = follower
        self.bird_control = bird_control
        self.metrics = metrics
        self.lock = lock
        #: this node's IPv4 address (BIRD's router id); set by the agent once known
        self.address = settings.node_address
        #: this node's IPv6 address ("" when it has none: no IPv6 BGP sessions)
        self.address6 = settings.node_address6
        #: the routes last applied; None: the next sync diffs the kernel in full
        self.last_desired: set[routing.Route] | None = None
        self.healthy = False
        self.bird_ok = False
        #: node -> family -> address, as the follower's source reports them
        self.peers: Peers = {}
        #: told when a fresh snapshot names another store than before
        self.on_new_store: OnNewStore | None = None
        self.state = RouteState(self.node, settings.routing)
        self._updates: list[Update] = []
        self._peers_changed = False
        self._wake = asyncio.Event()
        self._last_full = 0.0
        self._bird_text = ""
        self._bird_error = ""
        self._announced: Announced | None = None
        #: a fresh view to recompute from; leases to re-check; a new store to re-assert to
        self._reset_due = True
        self._epochs_due = False
        self._new_store = ""
        self.follow_task: asyncio.Task[None] | None = None
        #: the revision of the view the last sync applied (routes, fences, BIRD)
        self.applied_revision = 0
        self._applied = asyncio.Condition()

    # -------------------------------------------------------------- inputs

    def on_update(self, update: Update) -> None:
        """The follower's callback: queue the update and wake the route task."""
        self._updates.append(update)
        self._wake.set()

    def on_peers(self, set_: Peers, deleted: list[str]) -> None:
        """Node addresses changed (a node joined, left or moved)."""
        for node, fam in set_.items():
            self.peers[node] = fam
        for node in deleted:
            self.peers.pop(node, None)
        self._peers_changed = True
        self._wake.set()

    def invalidate(self) -> None:
        """The kernel changed under us (an endpoint went): diff it in full next time."""
        self.last_desired = None
        self._wake.set()

    def endpoints_changed(self) -> None:
        """An endpoint was added or fenced: recompute the routes soon."""
        self._wake.set()

    # ---------------------------------------------------------------- work

    async def sync(self, *, force: bool = False) -> None:
        """Apply what the follower brought since the last call: fence, recompute the
        routes it touched and apply the difference (``force``: against the kernel).
        Work a failure interrupts stays due (a re-check of epochs, a re-assert)."""
        view = self.follower.view
        if view is None:
            raise DatapathError("no routing state yet: the feed or the store is not reached")
        updates, self._updates = self._updates, []
        for u in updates:
            if u.fresh:
                self._reset_due = self._epochs_due = True
            if u.identity_changed:
                self._new_store = u.reason
        peers = self.peers
        local = self.endpoints.local()
        touched: Touched | None = None
        if self._reset_due or self._peers_changed:
            self._reset_due = self._peers_changed = False
            self.state.reset(view, peers)
            fences = self.state.to_fence(local)
        else:
            touched = self.state.apply(view, [b for u in updates for b in u.batches], peers)
            fences = self.state.to_fence(local, touched) if not touched.empty() else []
        for ep in fences:
            self.endpoints.fence(ep.addresses[0])
        if self._epochs_due:
            # a snapshot carries no re-homes: read this node's sticky leases once
            await self._check_epochs()
            self._epochs_due = False
        if self._new_store and self.on_new_store is not None:
            await self.on_new_store(self._new_store)
            self._new_store = ""
        desired = self.state.desired(self.endpoints.local(), peers)
        now = time.monotonic()
        plan: routing.RoutePlan | None = None
        if force or self.last_desired is None \
                or now - self._last_full > self.settings.full_resync_interval:
            names = {i: n for n, i in self.endpoints.ifindex.items()}
            plan = routing.diff(desired, await self.netlink.routes(names))
            self._last_full = now
        elif desired != self.last_desired:
            # The kernel matched the last desired set (full diffs repair drift): apply
            # only the change, without dumping every route of a busy node.
            plan = routing.diff(desired, self.last_desired)
        if plan is not None and not plan.empty():
            await self._apply(plan)
        self.last_desired = desired
        if self.settings.routing == "bgp":
            if touched is None or touched.own or fences or self._announced is None:
                self._announced = self.state.announced()
            await self._sync_bird(peers)
        self.healthy = True
        async with self._applied:
            self.applied_revision = view.revision
            self._applied.notify_all()

    async def wait_applied(self, revision: int) -> None:
        """Until a sync has applied a view at ``revision`` or later."""
        await self.wait_until(lambda: self.applied_revision >= revision)

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` holds after a sync (checked now, then after each sync)."""
        async with self._applied:
            await self._applied.wait_for(done)

    async def _apply(self, plan: routing.RoutePlan) -> None:
        names = self.endpoints.ifindex
        for r in plan.delete:
            await self.netlink.apply_route("del", r, names)
        for r in plan.replace + plan.add:
            await self.netlink.apply_route("replace", r, names)
        self.metrics.route_ops.labels("delete").inc(len(plan.delete))
        self.metrics.route_ops.labels("replace").inc(len(plan.replace))
        self.metrics.route_ops.labels("add").inc(len(plan.add))
        log.info("routes synced", extra={"add": len(plan.add), "replace": len(plan.replace),
                                         "delete": len(plan.delete)})

    async def _sync_bird(self, peers: routing.Peers) -> None:
        assert self._announced is not None
        blocks, migrated = self._announced
        served = {a for ep in self.endpoints.local() if not ep.fenced for a in ep.addresses}
        cfg = bird.config_of(router_id=self.address or "0.0.0.0", asn=self.settings.bgp_asn,
                             blocks=blocks, migrated=[a for a in migrated if a in served],
                             peers=peers, self_node=self.node, ipv6=bool(self.address6),
                             external=[bird.parse_peer(p) for p in self.settings.bgp_peers])
        text = bird.render(cfg)
        if text == self._bird_text and self.bird_ok:
            return
        self.bird_control.write(text)
        self._bird_text = text
        try:
            await self.bird_control.configure()
            self.bird_ok = True
            self.metrics.bird_reloads.labels("ok").inc()
            log.info("bird reconfigured", extra={"blocks": len(cfg.blocks),
                                                 "migrated": len(cfg.migrated)})
        except DatapathError as e:
            self.bird_ok = False
            self.metrics.bird_reloads.labels("error").inc()
            if str(e) != self._bird_error:
                log.warning("bird reload failed (retrying)", extra={"error": str(e)})
            self._bird_error = str(e)
        else:
            self._bird_error = ""

    async def _check_epochs(self) -> None:
        """After a fresh snapshot only: fence sticky endpoints whose reservation moved
        on while this node was not following (newer epoch, other home) — the re-homes
        themselves are not in a snapshot. One lease read per sticky endpoint, once."""
        sticky = [r for r in self.endpoints.records.all() if r.kind == "sticky" and not r.fenced]
        leased = await self.ipam.gather_limited(
            [self.ipam.lease(owner=OwnerKey(rec.owner)) for rec in sticky], limit=16)
        placements = {rec.owner: leases.placement_of(lease)
                      for rec, lease in zip(sticky, leased, strict=True) if lease is not None}
        for ep in routing.to_fence_by_epoch(self.node, self.endpoints.local(), placements):
            self.endpoints.fence(ep.addresses[0])

    # ---------------------------------------------------------------- tasks

    async def start(self, *, within: float = 30.0) -> None:
        """Start following; wait up to ``within`` s for the first view, then sync against
        the kernel (routes follow later if the source is not reached yet)."""
        self.follow_task = asyncio.create_task(self.follower.run(), name="follow")
        try:
            async with asyncio.timeout(within):
                await self.follower.ready.wait()
        except TimeoutError:
            log.warning("no routing state yet: starting without it (routes follow)",
                        extra={"seconds": within})
            return
        async with self.lock:
            await self.sync(force=True)

    async def stop(self) -> None:
        if self.follow_task is not None:
            await cancel(self.follow_task)
        await self.follower.source.aclose()

    async def run(self) -> None:
        """Apply updates as they come (at most one round per ``sync_interval``: a burst
        is applied at once), and diff the kernel every ``full_resync_interval``."""
        while True:
            left = self.settings.full_resync_interval - (time.monotonic() - self._last_full)
            try:
                async with asyncio.timeout(max(0.0, left)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                async with self.lock:
                    await self.sync()
            except (DatapathError, IpamError) as e:
                self.metrics.syncs.labels("error").inc()
                if self.healthy:  # log the transition, not every retry
                    log.warning("route sync failed", extra={"error": str(e)})
                self.healthy = False
                self._wake.set()  # try again after the pause below
            else:
                self.metrics.syncs.labels("ok").inc()
            await asyncio.sleep(self.settings.sync_interval)
