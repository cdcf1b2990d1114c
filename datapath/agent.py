"""The node agent: composes its parts — the CNI socket server, the endpoints (ADD,
DEL, CHECK, GC, restore), the routes (sync, BIRD, fencing) and the heartbeat — and
starts and stops them in order. Each part has its own module; this one only wires
them and serializes the commands that change the node."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from datapath import routing
from datapath.birdctl import BirdControl
from datapath.config import AgentSettings, feed_addresses
from datapath.conflicts import RawProber
from datapath.deletions import DeleteQueue
from datapath.endpoints import EndpointManager
from datapath.errors import InvalidConfig, NotAvailable
from datapath.events import PodEvents
from datapath.heartbeat import Heartbeat
from datapath.hooks import EndpointHook
from datapath.interfaces import (
    AddressProber,
    EndpointProgram,
    EndpointRecords,
    NetlinkOps,
    ReportsDrops,
    ReportsMapFill,
)
from datapath.loader import AntispoofProgram
from datapath.metrics import AgentMetrics
from datapath.netlink import Netlink, enable_forwarding
from datapath.nodes import NodeDirectory
from datapath.peers import PeerSource, StorePeers
from datapath.podinfo import PodLookup, name_pod_lookup
from datapath.probe import Conflict
from datapath.reassert import Reasserter
from datapath.recheck import ConflictMonitor
from datapath.routes import RouteManager
from datapath.server import CniServer, Handler, StatusServer
from datapath.store import EndpointStore
from ipam import Gap, RedisIpam
from ipam.follow import ChangeSource, Follower, StoreSource, Update, cancel, gap_kind

log = logging.getLogger("stickyip.datapath")


class Agent:
    """One node's agent. ``netlink``, ``program``, ``records`` and ``prober`` default to
    the real adapters; tests pass the fakes of :mod:`datapath.fakes`. ``events``: where
    pod Events go (None without Kubernetes access)."""

    def __init__(self, settings: AgentSettings, ipam: RedisIpam, *,
                 hooks: Sequence[EndpointHook] = (), kube_pods: PodLookup | None = None,
                 netlink: NetlinkOps | None = None, program: EndpointProgram | None = None,
                 records: EndpointRecords | None = None, prober: AddressProber | None = None,
                 events: PodEvents | None = None, source: ChangeSource | None = None) -> None:
        """``source``: where the routing state comes from (default: the feed when
        ``settings.feed`` names one, else the store); ``events``: where conflicts are
        reported as Events on pods (the API, when the agent reads it)."""
        if not settings.node:
            raise InvalidConfig("the agent needs --node NAME")
        self.settings = settings
        self.node = settings.node
        self.ipam = ipam
        self.lock = asyncio.Lock()
        if netlink is None:
            netlink = Netlink(route_protocol=settings.route_protocol)
        if program is None:
            program = AntispoofProgram(settings.pin_root)
        if records is None:
            records = EndpointStore(settings.state_dir)
        if prober is None:
            prober = RawProber(skip_prefix=settings.host_prefix,
                               wait=settings.conflict_probe_wait,
                               links=settings.conflict_links,
                               announce=settings.conflict_announce)
        self.netlink = netlink
        self.program = program
        self.nodes = NodeDirectory(ipam.redis)
        self.endpoints = EndpointManager(
            settings, ipam, netlink=netlink, program=program, records=records,
            pods=kube_pods or name_pod_lookup(ipam), prober=prober, hooks=hooks,
            on_removed=lambda: self.routes.invalidate(), on_conflict=self._count_conflicts,
            lock=self.lock)
        self.metrics = AgentMetrics(
            self.endpoints.drop_counters,
            drops=[h.drops for h in hooks if isinstance(h, ReportsDrops)],
            map_fill=[p.map_fill for p in (program, *hooks) if isinstance(p, ReportsMapFill)])
        # The routing state: from the feed (node addresses come with it), else from the
        # store (node addresses by subscription).
        self.peer_source: PeerSource | None = None
        if source is None and settings.feed:
            from datapath.feed import FeedSource

            source = FeedSource(feed_addresses(settings.feed), node=self.node,
                                on_peers=lambda s, d: self.routes.on_peers(s, d),
                                owners=self._serves)
        elif source is None:
            source = StoreSource(ipam)
            self.peer_source = StorePeers(ipam.redis)
        self.follower = Follower(source, on_update=self._on_update, on_gap=self._on_gap,
                                 resnapshot_spread=settings.resnapshot_spread,
                                 name=f"agent/{self.node}")
        self.routes = RouteManager(
            settings, ipam, netlink=netlink, endpoints=self.endpoints, follower=self.follower,
            bird_control=BirdControl(config_path=settings.bird_config,
                                     socket_path=settings.bird_socket, birdc=settings.birdc),
            metrics=self.metrics, lock=self.lock)
        self.reasserter = Reasserter(ipam, node=self.node, endpoints=self.endpoints,
                                     metrics=self.metrics, events=events)
        self.routes.on_new_store = self.reasserter.run
        #: DELs the plugin queued while this agent was unreachable
        self.deletions = DeleteQueue(settings.delete_queue_dir)
        self.heartbeat = Heartbeat(ipam, node=self.node, nodes=self.nodes,
                                   address=lambda: self.routes.address,
                                   address6=lambda: self.routes.address6,
                                   interval=settings.heartbeat_interval, metrics=self.metrics,
                                   lock=self.lock, then=self._after_heartbeat)
        self.conflicts = ConflictMonitor(settings, prober=prober, endpoints=self.endpoints,
                                         metrics=self.metrics, events=events)
        self.cni_server = CniServer(settings.socket, self._handlers(), metrics=self.metrics)
        self.status_server = StatusServer(settings.metrics_host, settings.metrics_port,
                                          metrics=self.metrics, health=self.health,
                                          alive=self.alive,
                                          before_scrape=self._count_endpoints)
        self._tasks: list[asyncio.Task[None]] = []
        self.started = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # The deletion queue is ours from before it is read until the CNI socket serves:
        # a DEL meanwhile waits, then reaches this agent instead of the queue.
        await self.deletions.hold()
        try:
            await self._start()
        finally:
            self.deletions.release()

    async def _start(self) -> None:
        t0 = time.monotonic()
        await self.netlink.open()
        enable_forwarding(ipv6=self.settings.ipv6)
        if self.settings.cni_bin_dir:
            from datapath import cni

            log.info("CNI plugin installed",
                     extra={"path": cni.install(self.settings.cni_bin_dir)})
        if not self.routes.address:
            self.routes.address = await self.netlink.global_address(self.settings.host_prefix)
        if not self.routes.address6 and self.settings.ipv6:
            self.routes.address6 = await self.netlink.global_address(
                self.settings.host_prefix, family=6)
        if self.routes.address or self.routes.address6:
            await self.nodes.publish(self.node, self.routes.address, self.routes.address6)
        await self.endpoints.restore(asyncio.ensure_future(asyncio.to_thread(self.program.load)))
        # Queued DELs after the restore: records and programs are loaded, so a queued
        # deletion undoes exactly what ADD did (and an unknown one frees its lease).
        await self.deletions.replay(self.endpoints.delete)
        if self.peer_source is not None:
            self.routes.peers = await self.peer_source.start(self.routes.on_peers)
        await self.routes.start()
        await self.cni_server.start()
        if self.settings.metrics_port:
            await self.status_server.start()
        assert self.routes.follow_task is not None
        self._tasks = [self.routes.follow_task,
                       asyncio.create_task(self.routes.run(), name="route-sync"),
                       asyncio.create_task(self.heartbeat.run(), name="heartbeat")]
        if self.settings.conflict_recheck_interval > 0:
            self._tasks.append(asyncio.create_task(self.conflicts.run(), name="recheck"))
        self.started.set()
        log.info("agent started", extra={"node": self.node, "address": self.routes.address,
                                         "address6": self.routes.address6,
                                         "endpoints": len(self.endpoints.records.all()),
                                         "seconds": round(time.monotonic() - t0, 3)})

    async def stop(self) -> None:
        for t in self._tasks:
            await cancel(t)
        await self.routes.stop()
        if self.peer_source is not None:
            await self.peer_source.stop()
        await self.cni_server.stop()
        await self.status_server.stop()
        # Programs stay attached and maps pinned: pods keep their traffic while the
        # agent is down or restarting.
        self.program.close()
        await self.netlink.close()

    # ------------------------------------------------------------- commands

    def _handlers(self) -> dict[str, Handler]:
        def locked(handler: Handler) -> Handler:
            async def run(req: dict[str, Any]) -> dict[str, Any] | None:
                async with self.lock:
                    return await handler(req)
            return run

        async def add(req: dict[str, Any]) -> dict[str, Any] | None:
            result = await self.endpoints.add(req)
            # its /32 is in place; BGP announcements (a migrated address now served
            # here) and the routes last applied follow at the next sync
            self.routes.endpoints_changed()
            return result

        async def delete(req: dict[str, Any]) -> None:
            await self.endpoints.delete(req)

        async def check(req: dict[str, Any]) -> None:
            await self.endpoints.check(req)

        # ADD takes the lock itself: it lets go of it while it probes for conflicts
        return {"ADD": add, "DEL": locked(delete), "CHECK": check,
                "GC": locked(self.endpoints.gc), "STATUS": self._status,
                "ENDPOINTS": self._list_endpoints, "SYNC": self._sync,
                "RECHECK": self._recheck}

    def _on_update(self, update: Update) -> None:
        self.metrics.follow_updates.labels("snapshot" if update.fresh else "batch").inc()
        self.metrics.follow_revision.set(update.view.revision)
        self.routes.on_update(update)

    def _serves(self, owner: str) -> bool:
        """Whether this node serves an endpoint of reservation ``owner`` (the only
        re-homes it needs to read)."""
        return any(r.owner == owner for r in self.endpoints.records.all())

    def _on_gap(self, gap: Gap) -> None:
        self.metrics.follow_gaps.labels(gap_kind(gap.reason)).inc()

    async def _after_heartbeat(self) -> None:
        """Under the lock, with the store just reached: any queued DEL still left (one
        failed at start, or was queued during a slow start). (Epochs and fences come
        from the change stream, not from a read per endpoint.)"""
        if self.deletions.entries():
            await self.deletions.replay(self.endpoints.delete)

    async def _status(self, _: dict[str, Any]) -> None:
        if not await self.ipam.ping():
            raise NotAvailable("IPAM store unreachable: cannot allocate addresses")

    async def _list_endpoints(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"endpoints": [r.model_dump(mode="json") for r in self.endpoints.records.all()],
                "counters": self.endpoints.drop_counters()}

    async def _recheck(self, _: dict[str, Any]) -> dict[str, Any]:
        """Re-check the running fixed-IP pods for address conflicts now."""
        found = await self.conflicts.check()
        return {"conflicts": [{"address": str(c.address), "mac": c.mac, "link": c.link,
                               "how": c.how} for c in found]}

    def _count_conflicts(self, found: list[Conflict]) -> None:
        for c in found:
            self.metrics.conflicts.labels("add", str(c.address.version)).inc()

    async def _sync(self, _: dict[str, Any]) -> dict[str, Any]:
        async with self.lock:
            await self.routes.sync(force=True)
        routes = sorted(self.routes.last_desired or set(), key=routing.Route.order)
        return {"routes": [str(r.dst) for r in routes]}

    # --------------------------------------------------------------- health

    async def health(self) -> tuple[bool, dict[str, Any]]:
        store = await self.ipam.ping()
        ok = store and self.started.is_set()
        return ok, {"ok": ok, "store": store, "routes_synced": self.routes.healthy,
                    "following": self.follower.healthy, "revision": self.follower.revision,
                    "endpoints": len(self.endpoints.records.all()),
                    "bird": self.routes.bird_ok if self.settings.routing == "bgp" else None}

    def alive(self) -> bool:
        """Started, and none of the agent's long-running tasks has died (the store
        answering or not: readiness says that)."""
        return self.started.is_set() and not any(t.done() for t in self._tasks)

    def _count_endpoints(self) -> None:
        records = self.endpoints.records.all()
        self.metrics.endpoints.set(len(records))
        self.metrics.fenced.set(sum(1 for r in records if r.fenced))
