"""Service load balancing and NetworkPolicy for the demo's pods, on the real eBPF
programs (``datapath.features_loader``) driven by the real ``datapath.services`` and
``datapath.policy`` managers.

The node agent does not wire these yet (no agent hook feeds them Services,
EndpointSlices, pods and NetworkPolicies), so the demo does that glue itself: it plays
the EndpointSlice controller (one slice per Service from the Ready pods), attaches the
programs to each pod's host-side veth in its node's namespace, and hands the objects
from the API stand-in to the managers. Every probe that depends on it says so. One
program and map set serves all demo nodes (their maps would be identical for the
ClusterIP Service and the policy shown here)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from demo.datapath import POD_PORT, Datapath, PodSandbox, sh
from demo.report import Probe, Row
from kubestandin import KubeStandIn

log = logging.getLogger("stickyip.demo.features")

GLUE = "maps written by the demo, not yet by the agent"
POLICY = "web-allow-clients"


class Features:
    def __init__(self, datapath: Datapath, api: KubeStandIn, namespace: str, app: str
                 ) -> None:
        self.dp, self.api, self.ns, self.app = datapath, api, namespace, app
        self.progs: Any = None
        self.services: Any = None
        self.policy: Any = None
        self._attached: dict[str, int] = {}  # pod uid -> host ifindex

    async def start(self) -> None:
        from datapath.features_loader import FeaturePrograms
        from datapath.policy import PolicyManager
        from datapath.services import ServiceManager

        self.progs = FeaturePrograms(pin_dir=f"{self.dp.pin_base}/features")
        try:
            await asyncio.to_thread(self.progs.load)
        except BaseException:
            with contextlib.suppress(Exception):
                self.progs.close(unpin=True)
            self.progs = None
            raise
        self.services = ServiceManager(self.progs, node_name="",
                                       node_addresses=[ipaddress.IPv4Address(n.address)
                                                       for n in self.dp.nodes.values()])
        self.policy = PolicyManager(self.progs)

    def close(self) -> None:
        if self.progs is not None:
            self.progs.close(unpin=True)
            self.progs = None

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

    # ------------------------------------------------------------ sync

    async def sync(self) -> None:
        from datapath.policy import NamespaceInfo
        from datapath.policy.models import pod_info

        pods = await self.api.list("v1", "Pod", self.ns)
        await self._attach_new()
        await self._endpoint_slices(pods)
        for svc in await self.api.list("v1", "Service", self.ns):
            self.services.set_service(svc)
        for sl in await self.api.list("discovery.k8s.io/v1", "EndpointSlice", self.ns):
            self.services.set_slice(sl)
        ns = await self.api.get("v1", "Namespace", self.ns)
        self.policy.namespaces.clear()
        self.policy.namespaces[self.ns] = NamespaceInfo(
            self.ns, dict(((ns or {}).get("metadata") or {}).get("labels") or {}))
        self.policy.pods.clear()
        for p in pods:
            info = pod_info(p)
            if info is not None:
                self.policy.pods[info.key] = info
        self.policy.policies.clear()
        for pol in await self.api.list("networking.k8s.io/v1", "NetworkPolicy", self.ns):
            meta = pol["metadata"]
            self.policy.policies[f"{meta['namespace']}/{meta['name']}"] = pol
        self.policy.set_local({ipaddress.IPv4Address(s.address)
                               for s in self.dp.pods.values() if s.address})

    async def _attach_new(self) -> None:
        from datapath.models import host_ifname

        for uid in [u for u in self._attached if u not in self.dp.pods]:
            del self._attached[uid]
        for uid, pod in list(self.dp.pods.items()):
            if uid in self._attached or pod.node not in self.dp.nodes:
                continue
            node = self.dp.nodes[pod.node]
            name = host_ifname("sip", pod.container_id, "eth0")
            out = await asyncio.to_thread(sh, "ip", "-j", "-n", node.netns, "link", "show",
                                          "dev", name, check=False)
            if not out.strip():
                continue
            idx = int(json.loads(out)[0]["ifindex"])
            await asyncio.to_thread(self.progs.attach, idx, netns=node.netns_path)
            self._attached[uid] = idx

    async def _endpoint_slices(self, pods: Sequence[dict[str, Any]]) -> None:
        """What the EndpointSlice controller would write for each Service."""
        for svc in await self.api.list("v1", "Service", self.ns):
            selector = (svc.get("spec") or {}).get("selector") or {}
            if not selector:
                continue
            eps = []
            for p in sorted(pods, key=lambda x: str(x["metadata"]["name"])):
                labels = p["metadata"].get("labels") or {}
                status = p.get("status") or {}
                if any(labels.get(k) != v for k, v in selector.items()) \
                        or not status.get("podIP"):
                    continue
                ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in status.get("conditions") or ())
                eps.append({"addresses": [status["podIP"]], "conditions": {"ready": ready},
                            "nodeName": (p.get("spec") or {}).get("nodeName", ""),
                            "targetRef": {"kind": "Pod", "name": p["metadata"]["name"],
                                          "namespace": self.ns}})
            name = f"{svc['metadata']['name']}-demo"
            ports = [{"name": sp.get("name", ""), "protocol": sp.get("protocol", "TCP"),
                      "port": int(sp.get("targetPort") or sp["port"])}
                     for sp in (svc.get("spec") or {}).get("ports") or []]
            body: dict[str, Any] = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                    "metadata": {"name": name, "namespace": self.ns,
                                                 "labels": {"kubernetes.io/service-name":
                                                            svc["metadata"]["name"]}},
                                    "addressType": "IPv4", "endpoints": eps, "ports": ports}
            current = await self.api.get("discovery.k8s.io/v1", "EndpointSlice", name, self.ns)
            if current is None:
                await self.api.create(body)
            elif (current.get("endpoints"), current.get("ports")) != (eps, ports):
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await self.api.replace(body)

    # ------------------------------------------------------------ probes

    async def service_probe(self, client: PodSandbox, live: Sequence[Row], vip: str
                            ) -> list[Probe]:
        await self.sync()
        text = f"{client.name} -> Service VIP {vip}:80 ({GLUE})"
        tries = max(6, 3 * len(live))
        results = await asyncio.gather(*(client.connect(vip, 80) for _ in range(tries)))
        answered = Counter(reply for ok, reply in results if ok)
        names = {r.pod for r in live}
        failed = [reply for ok, reply in results if not ok]
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(answered.items()))
        if failed or not set(answered) <= names:
            return [Probe(text, "failed", f"{len(results) - len(failed)}/{len(results)} "
                          f"connected ({seen or 'none'}); errors: {sorted(set(failed))}")]
        return [Probe(text, "ok", f"{len(results)}/{len(results)} answered by {seen}")]

    async def policy_probe(self, client: PodSandbox, intruder: PodSandbox,
                           live: Sequence[Row]) -> list[Probe]:
        await self.sync()
        target = live[0]
        text = (f"{intruder.name} -> {target.pod} {target.address}:{POD_PORT} "
                f"(NetworkPolicy {POLICY}; {GLUE})")
        before = sum(self.policy.denied().values())
        ok, reply = await intruder.connect(target.address, POD_PORT, wait_s=1.0)
        allowed, _ = await client.connect(target.address, POD_PORT)
        drops = sum(self.policy.denied().values()) - before
        if ok:
            return [Probe(text, "failed", f"connected (answered by {reply}): not enforced")]
        if not allowed:
            return [Probe(text, "failed", "the client cannot connect either: the refusal "
                          "proves nothing")]
        return [Probe(text, "denied", f"{reply}; {drops} packet(s) dropped by the policy, "
                      f"while {client.name} still connects")]
