"""The periodic re-check of running fixed-IP pods: every ``conflict_recheck_interval``
(jittered) their addresses are probed on the node's links like at ADD. A conflict that
appears raises ``stickyip_datapath_address_conflicts_total{phase="recheck"}``, sets
``stickyip_datapath_conflicting_endpoints``, logs, and records a Warning Event
``AddressConflict`` on the pod; when it goes away, a Normal ``AddressConflictResolved``.
The pod keeps running: which of the two holders is wrong is an operator's call."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from datapath.config import AgentSettings
from datapath.endpoints import EndpointManager
from datapath.errors import DatapathError
from datapath.events import PodEvents
from datapath.interfaces import AddressProber
from datapath.metrics import AgentMetrics
from datapath.probe import Conflict

log = logging.getLogger("stickyip.datapath")

REASON = "AddressConflict"
RESOLVED = "AddressConflictResolved"


class ConflictMonitor:
    def __init__(self, settings: AgentSettings, *, prober: AddressProber,
                 endpoints: EndpointManager, metrics: AgentMetrics,
                 events: PodEvents | None = None,
                 jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2)) -> None:
        self.interval = settings.conflict_recheck_interval
        self.prober = prober
        self.endpoints = endpoints
        self.metrics = metrics
        self.events = events
        self.jitter = jitter
        #: (container id, ifname) -> the conflicts its addresses have now
        self.current: dict[tuple[str, str], list[Conflict]] = {}

    async def check(self) -> list[Conflict]:
        """One round over every unfenced fixed-IP endpoint; returns the conflicts now."""
        records = [r for r in self.endpoints.records.all()
                   if r.kind == "sticky" and not r.fenced]
        found = await self.prober.probe([a for r in records for a in r.addresses])
        by_address = {c.address: c for c in found}
        now: dict[tuple[str, str], list[Conflict]] = {}
        for rec in records:
            mine = [by_address[a] for a in rec.addresses if a in by_address]
            if mine:
                now[rec.key] = mine
        for rec in records:
            before = {c.address for c in self.current.get(rec.key, [])}
            fresh = [c for c in now.get(rec.key, []) if c.address not in before]
            if fresh:
                where = "; ".join(c.describe() for c in fresh)
                for c in fresh:
                    self.metrics.conflicts.labels("recheck", str(c.address.version)).inc()
                log.warning("address conflict on a running pod", extra={
                    "pod": f"{rec.namespace}/{rec.pod}", "conflicts": where})
                await self._event(rec.namespace, rec.pod, rec.pod_uid, REASON,
                                  f"Another host holds this pod's address: {where}. "
                                  "Traffic to it may reach either; remove the other holder.",
                                  warning=True)
            elif rec.key in self.current and rec.key not in now:
                log.info("address conflict resolved", extra={"pod": f"{rec.namespace}/{rec.pod}"})
                await self._event(rec.namespace, rec.pod, rec.pod_uid, RESOLVED,
                                  "No other host answers for this pod's addresses any more.",
                                  warning=False)
        self.current = now
        self.metrics.conflicts_now.set(len(now))
        return sorted(found, key=lambda c: (c.address.version, c.address))

    async def _event(self, namespace: str, pod: str, uid: str, reason: str, message: str,
                     *, warning: bool) -> None:
        if self.events is not None and namespace and pod:
            await self.events.post(namespace=namespace, pod=pod, uid=uid, reason=reason,
                                   message=message, warning=warning)

    async def run(self) -> None:
        """Re-check every jittered interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval * self.jitter())
            try:
                await self.check()
            except DatapathError as e:
                log.warning("address re-check failed", extra={"error": str(e)})
