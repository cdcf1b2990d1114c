"""The scheduling loop: pick a node for each pending pod of this scheduler, reserve
its sticky address in that node's block (before binding), bind via
``pods/binding``, annotate the pod, and tell the user why a pod waits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ipam import (
    AddressTaken,
    InvalidAddress,
    IpamError,
    NodeFailurePolicy,
    NodeName,
    PoolExhausted,
    PoolName,
    PoolNotFound,
    RedisIpam,
    Reservation,
    ReservationConflict,
    ReservationInUse,
    StoreUnavailable,
)
from ipam.contract import PodRequest, format_ips, pool_of, written_annotations
from ipam.errors import AllocationPaused
from plumbing.kube.errors import Conflict, KubeError, NotFound
from scheduler import filtering, scoring
from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.errors import InvalidAnnotation, NotLeader, SchedulerError
from scheduler.kubeapi import KubeApi
from scheduler.metrics import Metrics
from scheduler.models import NodeInfo, PodInfo, PodUid
from scheduler.objects import sticky_request

log = logging.getLogger("stickyip.scheduler")


@dataclass(slots=True)
class Decision:
    node: NodeName | None
    reservation: Reservation | None = None
    #: Why no node was chosen (an Event message), when ``node`` is None.
    message: str = ""
    reason: str = "FailedScheduling"
    #: Try again later (False: wait for the pod to change).
    retry: bool = True


class AddressViews:
    """Per-pool free-address views for filtering and scoring, re-read from the IPAM
    (``RedisIpam.address_view``: one round trip) at most every ``ttl`` seconds and
    adjusted locally after each claim."""

    def __init__(self, ipam: RedisIpam, ttl: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.ipam, self.ttl, self.clock = ipam, ttl, clock
        self._views: dict[str, tuple[float, filtering.AddressView]] = {}

    async def get(self, pool: str) -> filtering.AddressView:
        hit = self._views.get(pool)
        if hit is not None and self.clock() - hit[0] < self.ttl:
            return hit[1]
        # one round trip: free addresses per node, unclaimed blocks and the exact total
        seen = await self.ipam.address_view(pool)
        view = filtering.AddressView(
            pool=PoolName(pool), free_in_node_blocks=seen.free_in_node_blocks,
            unclaimed_blocks=seen.unclaimed_blocks, free_total=seen.free_total,
            node_selector=dict(seen.ref.spec.node_selector), block_size=seen.ref.geo.block_size)
        self._views[pool] = (self.clock(), view)
        return view

    def taken(self, pool: str, node: NodeName) -> None:
        hit = self._views.get(pool)
        if hit is None:
            return
        view = hit[1]
        view.free_total -= 1
        have = view.free_in_node_blocks.get(node, 0)
        if have > 0:
            view.free_in_node_blocks[node] = have - 1
        elif view.unclaimed_blocks > 0 and view.block_size > 0:
            # The claim took a fresh block (the IPAM's order: own blocks, then a new one).
            view.unclaimed_blocks -= 1
            view.free_in_node_blocks[node] = view.block_size - 1
        else:  # a /32 borrowed from another node's block: re-read next time
            self._views.pop(pool, None)

    def invalidate(self, pool: str | None = None) -> None:
        if pool is None:
            self._views.clear()
        else:
            self._views.pop(pool, None)


def home_message(address: object, home: NodeName, node: NodeInfo | None, reason: str | None,
                 policy: NodeFailurePolicy) -> str:
    """Why a pod with a reservation waits for its home node."""
    if node is None:
        state = "which no longer exists"
    elif not node.ready:
        state = "which is NotReady"
    else:
        state = f"where it cannot run: {reason}"
    if policy is NodeFailurePolicy.WAIT:
        then = "waiting (node-failure=wait)"
    elif node is not None and node.ready:
        then = "waiting for room there (the address stays on its home node)"
    else:
        then = "waiting until the node recovers or is confirmed gone (node-failure=migrate)"
    return f"reserved {address} is homed on {home}, {state}; {then}"


class Scheduler:
    """Decides (filter, score, reserve) and binds pods with ``spec.schedulerName``."""

    def __init__(self, settings: SchedulerSettings, cache: ClusterCache, ipam: RedisIpam,
                 kube: KubeApi | None, *, metrics: Metrics | None = None,
                 is_leader: Callable[[], bool] = lambda: True) -> None:
        self.settings, self.cache, self.ipam, self.kube = settings, cache, ipam, kube
        self.metrics = metrics or Metrics()
        self.is_leader = is_leader
        self.views = AddressViews(ipam, settings.address_view_ttl)
        self.queue: asyncio.Queue[PodUid] = asyncio.Queue()
        self._queued: set[PodUid] = set()
        #: Pods dequeued while this replica could not act as leader (a standby, or a
        #: leader whose renewal is late): scheduled again once it leads.
        self._parked: set[PodUid] = set()
        self._backoff: dict[PodUid, float] = {}
        self._last_event: dict[tuple[PodUid, str], float] = {}
        self._next_start = 0
        self._binds: set[asyncio.Task[None]] = set()
        self._bind_slots = asyncio.Semaphore(16)
        #: Why no new address may be handed out now (empty: none). Set while the IPAM
        #: is reconciled with the running pods (``scheduler.reconciler``): an address a
        #: lost reservation's pod still uses must be restored before anything else
        #: could take it. Pods going back to an existing reservation are not held.
        self.allocation_hold = ""
        cache.pod_listeners.append(self._on_pod)
        cache.node_listeners.append(self._on_node)
        cache.sync_listeners.append(self._on_synced)

    # ------------------------------------------------------------- queueing

    def ours(self, pod: PodInfo) -> bool:
        return (pod.scheduler_name == self.settings.name and not pod.node_name
                and not pod.deleting and not pod.terminated)

    def enqueue(self, uid: PodUid) -> None:
        if uid not in self._queued:
            self._queued.add(uid)
            self.queue.put_nowait(uid)

    def enqueue_pending(self) -> None:
        for pod in list(self.cache.pods.values()):
            if self.ours(pod):
                self.enqueue(pod.uid)

    def unpark(self) -> None:
        """Leadership (re)gained or renewed: queue the pods set aside meanwhile."""
        parked, self._parked = self._parked, set()
        for uid in parked:
            self.enqueue(uid)

    def _on_pod(self, old: PodInfo | None, new: PodInfo | None) -> None:
        if new is None:
            if old is not None:
                self._backoff.pop(old.uid, None)
                self._parked.discard(old.uid)
            return
        if self.ours(new):
            if old is None or old.resource_version != new.resource_version:
                self._backoff.pop(new.uid, None)
            self.enqueue(new.uid)
        else:
            self._parked.discard(new.uid)

    def _on_node(self, old: NodeInfo | None, new: NodeInfo | None) -> None:
        # A node that appears or recovers may make waiting pods schedulable. Not while
        # the caches sync: every pod dequeued meanwhile is parked and queued again once
        # they are (``_on_synced``), and a scan of every pod per listed node would cost
        # nodes x pods at start-up.
        if not self.synced():
            return
        if new is not None and (old is None or (new.ready and not old.ready)
                                or old.unschedulable != new.unschedulable):
            self.enqueue_pending()

    def _on_synced(self, kind: str) -> None:
        if self.synced():
            self.unpark()

    def synced(self) -> bool:
        """Decisions wait until the cache holds every node and pod (as kube-scheduler
        waits for its informers): a node not listed yet is not "gone", and a node's
        load is not known before its pods are."""
        return self.cache.is_synced("nodes", "pods")

    def _retry_later(self, uid: PodUid) -> None:
        delay = min(self._backoff.get(uid, self.settings.retry_period / 2) * 2, 30.0)
        self._backoff[uid] = delay
        asyncio.get_running_loop().call_later(delay, self.enqueue, uid)

    # ------------------------------------------------------------- decision

    async def decide(self, pod: PodInfo) -> Decision:
        """Filter, score and (for an opted-in StatefulSet pod) reserve the address on
        the chosen node. Touches the IPAM, not the Kubernetes API."""
        try:
            req = sticky_request(pod)
        except InvalidAnnotation as e:
            return Decision(None, message=f"invalid stickyip annotation: {e}",
                            reason="InvalidStickyIPAnnotation", retry=False)
        try:
            if req is None:
                return await self._decide_plain(pod)
            return await self._decide_sticky(pod, req)
        except PoolNotFound as e:
            return Decision(None, message=f"{e}; create it with 'stickyip pool apply'",
                            reason="PoolNotFound")
        except AllocationPaused as e:
            return Decision(None, message=f"waiting to take a new address: {e}",
                            reason="IPAMReconciling")
        except StoreUnavailable as e:
            return Decision(None, message=f"IPAM store unavailable: {e}",
                            reason="IPAMUnavailable")

    def _nodes_for(self, pod: PodInfo, view: filtering.AddressView | None, needs: bool
                   ) -> filtering.FilterResult:
        nodes = self.cache.node_list()
        enough = filtering.feasible_target(len(nodes),
                                           self.settings.percentage_of_nodes_to_score)
        start = self._next_start % len(nodes) if nodes else 0
        res = filtering.filter_nodes(pod, nodes, used=self.cache.used, addresses=view,
                                     needs_address=needs, enough=enough, start=start)
        self._next_start = start + res.examined
        return res

    async def _decide_plain(self, pod: PodInfo) -> Decision:
        view = None
        try:
            view = await self.views.get(pool_of(pod.annotations))
        except PoolNotFound:
            view = None  # no IPAM pool to check: schedule on resources alone
        res = self._nodes_for(pod, view, needs=False)
        chosen = scoring.pick(res.feasible, scoring.ScoreInputs(
            addresses=view, used=self.cache.used))
        if chosen is None:
            return Decision(None, message=filtering.summarize(res.failed, len(self.cache.nodes)))
        return Decision(chosen.name)

    async def _decide_sticky(self, pod: PodInfo, req: PodRequest) -> Decision:
        pools = list(req.pools)
        try:
            # what a claim would record, validated against the store, written nowhere
            seen = await self.ipam.claim(req.key, pools=pools, addresses=list(req.addresses),
                                         dry_run=True)
        except AddressTaken as e:
            return Decision(None, message=f"{format_ips(req.addresses)} ({e})",
                            reason="AddressTaken")
        except ReservationInUse as e:
            return Decision(None, message=str(e), reason="ReservationInUse")
        except ReservationConflict as e:
            return Decision(None, message=str(e), reason="ReservationConflict")
        except InvalidAddress as e:
            return Decision(None, message=str(e), reason="InvalidStickyIPAnnotation",
                            retry=False)
        complete = len(seen.addresses) == len(pools)
        if not complete and self.allocation_hold:
            return Decision(None, seen, message=f"waiting to take a new address: "
                            f"{self.allocation_hold}", reason="IPAMReconciling")
        home = seen.node if seen.addresses and seen.node else None
        if home is not None:
            node = self.cache.nodes.get(home)
            reason = None
            if node is not None:
                reason = filtering.check_node(pod, node, used=self.cache.used.get(home),
                                              pool_selector=None)
            if node is None or reason is not None:
                return Decision(None, seen, message=home_message(
                    seen.address, home, node, reason, seen.policy), reason="WaitingForHomeNode")
            chosen: NodeInfo | None = node
        else:
            view = filtering.combine_views([await self.views.get(p) for p in pools])
            fr = self._nodes_for(pod, view, needs=not complete)
            chosen = scoring.pick(fr.feasible, scoring.ScoreInputs(
                addresses=view, used=self.cache.used, sticky=True,
                replicas_on=self.cache.replicas_on(pod.namespace, pod.statefulset)))
            if chosen is None:
                return Decision(None, message=filtering.summarize(fr.failed,
                                                                  len(self.cache.nodes)))
        assert chosen is not None
        try:
            claimed = await self.ipam.claim(req.key, pools=pools, addresses=list(req.addresses),
                                            node=chosen.name, holder=pod.uid, pod=pod.ref,
                                            retain=req.request.retain,
                                            policy=req.request.policy)
        except PoolExhausted as e:
            for p in pools:
                self.views.invalidate(p)
            return Decision(None, message=str(e), reason="PoolExhausted")
        except (ReservationConflict, AddressTaken) as e:  # moved or taken meanwhile
            return Decision(None, message=str(e), reason="ReservationMoved")
        if claimed.node != chosen.name:
            # A listed address's block was claimed by another node between the
            # preview and the claim: that node is its home now; decide again.
            return Decision(None, claimed, reason="ReservationMoved",
                            message=f"{claimed.address} is now homed on {claimed.node}")
        taken = {a.pool for a in claimed.addresses} - {a.pool for a in seen.addresses}
        for p in taken:
            self.views.taken(p, chosen.name)
        return Decision(chosen.name, claimed)

    # ---------------------------------------------------------------- binding

    async def schedule_one(self, uid: PodUid) -> Decision | None:
        self._queued.discard(uid)
        pod = self.cache.pods.get(uid)
        if pod is None or not self.ours(pod):
            return None
        if not self.is_leader() or not self.synced():
            # Not dropped: a leader whose renewal is merely late gets it back on renewal,
            # and every pod set aside before the caches synced is queued once they are.
            self._parked.add(uid)
            return None
        t0 = time.perf_counter()
        decision = await self.decide(pod)
        self.metrics.decision_seconds.observe(time.perf_counter() - t0)
        if decision.node is None:
            self.metrics.decisions.labels(result="unschedulable").inc()
            log.info("pod waits", extra={"pod": pod.ref, "why": decision.message})
            await self._event(pod, decision.reason, decision.message)
            if decision.retry:
                self._retry_later(uid)
            return decision
        self.metrics.decisions.labels(result="scheduled").inc()
        self.cache.assume(uid, decision.node)
        task = asyncio.create_task(self._bind(pod, decision))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)
        return decision

    async def _bind(self, pod: PodInfo, decision: Decision) -> None:
        assert decision.node is not None
        if self.kube is None:
            return
        res = decision.reservation
        async with self._bind_slots:
            try:
                if res is not None and res.address is not None:
                    want = written_annotations((a.address for a in res.addresses), res.node,
                                               res.epoch)
                    if any(pod.annotations.get(k) != v for k, v in want.items()):
                        await asyncio.to_thread(self.kube.annotate_pod, pod.namespace, pod.name,
                                                want, uid=pod.uid)
                if not self.is_leader():
                    raise NotLeader("lost the leader Lease before binding")
                await asyncio.to_thread(self.kube.bind, pod.namespace, pod.name, pod.uid,
                                        decision.node)
            except NotLeader as e:
                # The reservation stays (keyed by ordinal, homed where decided); whoever
                # leads next decides again and finds it.
                self.metrics.bindings.labels(result="not_leader").inc()
                self.cache.forget(pod.uid)
                self._parked.add(pod.uid)
                log.info("binding deferred", extra={"pod": pod.ref, "why": str(e)})
                return
            except (Conflict, NotFound) as e:
                # Bound by someone else, deleted, or leadership lost: nothing to undo in
                # the IPAM (the claim is keyed by ordinal and stays with its home).
                self.metrics.bindings.labels(result="conflict").inc()
                self.cache.forget(pod.uid)
                log.info("binding skipped", extra={"pod": pod.ref, "why": str(e)})
                return
            except (KubeError, SchedulerError) as e:
                self.metrics.bindings.labels(result="error").inc()
                self.cache.forget(pod.uid)
                log.warning("binding failed", extra={"pod": pod.ref, "error": str(e)})
                self._retry_later(pod.uid)
                return
        self.metrics.bindings.labels(result="bound").inc()
        self._backoff.pop(pod.uid, None)
        what = f" with {res.address} (epoch {res.epoch})" if res is not None else ""
        log.info("pod bound", extra={"pod": pod.ref, "node": decision.node,
                                     "address": str(res.address) if res else None})
        await self._event(pod, "Scheduled",
                          f"Successfully assigned {pod.ref} to {decision.node}{what}",
                          etype="Normal", dedupe=False)

    async def _event(self, pod: PodInfo, reason: str, message: str, *, etype: str = "Warning",
                     dedupe: bool = True) -> None:
        if self.kube is None:
            return
        now = time.monotonic()
        key = (pod.uid, f"{reason}:{message}")
        if dedupe and now - self._last_event.get(key, -1e9) < 60:
            return
        self._last_event[key] = now
        obj = {"apiVersion": "v1", "metadata": {"name": pod.name, "namespace": pod.namespace,
                                                "uid": pod.uid}}
        try:
            await asyncio.to_thread(self.kube.event, obj, reason=reason, message=message,
                                    etype=etype, component=self.settings.name)
        except KubeError as e:
            log.warning("could not record event", extra={"pod": pod.ref, "error": str(e)})

    async def event_for(self, pod: PodInfo, reason: str, message: str) -> None:
        await self._event(pod, reason, message)

    async def run(self) -> None:
        while True:
            uid = await self.queue.get()
            try:
                await self.schedule_one(uid)
            except IpamError as e:
                log.warning("IPAM error while scheduling", extra={"uid": uid, "error": str(e)})
                self._retry_later(uid)

    async def drain(self) -> None:
        """Wait for in-flight bindings (tests, shutdown)."""
        while self._binds:
            await asyncio.gather(*list(self._binds), return_exceptions=True)

