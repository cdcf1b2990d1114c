"""The failover and GC controllers: they apply the plans of ``failover.py`` and
``gc.py`` to the IPAM and the Kubernetes API, on the leader only."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ipam import (
    IpamError,
    Lease,
    NodeName,
    OwnerKey,
    RedisIpam,
    ReservationKey,
    StaleEpoch,
)
from ipam.contract import sticky_owner
from plumbing.kube.errors import Conflict, KubeError, NotFound
from scheduler import failover, filtering, gc
from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.errors import SchedulerError
from scheduler.kubeapi import KubeApi
from scheduler.metrics import Metrics
from scheduler.models import NodeInfo, PodInfo
from scheduler.objects import pod_from_json, statefulset_from_json
from scheduler.scheduling import Scheduler

log = logging.getLogger("stickyip.scheduler.controllers")


async def all_records(ipam: RedisIpam) -> list[Lease]:
    out: list[Lease] = []
    for spec in await ipam.pool_specs():
        out.extend(await ipam.all_records(spec.name))
    return out


@dataclass
class FailoverReport:
    gone: dict[NodeName, str] = field(default_factory=dict)
    slow: dict[NodeName, str] = field(default_factory=dict)
    moved: list[ReservationKey] = field(default_factory=list)
    held: list[ReservationKey] = field(default_factory=list)
    deleted_pods: list[str] = field(default_factory=list)


class FailoverController:
    def __init__(self, settings: SchedulerSettings, cache: ClusterCache, ipam: RedisIpam,
                 kube: KubeApi | None, scheduler: Scheduler, *, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.cache, self.ipam, self.kube = settings, cache, ipam, kube
        self.scheduler = scheduler
        self.metrics = metrics or scheduler.metrics
        self.clock = clock

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
        now = self.clock()
        records = await all_records(self.ipam)
        homes = sorted({r.node for r in records if r.key is not None and r.node})
        for name in homes:
            node = self.cache.nodes.get(name)
            if node is not None and node.ready and not node.out_of_service:
                continue
            health = await self.ipam.node_health(name)
            verdict = failover.judge_node(
                name, node, health, now=now,
                not_ready_since=self.cache.not_ready_since.get(name, 0.0),
                grace=self.settings.node_grace, heartbeat_ttl=self.settings.heartbeat_ttl)
            if not verdict.gone:
                report.slow[name] = verdict.reason
                continue
            report.gone[name] = verdict.reason
            await self._rehome(name, verdict.reason, records, report,
                               fenced=health.fenced_at > 0)
        await self._sweep(records, report)
        return report

    async def _sweep(self, records: list[Lease], report: FailoverReport) -> None:
        """Pods still bound to a deleted or gone node whose reservation already lives
        elsewhere (moved in an earlier pass): delete them so they are re-created."""
        homes = {r.owner: r.node for r in records if r.key is not None}
        done = set(report.deleted_pods)
        for pod in list(self.cache.pods.values()):
            if not pod.node_name or pod.ordinal < 0 or pod.ref in done or pod.deleting:
                continue
            if pod.node_name in self.cache.nodes and pod.node_name not in report.gone:
                continue
            home = homes.get(sticky_owner(pod.namespace, pod.statefulset, pod.ordinal))
            if home and home != pod.node_name:
                await self._delete(pod, report)

    async def _rehome(self, gone: NodeName, why: str, records: list[Lease],
                      report: FailoverReport, *, fenced: bool) -> None:
        mine = failover.homed_on(records, gone)
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
    def __init__(self, settings: SchedulerSettings, ipam: RedisIpam, kube: KubeApi, *,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.settings, self.ipam, self.kube = settings, ipam, kube
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.missing_since: dict[OwnerKey, float] = {}

    async def run_once(self) -> list[gc.GcAction]:
        # IPAM first, the API second: an owner that exists now shows up in the listing.
        records = await all_records(self.ipam)
        pods_raw, _ = await asyncio.to_thread(self.kube.list, "pods")
        sts_raw, _ = await asyncio.to_thread(self.kube.list, "statefulsets")
        now = self.clock()
        plan = gc.plan_gc(records, pods=[pod_from_json(p) for p in pods_raw],
                          statefulsets=[statefulset_from_json(s) for s in sts_raw],
                          now=now, grace=self.settings.gc_grace,
                          missing_since=self.missing_since)
        self.missing_since = plan.missing_since
        before = {r.owner: r.updated_at for r in records}
        done: list[gc.GcAction] = []
        for a in plan.actions:
            try:
                if await self._apply(a, before.get(a.owner, 0.0)):
                    done.append(a)
                    self.metrics.gc.labels(op=a.op.value).inc()
                    log.info("gc", extra={"op": a.op.value, "owner": a.owner,
                                          "why": a.reason})
            except (IpamError, KubeError, SchedulerError) as e:
                log.warning("gc action failed", extra={"owner": a.owner, "error": str(e)})
        return done

    async def _apply(self, a: gc.GcAction, seen_updated: float) -> bool:
        if a.op is gc.GcOp.RELEASE:
            return await self.ipam.release(pool=a.pool, owner=a.owner, holder=a.holder) \
                is not None
        assert a.key is not None
        if a.op is gc.GcOp.EXPIRE:
            return await self.ipam.expire_reservation(a.key, pool=a.pool)
        if a.op is gc.GcOp.UNBIND:
            return await self.ipam.unbind(a.key, pool=a.pool, holder=a.holder) is not None
        # RETAIN may free at once (retain 0s): re-check just before that the pod has not
        # come back and the reservation is unchanged since it was read.
        key = a.key
        path = f"/api/v1/namespaces/{key.namespace}/pods/{key.pod_name}"
        try:
            await asyncio.to_thread(self.kube.get, path)
            return False
        except NotFound:
            pass
        now_rec = await self.ipam.lease(pool=a.pool, owner=a.owner)
        if now_rec is None or now_rec.updated_at != seen_updated:
            return False
        status, _ = await self.ipam.retain_reservation(key, pool=a.pool)
        return status in ("ok", "released")
