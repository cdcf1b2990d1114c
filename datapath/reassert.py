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
(``stickyip_datapath_address_conflicts``, and ``..._reasserted_total{result}``),
and, when the agent reads the Kubernetes API, reported as a Warning Event on the pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from datapath.endpoints import EndpointManager
from datapath.metrics import AgentMetrics
from datapath.models import EndpointRecord
from ipam import RedisIpam
from ipam.reassert import Asserted, Reasserted, reassert

log = logging.getLogger("stickyip.datapath")

#: (namespace, pod, reason, message): report a Warning Event on a pod
EventSink = Callable[[str, str, str, str], None]


def kube_events(component: str = "stickyip-agent") -> EventSink:
    """Warning Events on pods through the Kubernetes API (blocking: run in a thread)."""
    from datetime import UTC, datetime

    from plumbing.kube import errors
    from plumbing.kube.client import api_client
    from plumbing.kube.rest import RestClient

    rest = RestClient(api_client())

    def post(namespace: str, pod: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{pod}.", "namespace": namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod,
                                   "namespace": namespace},
                "reason": reason, "message": message[:1024], "type": "Warning",
                "source": {"component": component}, "reportingComponent": component,
                "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        try:
            rest.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except errors.KubeError as e:  # the metric and the log still say it
            log.warning("cannot report an Event", extra={"pod": f"{namespace}/{pod}",
                                                         "error": str(e)})

    return post


def asserted(rec: EndpointRecord) -> Asserted:
    return Asserted(owner=rec.owner, kind=rec.kind, addresses=(rec.address,),
                    pools=(rec.pool,), holder=rec.pod_uid,
                    pod=f"{rec.namespace}/{rec.pod}" if rec.pod else "", epoch=rec.epoch)


class Reasserter:
    def __init__(self, ipam: RedisIpam, *, node: str, endpoints: EndpointManager,
                 metrics: AgentMetrics, events: EventSink | None = None) -> None:
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
            if res.status == "restored":
                log.warning("restored a record the store had lost",
                            extra={"owner": rec.owner, "address": str(rec.address),
                                   "pod": f"{rec.namespace}/{rec.pod}"})
            elif res.status == "moved":
                self.endpoints.fence(rec.address)
            elif res.status == "conflict":
                conflicts[rec.owner] = res
                log.error("address conflict after the store changed identity: this node's "
                          "pod holds an address the store now gives another owner; "
                          "nothing was changed — decide which pod keeps it",
                          extra={"owner": rec.owner, "address": str(rec.address),
                                 "other": res.other, "pod": f"{rec.namespace}/{rec.pod}"})
                if self.events is not None and rec.pod:
                    message = (f"{rec.address} ({rec.owner}) is held by {res.other} in the "
                               "IPAM after a store restart or failover; this pod keeps "
                               "serving it until an operator decides (stickyip ipam "
                               f"history {rec.address})")
                    await asyncio.to_thread(self.events, rec.namespace, rec.pod,
                                            "AddressConflict", message)
        self.conflicts = conflicts
        self.metrics.conflicts.set(len(conflicts))
        self.runs += 1
        self.last = results
        return results
