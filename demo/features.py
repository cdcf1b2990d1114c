"""The Service and NetworkPolicy part of the demo. The node agents serve both with
their eBPF programs (``--hook datapath.features.hook:hook``, fed from the API through
the relay); the demo adds what a cluster's control plane would: an EndpointSlice
controller (the stand-in has none) that writes one slice per Service from the Ready
pods, and a NetworkPolicy. The probes then go through the Service VIP and against the
policy from real pods."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from demo.datapath import POD_PORT, PodSandbox
from demo.report import Probe, Row
from kubestandin import KubeStandIn

log = logging.getLogger("stickyip.demo.features")

POLICY = "web-allow-clients"


class ServicesAndPolicy:
    def __init__(self, api: KubeStandIn, namespace: str, app: str, *,
                 period: float = 0.2, settle: float = 10.0) -> None:
        self.api, self.ns, self.app = api, namespace, app
        self.period, self.settle = period, settle
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.create_policy()
        await self.sync_slices()
        self._task = asyncio.create_task(self._run(), name="endpointslice-controller")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.sync_slices()
            except Exception as e:  # the next pass retries
                log.warning("endpointslice pass failed: %r", e)

    async def create_policy(self) -> None:
        """Replicas accept traffic (any port, ping too) only from the client and from
        each other; the intruder is refused."""
        await self.api.create({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": POLICY, "namespace": self.ns},
            "spec": {"podSelector": {"matchLabels": {"app": self.app}},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": [
                         {"podSelector": {"matchLabels": {"role": "client"}}},
                         {"podSelector": {"matchLabels": {"app": self.app}}}]}]}})

    async def sync_slices(self) -> None:
        """What the EndpointSlice controller writes for each Service with a selector:
        one slice per address family of its pods (``status.podIPs``)."""
        pods = await self.api.list("v1", "Pod", self.ns)
        for svc in await self.api.list("v1", "Service", self.ns):
            selector = (svc.get("spec") or {}).get("selector") or {}
            if not selector:
                continue
            for family in ("IPv4", "IPv6"):
                await self._sync_slice(svc, selector, pods, family)

    async def _sync_slice(self, svc: dict[str, Any], selector: dict[str, str],
                          pods: list[dict[str, Any]], family: str) -> None:
        eps = []
        for p in sorted(pods, key=lambda x: str(x["metadata"]["name"])):
            labels = p["metadata"].get("labels") or {}
            status = p.get("status") or {}
            ips = [str(x.get("ip", "")) for x in status.get("podIPs") or ()]
            mine = [a for a in ips if (":" in a) == (family == "IPv6")]
            if any(labels.get(k) != v for k, v in selector.items()) or not mine:
                continue
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or ())
            eps.append({"addresses": mine[:1], "conditions": {"ready": ready},
                        "nodeName": (p.get("spec") or {}).get("nodeName", ""),
                        "targetRef": {"kind": "Pod", "name": p["metadata"]["name"],
                                      "namespace": self.ns}})
        suffix = "demo" if family == "IPv4" else "demo6"
        name = f"{svc['metadata']['name']}-{suffix}"
        ports = [{"name": sp.get("name", ""), "protocol": sp.get("protocol", "TCP"),
                  "port": int(sp.get("targetPort") or sp["port"])}
                 for sp in (svc.get("spec") or {}).get("ports") or []]
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": self.ns,
                         "labels": {"kubernetes.io/service-name": svc["metadata"]["name"]}},
            "addressType": family, "endpoints": eps, "ports": ports}
        current = await self.api.get("discovery.k8s.io/v1", "EndpointSlice", name, self.ns)
        if current is None:
            if eps:
                await self.api.create(body)
        elif (current.get("endpoints"), current.get("ports")) != (eps, ports):
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            with contextlib.suppress(Exception):  # a conflict: the next pass rewrites
                await self.api.replace(body)

    # ------------------------------------------------------------ probes

    async def service_probe(self, client: PodSandbox, live: Sequence[Row], vip: str
                            ) -> list[Probe]:
        """Connections through the VIP: every one must be answered by a live replica.
        The agents learn Endpoint changes through their watch: retry for a bounded
        time until the answers match the live replicas."""
        await self.sync_slices()
        text = f"{client.name} -> Service VIP {f'[{vip}]' if ':' in vip else vip}:80"
        names = {r.pod for r in live}
        tries = max(6, 3 * len(live))
        deadline = time.monotonic() + self.settle
        while True:
            results = await asyncio.gather(*(client.connect(vip, 80) for _ in range(tries)))
            answered = Counter(reply for ok, reply in results if ok)
            failed = [reply for ok, reply in results if not ok]
            seen = ", ".join(f"{k} x{v}" for k, v in sorted(answered.items()))
            if not failed and set(answered) <= names:
                return [Probe(text, "ok", f"{len(results)}/{len(results)} answered by {seen}")]
            if time.monotonic() > deadline:
                return [Probe(text, "failed", f"{len(results) - len(failed)}/{len(results)} "
                              f"connected ({seen or 'none'}); errors: {sorted(set(failed))}")]
            await asyncio.sleep(0.5)

    async def policy_probe(self, client: PodSandbox, intruder: PodSandbox,
                           live: Sequence[Row]) -> list[Probe]:
        target = live[0]
        text = f"{intruder.name} -> {target.pod} {target.address}:{POD_PORT} " \
               f"(NetworkPolicy {POLICY})"
        deadline = time.monotonic() + self.settle
        while True:
            ok, reply = await intruder.connect(target.address, POD_PORT, wait_s=1.0)
            allowed, _ = await client.connect(target.address, POD_PORT)
            if not ok and allowed:
                return [Probe(text, "denied", f"{reply} (dropped), while {client.name} "
                              "still connects")]
            if time.monotonic() > deadline:
                if ok:
                    return [Probe(text, "failed", f"connected (answered by {reply}): the "
                                  "policy is not enforced")]
                return [Probe(text, "failed", f"{client.name} cannot connect either: the "
                              "refusal proves nothing")]
            await asyncio.sleep(0.5)
