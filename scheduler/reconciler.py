"""Reconciliation of running pods with the IPAM (issue 16), on the leader.

The cluster holds the truth about live addresses: every running sticky pod carries
the addresses, home and epoch of its reservation (``stickyip.io/ip``/``node``/
``epoch``). A pass compares them with the IPAM (``scheduler.cluster_check``):

- a reservation missing for a running pod is restored as the pod uses it (its
  addresses, on the node it runs on, held by that pod): never handed to anyone else;
- an address the IPAM gives to another owner is a conflict: a reservation bound to
  another pod is quarantined (its addresses stay taken, the GC frees them once that
  pod is gone, and the next pass restores the running pod's reservation); each
  conflict is an Event on the pod and counts in ``stickyip_reconcile_conflicts``.

A pass runs when this replica starts leading, whenever the store's identity changes
(a restart or failover of Redis: ``follow_store`` reads the IPAM's change log and
sees a Gap), and every ``reconcile_period`` (slow: it reads a record per pod). Until
the first pass after a start or an identity change succeeded, the scheduler hands
out no new address (``Scheduler.allocation_hold``), and neither does the store
(``RedisIpam.open_allocation``, written by each successful pass, names the server
process the pods were reconciled with; a restarted or promoted one refuses new
addresses with ``AllocationPaused``): a lost reservation's address is restored
before anything can allocate it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipam import (
    AddressTaken,
    IpamError,
    Lease,
    OwnerKey,
    RedisIpam,
    ReservationConflict,
    ReservationKey,
    ReservationState,
)
from ipam.changes import Gap
from scheduler.cache import ClusterCache
from scheduler.cluster_check import check_against_cluster
from scheduler.config import SchedulerSettings
from scheduler.errors import SchedulerError
from scheduler.metrics import Metrics
from scheduler.models import PodUid
from scheduler.objects import sticky_request
from scheduler.reconcile import Finding, LivePod, Verdict, live_sticky_pod, restorable
from scheduler.scheduling import Scheduler

log = logging.getLogger("stickyip.scheduler.reconcile")

#: Verdicts a pass cannot fix by itself (the gauge and the Events).
UNRESOLVED = (Verdict.CONFLICT, Verdict.DUPLICATE, Verdict.MISMATCH)


def _stop_if_cancelled() -> None:
    """End a loop whose task was asked to stop even if a layer below swallowed the
    CancelledError (a Redis connection being set up when the cancel came)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass
class ReconcileReport:
    why: str
    pods: int = 0
    findings: list[Finding] = field(default_factory=list)
    restored: list[OwnerKey] = field(default_factory=list)
    quarantined: list[OwnerKey] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict in UNRESOLVED]


