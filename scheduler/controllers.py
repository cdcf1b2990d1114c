"""The failover and GC controllers: they apply the plans of ``failover.py`` and
``gc.py`` to the IPAM and the Kubernetes API, on the leader only.

Neither reads every record on a timer. Failover looks at the nodes the cluster shows
unhealthy (or gone) and at the IPAM's per-node counters, and reads only the records of
a node it confirmed gone (the IPAM's home index); GC takes expired reservations from
the IPAM's expiry index and walks the records in bounded pages, resuming where the
last pass stopped."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ipam import (
    IpamError,
    IpamStats,
    Lease,
    NodeName,
    OwnerKey,
    PoolName,
    RedisIpam,
    ReservationKey,
    ReservationState,
    StaleEpoch,
)
from ipam.contract import sticky_owner
from ipam.models import NodeHealth
from plumbing.kube.errors import Conflict, KubeError, NotFound
from scheduler import failover, filtering, gc
from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.errors import SchedulerError
from scheduler.kubeapi import KubeApi
from scheduler.metrics import Metrics
from scheduler.models import NodeInfo, PodInfo
from scheduler.scheduling import Scheduler

log = logging.getLogger("stickyip.scheduler.controllers")

#: Records per HSCAN call (each call is one short command on the Redis server).
SCAN_PAGE = 1000
#: At least this many records per GC pass, however small the store.
MIN_GC_RECORDS = 1000
#: Expired reservations handled per GC pass (the rest wait for the next pass).
EXPIRE_BATCH = 500


@dataclass
class FailoverReport:
    gone: dict[NodeName, str] = field(default_factory=dict)
    slow: dict[NodeName, str] = field(default_factory=dict)
    moved: list[ReservationKey] = field(default_factory=list)
    held: list[ReservationKey] = field(default_factory=list)
    deleted_pods: list[str] = field(default_factory=list)
    #: Whether this pass read anything from the IPAM (a healthy cluster: no).
    read_store: bool = False


class FailoverController:
    """Each pass: the *suspects* are the nodes the cache shows NotReady or
    out-of-service, the nodes pods are bound to that no longer exist, and the nodes
    the IPAM's counters say hold records but the cluster no longer has. With no
    suspect the pass reads nothing. Otherwise ONE read of the IPAM's counters
    (``stats``: reservations per node, heartbeats, fences) judges every suspect, and
    only the records of a node confirmed gone are read."""

    def __init__(self, settings: SchedulerSettings, cache: ClusterCache, ipam: RedisIpam,
                 kube: KubeApi | None, scheduler: Scheduler, *, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.cache, self.ipam, self.kube = settings, cache, ipam, kube
        self.scheduler = scheduler
        self.metrics = metrics or scheduler.metrics
        self.clock = clock
        #: The IPAM's counters as last read (here, or by the statistics pass).
        self.stats: IpamStats | None = None
        #: Gone node -> (its reservation counts, when) as last handled: a node whose
        #: counts did not change is handled again only after ``stats_period``.
        self._handled: dict[NodeName, tuple[tuple[int, int], float]] = {}

    def note_stats(self, stats: IpamStats) -> None:
        """The statistics pass read the counters: reuse them to spot nodes that hold
        reservations but no longer exist (deleted while this replica was not watching)."""
        self.stats = stats

    def suspects(self) -> set[NodeName]:
        out = {n.name for n in self.cache.node_list() if not n.ready or n.out_of_service}
        out.update(self.cache.stranded_nodes())
        if self.stats is not None:
            out.update(n for n in self.stats.homes if n not in self.cache.nodes)
        return out

    def _candidates(self, pod: PodInfo | None, selector: dict[str, str],
                    healthy: list[NodeInfo]) -> list[NodeName]:
        if pod is None:
            return [n.name for n in healthy if filtering.matches_selector(selector, n.labels)]
        return [n.name for n in healthy if filtering.check_node(
            pod, n, used=self.cache.used.get(n.name), pool_selector=selector) is None]

    async def run_once(self) -> FailoverReport:
        report = FailoverReport()
        if not self.cache.is_synced("nodes", "pods"):
            return report  # a node missing from an unsynced cache is not "deleted"
        if self.stats is not None and not self.suspects():
            return report  # every node is Ready: nothing to read
        stats = self.stats = await self.ipam.stats(nodes=True)
        report.read_store = True
        now = self.clock()
        for name in sorted(self.suspects()):
            held = stats.homes.get(name, {})
            counts = (held.get("migrate", 0), held.get("wait", 0))
            if not any(counts):
                self._handled.pop(name, None)
                continue  # no reservation is homed there: nothing to move or keep
            node = self.cache.nodes.get(name)
            health = NodeHealth(node=name, heartbeat_at=stats.heartbeats.get(name, 0.0),
                                fenced_at=stats.fenced.get(name, 0.0))
            verdict = failover.judge_node(
                name, node, health, now=now,
                not_ready_since=self.cache.not_ready_since.get(name, 0.0),
                grace=self.settings.node_grace, heartbeat_ttl=self.settings.heartbeat_ttl)
            if not verdict.gone:
                report.slow[name] = verdict.reason
                continue
            report.gone[name] = verdict.reason
            last = self._handled.get(name)
            if last is not None and last[0] == counts and \
                    now - last[1] < self.settings.stats_period:
                continue  # handled, and nothing changed since: no re-read
            await self._rehome(name, verdict.reason, report, fenced=health.fenced_at > 0)
            self._handled[name] = (counts, now)
        for name in [n for n in self._handled if n not in report.gone]:
            del self._handled[name]
        await self._sweep(report)
        return report

    async def _sweep(self, report: FailoverReport) -> None:
        """Pods still bound to a deleted or gone node whose reservation already lives
        elsewhere (moved in an earlier pass): delete them so they are re-created."""
        done = set(report.deleted_pods)
        stuck = [p for n in sorted(set(report.gone) | set(self.cache.stranded_nodes()))
                 for p in self.cache.pods_bound_to(n)
                 if p.ordinal >= 0 and p.ref not in done and not p.deleting]
        if not stuck:
            return
        report.read_store = True
        records = await self.ipam.gather_limited([
            self.ipam.lease(owner=sticky_owner(p.namespace, p.statefulset, p.ordinal))
            for p in stuck])
        for pod, rec in zip(stuck, records, strict=True):
            if rec is not None and rec.key is not None and rec.node \
                    and rec.node != pod.node_name:
                await self._delete(pod, report)

    async def _rehome(self, gone: NodeName, why: str, report: FailoverReport, *,
                      fenced: bool) -> None:
        mine = failover.homed_on(await self.ipam.homed_on(gone), gone)
        if not mine:
            return
        healthy = [n for n in self.cache.node_list()
                   if n.name != gone and n.ready and not n.unschedulable
                   and not n.out_of_service]
        placement: dict[OwnerKey, failover.Placed] = {}
        candidates: dict[OwnerKey, list[NodeName]] = {}
        per_template: dict[tuple[str, str, str], list[NodeName]] = {}
        block_nodes: dict[str, dict[int, NodeName]] = {}
        for r in mine:
            if r.address is None or r.key is None:
                continue
            pc = await self.ipam.pool(r.pool)
            if r.pool not in block_nodes:
                block_nodes[r.pool] = {b.index: b.node for b in await self.ipam.blocks(r.pool)}
            b = pc.geo.block_of(pc.geo.offset_of(r.address))
            placement[r.owner] = failover.Placed(b, block_nodes[r.pool].get(b))
            key = r.key
            pod = self.cache.pod_by_ref(key.pod_ref)
            # Replicas of one StatefulSet share their constraints: compute once.
            tkey = (r.pool, key.namespace, key.statefulset if pod is not None else "")
            if tkey not in per_template:
                per_template[tkey] = self._candidates(pod, dict(pc.spec.node_selector),
                                                      healthy)
            candidates[r.owner] = per_template[tkey]
        plan = failover.plan_rehome(gone, mine, placement=placement, candidates=candidates,
                                    why=why)
        if (plan.blocks or plan.addresses) and not fenced:
            # Fence first: the node's agent, if it ever comes back, must withdraw what
            # moved before the new homes serve it (a newer epoch wins in any case).
            await self.ipam.fence_node(gone)
            self.metrics.nodes_gone.inc()
            log.warning("node confirmed gone; fenced", extra={"node": gone, "why": why})
        new_home: dict[ReservationKey, str] = {}
        for mv in plan.blocks:
            try:
                moved = await self.ipam.rehome_block(pool=mv.pool, block=mv.block,
                                                     from_node=mv.from_node, to_node=mv.to_node)
            except IpamError as e:
                log.warning("block move failed", extra={"block": mv.block, "error": str(e)})
                continue
            self.metrics.rehomed.labels(how="block").inc(len(moved))
            for o in moved:
                key = ReservationKey.parse(o)
                report.moved.append(key)
                new_home[key] = f"{mv.to_node} (its whole block moved)"
        for ma in plan.addresses:
            try:
                await self.ipam.rehome_reservation(ma.key, pool=ma.pool, to_node=ma.to_node,
                                                   expect_epoch=ma.expect_epoch)
            except StaleEpoch:
                continue  # changed meanwhile: the next pass re-plans it
            except IpamError as e:
                log.warning("address move failed", extra={"key": str(ma.key), "error": str(e)})
                continue
            self.metrics.rehomed.labels(how="address").inc()
            report.moved.append(ma.key)
            new_home[ma.key] = f"{ma.to_node} (as a single /32)"
        self.scheduler.views.invalidate()
        for key in report.moved:
            pod = self.cache.pod_by_ref(key.pod_ref)
            if pod is None:
                continue
            if key in new_home:
                await self.scheduler.event_for(
                    pod, "Rehomed", f"node {gone} is confirmed gone ({why}); reservation "
                    f"{key} keeps its address and is now homed on {new_home[key]} with a new "
                    "epoch; the pod is re-created there")
            if pod.node_name == gone:
                await self._delete(pod, report)
            elif not pod.node_name and self.scheduler.ours(pod):
                self.scheduler.enqueue(pod.uid)
        for hold in plan.holds:
            report.held.append(hold.key)
            pod = self.cache.pod_by_ref(hold.key.pod_ref)
            if pod is not None:
                await self.scheduler.event_for(pod, "WaitingForHomeNode", hold.reason)

    async def _delete(self, pod: PodInfo, report: FailoverReport) -> None:
        """The stuck pod must go so its StatefulSet re-creates it on the new home."""
        if self.kube is None:
            return
        try:
            await asyncio.to_thread(self.kube.delete_pod, pod.namespace, pod.name, uid=pod.uid)
            report.deleted_pods.append(pod.ref)
            log.info("deleted pod stuck on a gone node", extra={"pod": pod.ref,
                                                                "node": pod.node_name})
        except Conflict:
            # The UID precondition failed: the pod was already deleted and re-created
            # (the watch has not shown it yet). Nothing left to do.
            log.debug("stuck pod already replaced", extra={"pod": pod.ref})
        except KubeError as e:
            log.warning("could not delete stuck pod", extra={"pod": pod.ref, "error": str(e)})


class GcController:
    """Each pass (every ``gc_period``):

    1. retained reservations whose retain time passed, from the IPAM's expiry index
       (at most ``EXPIRE_BATCH``; no scan);
    2. a bounded page of all records, resumed where the last pass stopped and sized so
       a whole cycle takes about ``gc_grace`` (``records * gc_period / gc_grace``, at
       least ``MIN_GC_RECORDS``), planned against the watch cache (``gc.plan_gc``).

    The IPAM is read first and the cluster second: the cache must have caught up with
    the API server after the read (``fresh``), or the pass plans nothing. Every action
    that frees or unbinds is confirmed just before with a GET of the pod from the API,
    so a pod the cache has not shown yet is never mistaken for a gone one."""

    def __init__(self, settings: SchedulerSettings, ipam: RedisIpam, kube: KubeApi | None,
                 cache: ClusterCache, *, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time,
                 fresh: Callable[[], Awaitable[bool]] | None = None,
                 on_quarantine_freed: Callable[[str], None] | None = None) -> None:
        self.settings, self.ipam, self.kube, self.cache = settings, ipam, kube, cache
        #: Called after a quarantined reservation was freed: a running pod may use its
        #: address (a conflict the reconciliation found), to be restored at once.
        self.on_quarantine_freed = on_quarantine_freed
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.fresh = fresh
        #: Where the record scan resumes (0: a new cycle).
        self.cursor = 0
        #: Ephemeral owners whose pod is missing, and since when.
        self.missing_since: dict[OwnerKey, float] = {}
        self._missing_this_cycle: set[OwnerKey] = set()
        #: Records visited by the last pass (for tests and logs).
        self.last_visited = 0

    def budget(self, records: int) -> int:
        """Records to visit per pass: a full cycle within about ``gc_grace``."""
        window = max(self.settings.gc_grace, self.settings.gc_period)
        return max(MIN_GC_RECORDS, math.ceil(records * self.settings.gc_period / window))

    async def run_once(self) -> list[gc.GcAction]:
        if not self.cache.is_synced("pods", "statefulsets"):
            return []
        done: list[gc.GcAction] = []
        # 1. the expiry index
        for owner in await self.ipam.expired(now=self.clock(), limit=EXPIRE_BATCH):
            try:
                key = ReservationKey.parse(owner)
            except IpamError as e:  # a damaged index entry: 'ipam check' reports it
                log.warning("expiry index names no reservation", extra={"owner": owner,
                                                                        "error": str(e)})
                continue
            await self._act(gc.GcAction(gc.GcOp.EXPIRE, PoolName(""), owner, key, "",
                                        "its retain time has passed"), None, done)
        # 2. a bounded page of the records, the IPAM read first ...
        stats = await self.ipam.stats(nodes=False)
        want = self.budget(sum(stats.records.values()))
        page: dict[OwnerKey, Lease] = {}
        wrapped = False
        while len(page) < want:
            self.cursor, got = await self.ipam.scan_records(self.cursor, count=SCAN_PAGE)
            page.update((r.owner, r) for r in got)
            if self.cursor == 0:
                wrapped = True
                break
        self.last_visited = len(page)
        # ... then the cluster, at least as new as that read
        if self.fresh is not None and not await self.fresh():
            log.info("GC pass skipped: the watch cache did not catch up with the API server")
            return done
        now = self.clock()
        records = [r for r in page.values() if r.state is not ReservationState.RETAINED
                   or r.expires_at < 0 or r.expires_at > now]  # due ones: the index
        plan = gc.plan_gc(records, pods=list(self.cache.pods.values()),
                          statefulsets=list(self.cache.statefulsets.values()),
                          now=now, grace=self.settings.gc_grace,
                          missing_since=self.missing_since)
        for owner in page:
            self.missing_since.pop(owner, None)
        self.missing_since.update(plan.missing_since)
        self._missing_this_cycle.update(plan.missing_since)
        if wrapped:  # a cycle ended: forget owners not seen missing in it
            self.missing_since = {o: t for o, t in self.missing_since.items()
                                  if o in self._missing_this_cycle}
            self._missing_this_cycle = set()
        for a in plan.actions:
            await self._act(a, page.get(a.owner), done)
        log.info("gc pass", extra={"visited": len(page), "cycle_done": wrapped,
                                   "actions": len(done), "missing": len(self.missing_since)})
        return done

    async def _act(self, a: gc.GcAction, seen: Lease | None, done: list[gc.GcAction]
                   ) -> None:
        try:
            if await self._apply(a, seen):
                done.append(a)
                self.metrics.gc.labels(op=a.op.value).inc()
                log.info("gc", extra={"op": a.op.value, "owner": a.owner, "why": a.reason})
        except (IpamError, KubeError, SchedulerError) as e:
            log.warning("gc action failed", extra={"owner": a.owner, "error": str(e)})

    async def _pod_alive(self, ref: str, uid: str, *, any_phase: bool = False) -> bool:
        """Does the API (not the cache) still show pod ``ref`` (with ``uid``, when given;
        running, unless ``any_phase``)?"""
        if self.kube is None or not ref or "/" not in ref:
            return False
        namespace, name = ref.split("/", 1)
        try:
            obj = await asyncio.to_thread(self.kube.get,
                                          f"/api/v1/namespaces/{namespace}/pods/{name}")
        except NotFound:
            return False
        meta = obj.get("metadata") or {}
        phase = (obj.get("status") or {}).get("phase")
        return (not uid or meta.get("uid") == uid) and (
            any_phase or phase not in ("Succeeded", "Failed"))

    async def _apply(self, a: gc.GcAction, seen: Lease | None) -> bool:
        if a.op is gc.GcOp.EXPIRE:
            assert a.key is not None
            return await self.ipam.expire_reservation(a.key)
        if a.op is gc.GcOp.RELEASE:
            if seen is not None and await self._pod_alive(seen.pod, a.holder):
                return False
            return await self.ipam.release(owner=a.owner, holder=a.holder) is not None
        if a.op is gc.GcOp.HOLDER_GONE:
            if seen is not None and await self._pod_alive(seen.pod, a.holder):
                return False
            gone = await self.ipam.confirm_holder_gone(a.owner, holder=a.holder)
            if gone is not None and self.on_quarantine_freed is not None:
                self.on_quarantine_freed(f"quarantined {a.owner} freed")
            return gone is not None
        assert a.key is not None
        key = a.key
        if a.op is gc.GcOp.UNBIND:
            if await self._pod_alive(key.pod_ref, a.holder):
                return False
            return await self.ipam.unbind(key, holder=a.holder) is not None
        # RETAIN may free at once (retain 0s): re-check just before that the pod has not
        # come back and the reservation is unchanged since it was read.
        if await self._pod_alive(key.pod_ref, "", any_phase=True):
            return False
        now_rec = await self.ipam.lease(owner=a.owner)
        if now_rec is None or seen is None or now_rec.updated_at != seen.updated_at:
            return False
        status, _ = await self.ipam.retain_reservation(key)
        return status in ("ok", "released")
