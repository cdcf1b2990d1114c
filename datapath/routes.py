"""The agent's routes: keeps the kernel's inter-node routes (direct mode) or BIRD's
configuration (bgp mode) equal to what IPAM says, and fences the endpoints whose
address IPAM now places elsewhere. Decisions are :mod:`datapath.routing`'s; this
module reads the facts and applies the plans."""

from __future__ import annotations

import asyncio
import logging
import time

from datapath import bird, leases, routing
from datapath.birdctl import BirdControl
from datapath.config import AgentSettings
from datapath.endpoints import EndpointManager
from datapath.errors import DatapathError
from datapath.interfaces import NetlinkOps
from datapath.metrics import AgentMetrics
from datapath.nodes import NodeDirectory
from ipam import IpamError, OwnerKey, RedisIpam, RoutingView

log = logging.getLogger("stickyip.datapath")


class RouteManager:
    """Route sync, BIRD configuration and fencing for one node."""

    def __init__(self, settings: AgentSettings, ipam: RedisIpam, *, netlink: NetlinkOps,
                 endpoints: EndpointManager, nodes: NodeDirectory, bird_control: BirdControl,
                 metrics: AgentMetrics, lock: asyncio.Lock) -> None:
        self.settings = settings
        self.node = settings.node
        self.ipam = ipam
        self.netlink = netlink
        self.endpoints = endpoints
        self.nodes = nodes
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
        self._last_full = 0.0
        self._bird_text = ""
        self._bird_error = ""

    def invalidate(self) -> None:
        """The kernel changed under us (an endpoint went): diff it in full next time."""
        self.last_desired = None

    async def sync(self, *, force: bool = False) -> None:
        view = await self.ipam.routing_view()
        peers = await self.nodes.peers()
        for ep in routing.to_fence(self.node, view, self.endpoints.local()):
            self.endpoints.fence(ep.addresses[0])
        desired = routing.desired_routes(node=self.node, view=view,
                                         endpoints=self.endpoints.local(), peers=peers,
                                         mode=self.settings.routing)
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
            await self._sync_bird(view, peers)
        self.healthy = True

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

    async def _sync_bird(self, view: RoutingView, peers: routing.Peers) -> None:
        blocks, migrated = routing.announced(self.node, view)
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

    async def check_epochs(self) -> None:
        """Fence sticky endpoints whose reservation moved on (newer epoch, other home)
        even when the routing view alone does not show it."""
        sticky = [r for r in self.endpoints.records.all() if r.kind == "sticky" and not r.fenced]
        placements: dict[str, routing.Placement] = {}
        for rec in sticky:
            lease = await self.ipam.lease(owner=OwnerKey(rec.owner))
            if lease is not None:
                placements[rec.owner] = leases.placement_of(lease)
        for ep in routing.to_fence_by_epoch(self.node, self.endpoints.local(), placements):
            self.endpoints.fence(ep.addresses[0])

    async def run(self) -> None:
        """Sync every ``sync_interval`` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.sync_interval)
            try:
                async with self.lock:
                    await self.sync()
            except (DatapathError, IpamError) as e:
                self.metrics.syncs.labels("error").inc()
                if self.healthy:  # log the transition, not every retry
                    log.warning("route sync failed", extra={"error": str(e)})
                self.healthy = False
            else:
                self.metrics.syncs.labels("ok").inc()