class Reconciler:
    def __init__(self, settings: SchedulerSettings, cache: ClusterCache, ipam: RedisIpam,
                 scheduler: Scheduler, *, metrics: Metrics | None = None,
                 is_leader: Callable[[], bool] = lambda: True) -> None:
        self.settings, self.cache, self.ipam, self.scheduler = settings, cache, ipam, scheduler
        self.metrics = metrics or scheduler.metrics
        self.is_leader = is_leader
        self._wanted = asyncio.Event()
        #: Something that may let a wanted pass run changed (leadership, caches).
        self._poke = asyncio.Event()
        cache.sync_listeners.append(lambda _kind: self._poke.set())
        self._why = "start"
        #: Passes completed (tests wait on it).
        self.passes = 0
        self.last: ReconcileReport | None = None
        self._done = asyncio.Condition()
        #: New addresses are held only because the store did not answer (not for a pass).
        self._unconfirmed = False
        self._running = False
        #: Bumped by every request that holds new addresses: a pass lifts the hold only
        #: if no such request came while it ran.
        self._hold_gen = 0
        # Nothing new is handed out before the first pass: the store may have lost
        # reservations while no scheduler watched it.
        scheduler.allocation_hold = ("the IPAM has not been reconciled with the running "
                                     "pods yet (scheduler start)")

    # ------------------------------------------------------------- triggers

    def request(self, why: str, *, hold: bool = False) -> None:
        """Ask for a pass soon; ``hold``: no new address until it succeeded."""
        self._why = why
        self._unconfirmed = False
        if hold:
            self._hold_gen += 1
            self.scheduler.allocation_hold = (
                f"the IPAM is being reconciled with the running pods ({why})")
        self._wanted.set()
        self._poke.set()

    async def wait_passes(self, n: int) -> ReconcileReport | None:
        """Wait until ``n`` passes completed (tests)."""
        async with self._done:
            await self._done.wait_for(lambda: self.passes >= n)
        return self.last

    async def run(self) -> None:
        """Pass on request (start, identity change) and every ``reconcile_period``."""
        self._wanted.set()
        backoff = 0.5
        while True:
            _stop_if_cancelled()
            try:
                async with asyncio.timeout(self.settings.reconcile_period):
                    await self._wanted.wait()
            except TimeoutError:
                self._why = "periodic"
            if not self.is_leader() or not self.cache.is_synced("nodes", "pods"):
                # the pass stays wanted until this replica leads with synced caches
                self._wanted.set()
                self._poke.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.renew_period):
                        await self._poke.wait()
                continue
            self._wanted.clear()
            why = self._why
            self._running = True
            try:
                await self.run_once(why)
                backoff = 0.5
            except Exception as e:  # a failed pass is retried, never fatal
                log.warning("reconciliation failed; retrying",
                            extra={"error": str(e) or repr(e), "retry_in_s": backoff})
                self._wanted.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._running = False

    async def follow_store(self) -> None:
        """Follow the IPAM's change log only to notice when the store is not the one it
        was (restarted, failed over, restored): then reconcile, holding new addresses.
        From the moment the store stops answering until it is seen again with the same
        identity, new addresses are held too: a restarted store may have lost
        reservations, and the scheduler must not be the one handing them out. Parked on
        a blocking read: no polling."""
        identity, revision = "", 0
        backoff = 0.2
        while True:
            _stop_if_cancelled()
            try:
                if not identity:
                    snap = await self.ipam.routing_snapshot()
                    identity, revision = snap.identity, snap.revision
                got = await self.ipam.read_changes(revision, identity=identity,
                                                   block_ms=30_000)
                backoff = 0.2
                if isinstance(got, Gap):
                    snap = await self.ipam.routing_snapshot()
                    if snap.identity != identity or snap.revision < revision:
                        log.warning("the IPAM store changed; reconciling",
                                    extra={"why": got.reason})
                        self.metrics.store_changes.inc()
                        self.request(f"store changed: {got.reason}", hold=True)
                    identity, revision = snap.identity, snap.revision
                elif got:
                    revision = got[-1].revision
                self._store_confirmed()
            except IpamError as e:
                log.debug("change log unavailable", extra={"error": str(e)})
                self._store_unconfirmed()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _store_unconfirmed(self) -> None:
        if not self.scheduler.allocation_hold:
            self._unconfirmed = True
            self.scheduler.allocation_hold = ("the IPAM store does not answer; once it does, "
                                              "it is checked for lost reservations first")

    def _store_confirmed(self) -> None:
        if self._unconfirmed:
            self._unconfirmed = False
            if not self._wanted.is_set() and not self._running:
                self.scheduler.allocation_hold = ""
                self.scheduler.enqueue_pending()

    # ----------------------------------------------------------------- pass

    def live_pods(self) -> list[LivePod]:
        out = []
        for p in list(self.cache.pods.values()):
            live = live_sticky_pod(namespace=p.namespace, name=p.name, uid=p.uid,
                                   node=p.node_name, phase=p.phase, labels=p.labels,
                                   annotations=p.annotations, statefulset=p.statefulset,
                                   ordinal=p.ordinal)
            if live is not None and p.uid not in self.cache.assumed:
                out.append(live)
        return out

    async def run_once(self, why: str = "requested") -> ReconcileReport:
        report = ReconcileReport(why=why)
        gen = self._hold_gen
        pods = self.live_pods()
        report.pods = len(pods)
        t0 = time.perf_counter()
        report.findings = await check_against_cluster(self.ipam, pods)
        for owner, pod in sorted(restorable(report.findings).items()):
            if await self._restore(owner, pod):
                report.restored.append(owner)
        for f in report.conflicts:
            await self._conflict(f, report)
        # Every lost reservation of a running pod is back (or reported): the store may
        # hand out new addresses again, until it next restarts or fails over.
        await self.ipam.open_allocation()
        self.metrics.reconcile_conflicts.set(len({(f.pod.ref, f.address)
                                                  for f in report.conflicts}))
        self.metrics.reconcile_passes.inc()
        self.metrics.reconcile_seconds.set(time.perf_counter() - t0)
        log.info("reconciled the IPAM with the running pods", extra={
            "why": why, "pods": report.pods, "restored": len(report.restored),
            "conflicts": len(report.conflicts), "quarantined": len(report.quarantined)})
        self.last = report
        if self.scheduler.allocation_hold and gen == self._hold_gen and not self._unconfirmed:
            self.scheduler.allocation_hold = ""
            self.scheduler.enqueue_pending()
        async with self._done:
            self.passes += 1
            self._done.notify_all()
        return report

    async def _restore(self, owner: OwnerKey, live: LivePod) -> bool:
        """Claim the reservation back exactly as the running pod uses it."""
        pod = self.cache.pod_by_ref(live.ref)
        if pod is None or pod.uid != live.uid:
            return False
        key = ReservationKey.parse(owner)
        kw: dict[str, Any] = {}
        with contextlib.suppress(SchedulerError):  # annotations broken since: defaults
            req = sticky_request(pod)
            if req is not None:
                kw = {"retain": req.request.retain, "policy": req.request.policy}
        refs = [await self.ipam.pool_for_address(a) for a in live.addresses]
        pools = [r.spec.name for r in refs]
        addresses = list(live.addresses)
        try:
            try:
                got = await self.ipam.claim(key, pools=pools, addresses=addresses,
                                            node=live.node, holder=live.uid, pod=live.ref,
                                            restore=True, epoch=live.epoch, **kw)
            except ReservationConflict as e:
                if "homed on node" not in str(e):
                    raise
                # The address's block belongs to another node (the pod's address was a
                # migrated /32 there): take it homed with its block, then move the home
                # to where the pod runs, then bind it.
                got = await self.ipam.claim(key, pools=pools, addresses=addresses,
                                            restore=True, epoch=live.epoch, **kw)
                if got.node != live.node:
                    await self.ipam.rehome_reservation(key, to_node=live.node,
                                                       expect_epoch=got.epoch)
                got = await self.ipam.claim(key, pools=pools, node=live.node,
                                            holder=live.uid, pod=live.ref)
        except (AddressTaken, ReservationConflict) as e:
            # taken or re-created meanwhile: the next pass reports it
            log.warning("could not restore a reservation", extra={"owner": owner,
                                                                   "error": str(e)})
            return False
        self.metrics.reconcile_restored.inc()
        note = f" at epoch {got.epoch}" if got.epoch > 1 else ""
        ips = ", ".join(str(a) for a in live.addresses)
        log.warning("restored a reservation the IPAM had lost", extra={
            "owner": owner, "pod": live.ref, "node": live.node, "address": ips})
        await self.scheduler.event_for(
            pod, "IPAddressRestored",
            f"the IPAM had no reservation for {ips}, which this pod uses on {live.node} "
            f"(lost in a store restart or failover?); restored {owner} for this pod{note}")
        return True

    async def _conflict(self, f: Finding, report: ReconcileReport) -> None:
        other: Lease | None = f.record
        what = f.message
        if f.verdict is Verdict.CONFLICT and other is not None \
                and other.state is ReservationState.BOUND and other.holder \
                and other.key is not None and other.owner not in report.quarantined:
            # Bound to another pod: quarantine it, so its address is never handed out
            # again and its ordinal cannot take it back; freed once that pod is gone.
            try:
                q = await self.ipam.release(owner=other.owner, force=True)
            except IpamError as e:
                log.warning("could not quarantine", extra={"owner": other.owner,
                                                           "error": str(e)})
                q = None
            if q is not None and q.state is ReservationState.QUARANTINED:
                report.quarantined.append(other.owner)
                what += (f"; quarantined {other.owner}: the address stays taken until pod "
                         f"{other.pod or other.holder} is gone, then this pod's reservation "
                         "is restored. Delete one of the two pods")
                holder_pod = self.cache.pods.get(PodUid(other.holder))
                if holder_pod is not None:
                    await self.scheduler.event_for(holder_pod, "IPAddressConflict", what)
        log.error("address conflict between the cluster and the IPAM", extra={
            "pod": f.pod.ref, "address": str(f.address), "verdict": f.verdict.value,
            "why": what})
        pod = self.cache.pod_by_ref(f.pod.ref)
        if pod is not None:
            await self.scheduler.event_for(pod, "IPAddressConflict", what)

