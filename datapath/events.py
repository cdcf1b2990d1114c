"""Kubernetes Events the agent writes on pods (core/v1 Events, through plumbing.kube's
REST client): what a user sees in ``kubectl describe pod`` when the agent finds
something wrong with the pod's network, such as another host holding its address."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, Protocol

from plumbing.kube import errors
from plumbing.kube.rest import RestClient

log = logging.getLogger("stickyip.datapath")

COMPONENT = "stickyip-agent"


class PodEvents(Protocol):
    async def post(self, *, namespace: str, pod: str, uid: str, reason: str, message: str,
                   warning: bool = True) -> None:
        """Record an Event on a pod; never raises (an Event is a courtesy)."""
        ...


def event_body(*, namespace: str, pod: str, uid: str, reason: str, message: str,
               warning: bool, node: str, now: datetime.datetime) -> dict[str, Any]:
    """The core/v1 Event object (pure)."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{pod}.", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod,
                           "namespace": namespace, "uid": uid},
        "reason": reason, "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT, "reportingInstance": node,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


class KubeEvents:
    """:class:`PodEvents` through the Kubernetes API (the agent's ServiceAccount may
    create events)."""

    def __init__(self, rest: RestClient, *, node: str) -> None:
        self.rest = rest
        self.node = node

    async def post(self, *, namespace: str, pod: str, uid: str, reason: str, message: str,
                   warning: bool = True) -> None:
        body = event_body(namespace=namespace, pod=pod, uid=uid, reason=reason,
                          message=message, warning=warning, node=self.node,
                          now=datetime.datetime.now(datetime.UTC))
        try:
            await asyncio.to_thread(self._create, namespace, body)
        except errors.KubeError as e:
            log.warning("cannot record a pod event", extra={
                "pod": f"{namespace}/{pod}", "reason": reason, "error": str(e)})

    def _create(self, namespace: str, body: dict[str, Any]) -> None:
        self.rest.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
