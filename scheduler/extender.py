"""kube-scheduler extender endpoints (``POST /filter``, ``/prioritize``, ``/bind``)
for clusters that keep kube-scheduler: it filters on everything else, we add the
sticky part — home node, pool node selector, free addresses — and, as the
binder, reserve the address on the chosen node before binding.

Wire format: the extender JSON of k8s.io/kube-scheduler/extender/v1 (PascalCase
keys); with ``nodeCacheCapable: true`` only node names travel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ipam import AddressTaken, IpamError, NodeName, PoolNotFound, RedisIpam
from ipam.contract import format_ips, pool_of, written_annotations
from plumbing.kube.errors import KubeError
from scheduler import filtering, scoring
from scheduler.cache import ClusterCache
from scheduler.errors import InvalidAnnotation, SchedulerError
from scheduler.metrics import Metrics
from scheduler.models import NodeInfo, PodInfo
from scheduler.objects import node_from_json, pod_from_json, sticky_request
from scheduler.scheduling import Scheduler

log = logging.getLogger("stickyip.scheduler.extender")


class ExtenderArgs(TypedDict):
    Pod: dict[str, Any]
    Nodes: NotRequired[dict[str, Any] | None]
    NodeNames: NotRequired[list[str] | None]


class ExtenderFilterResult(TypedDict):
    Nodes: dict[str, Any] | None
    NodeNames: list[str] | None
    FailedNodes: dict[str, str]
    FailedAndUnresolvableNodes: dict[str, str]
    Error: str


class HostPriority(TypedDict):
    Host: str
    Score: int


class ExtenderBindingArgs(TypedDict):
    PodName: str
    PodNamespace: str
    PodUID: str
    Node: str


class ExtenderBindingResult(TypedDict):
    Error: str


class BadRequest(SchedulerError):
    """The request body is not extender JSON."""


@dataclass(slots=True)
class Assessment:
    """The sticky facts about a pod that decide filter and priority."""

    home: NodeName | None = None
    address: str = ""
    view: filtering.AddressView | None = None
    needs_address: bool = False
    unresolvable: str = ""
    replicas_on: dict[NodeName, int] = field(default_factory=dict)
    sticky: bool = False


def _args(body: Any) -> tuple[PodInfo, list[str], dict[str, NodeInfo] | None, list[Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("Pod"), dict):
        raise BadRequest("expected ExtenderArgs JSON with a 'Pod' object")
    pod = pod_from_json(body["Pod"])
    names = body.get("NodeNames")
    items = (body.get("Nodes") or {}).get("items")
    given: dict[str, NodeInfo] | None = None
    raw_items: list[Any] = []
    if names is None:
        if not isinstance(items, list):
            raise BadRequest("ExtenderArgs needs 'NodeNames' (nodeCacheCapable) or 'Nodes'")
        raw_items = items
        given = {}
        for item in items:
            n = node_from_json(item)
            given[n.name] = n
        names = list(given)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("'NodeNames' must be a list of strings")
    return pod, names, given, raw_items


class Extender:
    def __init__(self, cache: ClusterCache, ipam: RedisIpam, scheduler: Scheduler, *,
                 metrics: Metrics | None = None) -> None:
        self.cache, self.ipam, self.scheduler = cache, ipam, scheduler
        self.metrics = metrics or Metrics()

    async def assess(self, pod: PodInfo) -> Assessment:
        req = sticky_request(pod)
        pools = list(req.pools) if req is not None else [pool_of(pod.annotations)]
        try:
            view = filtering.combine_views([await self.scheduler.views.get(p) for p in pools])
        except PoolNotFound as e:
            if req is not None:
                return Assessment(unresolvable=str(e))
            return Assessment()
        if req is None:
            return Assessment(view=view)
        a = Assessment(view=view, sticky=True,
                       replicas_on=self.cache.replicas_on(pod.namespace, pod.statefulset))
        try:
            # what a claim would record, validated against the store, written nowhere
            seen = await self.ipam.claim(req.key, pools=list(req.pools),
                                         addresses=list(req.addresses), dry_run=True)
        except AddressTaken as e:
            a.address = format_ips(req.addresses)
            a.unresolvable = f"{a.address} is held by {e.owner}"
            return a
        if seen.addresses:
            a.address = format_ips(x.address for x in seen.addresses)
            a.home = seen.node or None
        if len(seen.addresses) < len(req.pools):
            a.needs_address = True
        return a

    async def filter(self, body: Any) -> ExtenderFilterResult:
        pod, names, given, raw_items = _args(body)
        try:
            a = await self.assess(pod)
        except (InvalidAnnotation, IpamError) as e:
            return {"Nodes": None, "NodeNames": None, "FailedNodes": {},
                    "FailedAndUnresolvableNodes": {}, "Error": str(e)}
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        passed: list[str] = []
        shortage = filtering.address_shortage(a.view) if a.needs_address else None
        selector = a.view.node_selector if a.view is not None else {}
        nodes = given if given is not None else self.cache.nodes
        if a.unresolvable or a.home is not None:
            # One answer for every node but the home: build it in one go (5,000 names).
            msg = a.unresolvable or f"reserved {a.address} is homed on {a.home}"
            unresolvable = dict.fromkeys(names, msg)
            if not a.unresolvable and a.home in unresolvable:
                del unresolvable[a.home]
                passed.append(a.home)
            names = []
        for name in names:
            if a.unresolvable:
                unresolvable[name] = a.unresolvable
            elif a.home is not None:
                if name == a.home:
                    passed.append(name)
                else:
                    unresolvable[name] = f"reserved {a.address} is homed on {a.home}"
            elif shortage is not None:
                unresolvable[name] = shortage
            elif selector:
                node = nodes.get(NodeName(name))
                if node is None:
                    failed[name] = f"node {name} is not in stickyip's node cache yet"
                elif not filtering.matches_selector(selector, node.labels):
                    unresolvable[name] = f"node {name} is outside the pool's nodeSelector"
                else:
                    passed.append(name)
            else:
                passed.append(name)
        result: ExtenderFilterResult = {
            "Nodes": None, "NodeNames": passed, "FailedNodes": failed,
            "FailedAndUnresolvableNodes": unresolvable, "Error": ""}
        if given is not None:
            keep = set(passed)
            result["NodeNames"] = None
            result["Nodes"] = {"apiVersion": "v1", "kind": "NodeList", "items": [
                i for i in raw_items if (i.get("metadata") or {}).get("name") in keep]}
        return result

    async def prioritize(self, body: Any) -> list[HostPriority]:
        pod, names, given, _ = _args(body)
        try:
            a = await self.assess(pod)
        except (InvalidAnnotation, IpamError):
            return [{"Host": n, "Score": 0} for n in names]
        inputs = scoring.ScoreInputs(home=a.home, addresses=a.view,
                                     replicas_on=a.replicas_on, sticky=a.sticky)
        nodes = given if given is not None else self.cache.nodes
        out: list[HostPriority] = []
        for name in names:
            node = nodes.get(NodeName(name)) or NodeInfo(name=NodeName(name))
            out.append({"Host": name, "Score": scoring.score_node(node, inputs)})
        return out

    async def bind(self, body: Any) -> ExtenderBindingResult:
        if not isinstance(body, dict) or not all(
                isinstance(body.get(k), str) for k in ("PodName", "PodNamespace", "Node")):
            raise BadRequest("expected ExtenderBindingArgs JSON (PodName, PodNamespace, "
                             "PodUID, Node)")
        kube = self.scheduler.kube
        if kube is None:
            return {"Error": "no Kubernetes API configured"}
        ns, name, node = body["PodNamespace"], body["PodName"], body["Node"]
        try:
            raw = await asyncio.to_thread(kube.get, f"/api/v1/namespaces/{ns}/pods/{name}")
            pod = pod_from_json(raw)
            if body.get("PodUID") and pod.uid != body["PodUID"]:
                return {"Error": f"pod {ns}/{name} was replaced (UID changed)"}
            req = sticky_request(pod)
            # Only the leader reconciles (and so holds); every replica answers /bind,
            # and the store itself pauses new addresses after a restart or failover.
            if req is not None and self.scheduler.allocation_hold and \
                    self.scheduler.is_leader():
                seen = await self.ipam.claim(req.key, pools=list(req.pools),
                                             addresses=list(req.addresses), dry_run=True)
                if len(seen.addresses) < len(req.pools):
                    return {"Error": f"waiting to take a new address: "
                                     f"{self.scheduler.allocation_hold}"}
            if req is not None:
                res = await self.ipam.claim(req.key, pools=list(req.pools),
                                            addresses=list(req.addresses),
                                            node=node, holder=pod.uid, pod=pod.ref,
                                            retain=req.request.retain,
                                            policy=req.request.policy)
                if res.node != node:
                    return {"Error": f"{res.address} is homed on {res.node}, not {node}"}
                for p in req.pools:
                    self.scheduler.views.taken(p, NodeName(node))
                await asyncio.to_thread(kube.annotate_pod, ns, name, written_annotations(
                    (x.address for x in res.addresses), res.node, res.epoch), uid=pod.uid)
            await asyncio.to_thread(kube.bind, ns, name, pod.uid, node)
        except (KubeError, SchedulerError, IpamError) as e:
            return {"Error": str(e)}
        return {"Error": ""}

    # --------------------------------------------------------------- HTTP

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/filter", self._handler("filter", self.filter))
        app.router.add_post("/prioritize", self._handler("prioritize", self.prioritize))
        app.router.add_post("/bind", self._handler("bind", self.bind))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self.metrics_handler)
        return app

    def _handler(self, verb: str, fn: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            t0 = time.perf_counter()
            try:
                body = json.loads(await request.read())
                result = await fn(body)
            except (ValueError, BadRequest) as e:
                return web.json_response({"Error": f"bad request: {e}"}, status=400)
            finally:
                self.metrics.extender.labels(verb=verb).observe(time.perf_counter() - t0)
            return web.Response(body=json.dumps(result), content_type="application/json")
        return handle

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
