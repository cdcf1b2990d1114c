"""Live probes of the datapath after each story step, from real pods in their network
namespaces: ping and TCP from a client pod to every replica at each of its addresses,
IPv4 and IPv6 (the reply names the pod that answered, so a probe also proves the
address reached the right pod), pod-to-pod between replicas on different nodes, TCP
through the Service VIP of each family, and a connection a NetworkPolicy must
refuse."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from demo.datapath import POD_PORT, Datapath, PodSandbox
from demo.report import Probe, Row
from demo.system import SCHEDULER, System
from kubestandin import objects

CLIENT = "client"
INTRUDER = "intruder"


class LiveProbes:
    def __init__(self, datapath: Datapath) -> None:
        self.dp = datapath
        self.client_node = ""
        self.namespace = ""
        self.features: Any = None  # demo.features.ServicesAndPolicy when they run
        self.features_skip = "--no-service-policy given: the agents run without the " \
            "service and policy programs"

    async def setup(self, system: System) -> None:
        """Two plain (ephemeral-address) pods on the first node: the client, and an
        intruder the NetworkPolicy does not allow in."""
        assert system.api is not None
        self.namespace = system.s.namespace
        self.client_node = system.nodes[0]
        for name in (CLIENT, INTRUDER):
            await system.api.create(objects.pod(
                name, self.namespace, labels={"role": name}, scheduler_name=SCHEDULER,
                node_selector={"kubernetes.io/hostname": self.client_node}))
        for name in (CLIENT, INTRUDER):
            await self.dp.wait_sandbox(self.namespace, name, within=60)
        if not self.dp.service_policy:
            if self.dp.features_error:
                self.features_skip = ("the agents could not load the service and policy "
                                      f"programs: {self.dp.features_error}")
            return
        from demo.features import ServicesAndPolicy

        features = ServicesAndPolicy(system.api, self.namespace, system.s.statefulset)
        await features.start()
        self.dp.closers.append(features.stop)
        self.features = features
        system.progress.note(f"NetworkPolicy {self.namespace}/web-allow-clients created; "
                             "the demo plays the EndpointSlice controller")

    async def _reach(self, src: PodSandbox, row: Row, *, pings: bool = True,
                     family: int = 4) -> Probe:
        address = row.address if family == 4 else row.address6
        where = address if family == 4 else f"[{address}]"
        text = f"{src.name} ({src.node}) -> {row.pod} {where}:{POD_PORT} on {row.node}"
        if family == 6:
            text += " (IPv6)"
        ok_ping = True
        if pings:
            for _ in range(5):  # routes converge within a sync interval or two
                ok_ping = await src.ping(address)
                if ok_ping:
                    break
                await asyncio.sleep(0.3)
        ok, reply = await src.connect(address, POD_PORT)
        if ok and reply == row.pod and ok_ping:
            return Probe(text, "ok", f"ping answered, TCP answered by {reply}")
        what = [] if ok_ping else ["no ping reply"]
        what.append(f"TCP {'answered by ' + reply if ok else reply}")
        return Probe(text, "failed", ", ".join(what))

    async def probe(self, rows: Sequence[Row], service_ips: Sequence[str]) -> list[Probe]:
        client = self.dp.sandbox(self.namespace, CLIENT)
        if client is None:
            return [Probe("client pod", "failed", "the client pod is not running")]
        live = [r for r in rows if r.pod and r.ready]
        probes = list(await asyncio.gather(*(self._reach(client, r) for r in live
                                             if r.address)))
        probes += list(await asyncio.gather(*(self._reach(client, r, family=6) for r in live
                                              if r.address6)))
        # Replica to replica across nodes (over IPv6 too on a dual-stack StatefulSet).
        pairs = [(a, b) for a in live for b in live if a.node != b.node]
        if pairs:
            a, b = pairs[0]
            src = self.dp.sandbox(self.namespace, a.pod)
            if src is not None:
                if b.address:
                    probes.append(await self._reach(src, b))
                if b.address6:
                    probes.append(await self._reach(src, b, family=6))
        for ip in service_ips:
            probes += await self.service_probes(client, live, ip)
        probes += await self.policy_probes(live)
        return probes

    async def service_probes(self, client: PodSandbox, live: Sequence[Row],
                             service_ip: str) -> list[Probe]:
        where = f"[{service_ip}]" if ":" in service_ip else service_ip
        text = f"{client.name} -> Service VIP {where}:80"
        if self.features is None:
            return [Probe(text, "skipped", self.features_skip)]
        result: list[Probe] = await self.features.service_probe(client, live, service_ip)
        return result

    async def policy_probes(self, live: Sequence[Row]) -> list[Probe]:
        text = f"{INTRUDER} -> {live[0].pod if live else 'replica'} (denied by NetworkPolicy)"
        if self.features is None:
            return [Probe(text, "skipped", self.features_skip)]
        intruder = self.dp.sandbox(self.namespace, INTRUDER)
        client = self.dp.sandbox(self.namespace, CLIENT)
        if intruder is None or client is None or not live:
            return [Probe(text, "failed", "intruder or client pod not running")]
        result: list[Probe] = await self.features.policy_probe(client, intruder, live)
        return result
