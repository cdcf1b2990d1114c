"""After the store changed identity (restart, failover, restore from an older copy),
the agent re-asserts every endpoint it serves (issue 16.2): the cluster — each node's
endpoint records — holds the truth about live addresses, and the store may have lost
the last writes before the change.

For each unfenced local endpoint, :func:`ipam.reassert.reassert` (one script) finds
its record as recorded (``ok``), restores a missing one for its owner only
(``restored``), reports a re-home as ``moved`` (the endpoint is fenced, as a re-home
seen in the change log would have), or finds a ``conflict``: an address now held by
another owner. A conflict is never resolved here — which of two live pods keeps the
address is an operator's call: it is logged, counted
(``stickyip_datapath_reassert_conflicts``, ``stickyip_datapath_reasserted_total``),
and, when the agent reads the Kubernetes API, reported as a Warning Event on the pod.
"""

from __future__ import annotations

import logging

from datapath.endpoints import EndpointManager
from datapath.events import PodEvents
from datapath.metrics import AgentMetrics
from datapath.models import EndpointRecord
from ipam import RedisIpam
from ipam.reassert import Asserted, Reasserted, reassert

log = logging.getLogger("stickyip.datapath")

def asserted(rec: EndpointRecord) -> Asserted:
    """An endpoint record as the store is asked to find it (each address's pool is
    looked up by address: one record may draw on a pool per family)."""
    return Asserted(owner=rec.owner, kind=rec.kind, addresses=tuple(rec.addresses),
                    holder=rec.pod_uid, pod=f"{rec.namespace}/{rec.pod}" if rec.pod else "",
                    epoch=rec.epoch)


class Reasserter:
    def __init__(self, ipam: RedisIpam, *, node: str, endpoints: EndpointManager,
                 metrics: AgentMetrics, events: PodEvents | None = None) -> None:
        self.ipam = ipam
        self.node = node
        self.endpoints = endpoints
        self.metrics = metrics
        self.events = events
        #: owner -> the conflict found at the last re-assert
        self.conflicts: dict[str, Reasserted] = {}
        #: re-asserts done, and the results of the last one
        self.runs = 0
        self.last: list[Reasserted] = []

    async def run(self, reason: str) -> list[Reasserted]:
        """Re-assert every unfenced endpoint of this node (under the agent's lock)."""
        recs = [r for r in self.endpoints.records.all() if not r.fenced]
        log.warning("the store changed identity: re-asserting this node's endpoints",
                    extra={"reason": reason, "endpoints": len(recs)})
        results = await reassert(self.ipam, self.node, [asserted(r) for r in recs])
        by_owner = {r.owner: r for r in recs}
        conflicts: dict[str, Reasserted] = {}
        for res in results:
            self.metrics.reasserted.labels(res.status).inc()
            rec = by_owner[res.endpoint.owner]
            shown = ",".join(str(a) for a in rec.addresses)
            if res.status == "restored":
                log.warning("restored a record the store had lost",
                            extra={"owner": rec.owner, "address": shown,
                                   "pod": f"{rec.namespace}/{rec.pod}"})
            elif res.status == "moved":
                self.endpoints.fence(rec.addresses[0])
            elif res.status == "conflict":
                conflicts[rec.owner] = res
                log.error("address conflict after the store changed identity: this node's "
                          "pod holds an address the store now gives another owner; "
                          "nothing was changed — decide which pod keeps it",
                          extra={"owner": rec.owner, "address": shown,
                                 "other": res.other, "pod": f"{rec.namespace}/{rec.pod}"})
                if self.events is not None and rec.pod:
                    message = (f"{shown} ({rec.owner}) is held by {res.other} in the IPAM "
                               "after a store restart or failover; this pod keeps serving "
                               "it until an operator decides (stickyip ipam history "
                               f"{rec.addresses[0]})")
                    await self.events.post(namespace=rec.namespace, pod=rec.pod,
                                           uid=rec.pod_uid, reason="StoreAddressConflict",
                                           message=message)
        self.conflicts = conflicts
        self.metrics.reassert_conflicts.set(len(conflicts))
        self.runs += 1
        self.last = results
        return results
