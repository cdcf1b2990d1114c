"""NetworkPolicy across three nodes of the multi-node test bed: real agents (each
loading the service/policy hook, each watching the API stand-in on its own), pods
wired by the real CNI plugin and spread over the nodes, so every policy decision
about a remote pod depends on the ipcache each node derived from the API. For each
case the whole x/y/z by a/b/c reachability matrix (TCP and UDP, ports 80 and 81) must
converge to the expected one."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubestandin import KubeStandInThread, objects
from netbed.pods import DROPPED, probe_expecting, start_program
from netbed.relay import ThreadedRelay
from netbed.testbed import Testbed
from tests.privileged.test_policy_matrix import (
    ALL,
    NAMESPACES,
    PODS,
    PORTS,
    Expect,
    Matrix,
    Outcomes,
    differences,
    outcomes,
    pol,
)


class Bed:
    def __init__(self, tb: Testbed, api: KubeStandInThread) -> None:
        self.tb, self.api = tb, api
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def matrix(self, want: Matrix) -> Outcomes:
        keys = list(want)
        res = probe_expecting([(self.procs[s], self.tb.pods[d].address, port, proto)
                               for s, d, port, proto in keys], [want[k] for k in keys],
                              denied=self.tb.policy_drops)
        return outcomes(keys, res)

    async def converge(self, expected: Expect, within: float = 20.0, case: str = "") -> None:
        """Probe until the matrix is the expected one (the agents apply API changes
        asynchronously), failing with the differences after ``within`` seconds."""
        want = expected.result()
        deadline = time.monotonic() + within
        while True:
            wrong = differences(await asyncio.to_thread(self.matrix, want), want)
            if not wrong:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{case}: {len(wrong)} probes differ:\n"
                                     + "\n".join(wrong[:40]))
            await asyncio.sleep(0.3)

    def policies(self, *pols: dict[str, Any]) -> None:
        for p in self.api.list("networking.k8s.io/v1", "NetworkPolicy"):
            self.api.delete("networking.k8s.io/v1", "NetworkPolicy", p["metadata"]["name"],
                            p["metadata"]["namespace"])
        for p in pols:
            self.api.create({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                             **p})


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    api = KubeStandInThread(statefulset_controller=False, bookmark_interval=0.2)
    api.start()
    relay = ThreadedRelay(int(api.url.rsplit(":", 1)[1]))
    b: Bed | None = None
    try:
        for n in NAMESPACES:
            api.create(objects.namespace(n, {"ns": n}))
        for n in NAMESPACES:
            for p in PODS:
                obj = objects.pod(p, n, labels={"pod": p})
                obj["spec"]["containers"][0]["ports"] = [
                    {"name": f"serve-{port}-{proto}", "containerPort": port,
                     "protocol": proto.upper()} for port, proto in PORTS]
                api.create(obj)
        env = {"STICKYIP_AGENT_KUBE": "true", "STICKYIP_KUBE_HOST": api.url}
        # The agents reach the stand-in (on this process's loopback) through the relay.
        async with Testbed(relay=relay, nodes=3, hooks=["datapath.features.hook:hook"],
                           agent_env=env) as tb:
            b = Bed(tb, api)
            for i, key in enumerate(ALL):
                ns, name = key.split("/")
                pod = await tb.add_pod(f"node-{i % 3 + 1}", ns, name)
                api.patch("v1", "Pod", name, {"metadata": {"annotations": {
                    "stickyip.io/ip": pod.address}}}, ns)
                api.set_pod_ready(name, ns)
                b.procs[key] = start_program(["nsenter", f"--net={pod.netns_path}", "--"], key,
                                           (80, 81))
            yield b
    finally:
        if b is not None:
            for proc in b.procs.values():
                proc.kill()
                proc.wait()
        relay.close()
        api.stop()


X = [f"x/{p}" for p in PODS]
Y = [f"y/{p}" for p in PODS]
Z = [f"z/{p}" for p in PODS]
ON_A = {"matchLabels": {"pod": "a"}}
VIP = "10.96.61.1"


def service_objects(tb: Testbed) -> list[dict[str, Any]]:
    """A ClusterIP Service in y (8080 -> 80) and its EndpointSlice: y/a, y/b, y/c, one
    on each node."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "y"},
         "spec": {"type": "ClusterIP", "clusterIP": VIP, "clusterIPs": [VIP],
                  "ports": [{"name": "http", "port": 8080, "protocol": "TCP",
                             "targetPort": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": "y",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [tb.pods[k].address], "conditions": {"ready": True},
                        "nodeName": tb.pods[k].node} for k in Y],
         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]


async def test_policy_matrix_converges_on_every_node(bed: Bed) -> None:
    """Pods are spread x/a, y/a, z/a on node-1, the b's on node-2, the c's on node-3."""
    api = bed.api
    await bed.converge(Expect(True), within=30)
    bed.policies(pol("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    await bed.converge(Expect(True).set(False, dst=X), case="default deny ingress")
    bed.policies(pol("deny", "x", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    await bed.converge(Expect(True).set(False, dst=X).set(False, src=X),
                       case="default deny all")
    # x/a: from namespace y AND pod b, on named port 80/TCP and 80/UDP only
    bed.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                   "podSelector": {"matchLabels": {"pod": "b"}}}],
         "ports": [{"port": "serve-80-tcp"}, {"port": 80, "protocol": "UDP"}]}]}))
    await bed.converge(Expect(True).set(False, dst=["x/a"])
                       .set(True, src=["y/b"], dst=["x/a"], ports=((80, "tcp"), (80, "udp"))),
                       case="AND of selectors, named and numeric ports")
    # x/a: (namespace In [z] AND pod NotIn [c]) OR pod c of x
    bed.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [{"from": [
        {"namespaceSelector": {"matchExpressions": [
            {"key": "ns", "operator": "In", "values": ["z"]}]},
         "podSelector": {"matchExpressions": [
             {"key": "pod", "operator": "NotIn", "values": ["c"]}]}},
        {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}))
    await bed.converge(Expect(True).set(False, dst=["x/a"])
                       .set(True, src=["z/a", "z/b", "x/c"], dst=["x/a"]),
                       case="OR of peers, matchExpressions In/NotIn")
    bed.policies(pol("p", "x", {"podSelector": {"matchLabels": {"pod": "c"}},
                                "ingress": [{"ports": [{"protocol": "UDP"}]}]}))
    await bed.converge(Expect(True).set(False, dst=["x/c"], ports=((80, "tcp"), (81, "tcp"))),
                       case="protocol-only rule")
    # egress of x/b: the pool minus y/c (ipBlock with except); replies pass
    yc = bed.tb.pods["y/c"].address
    bed.policies(pol("e", "x", {"podSelector": {"matchLabels": {"pod": "b"}},
                                "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {
                                    "cidr": bed.tb.pool_spec.cidr,
                                    "except": [f"{yc}/32"]}}]}]}))
    await bed.converge(Expect(True).set(False, src=["x/b"], dst=["y/c"]),
                       case="egress ipBlock with except")
    bed.policies(pol("deny-egress", "x", {"podSelector": ON_A, "policyTypes": ["Egress"]}),
                 pol("allow-all-in", "y", {"podSelector": {}, "ingress": [{}]}))
    await bed.converge(Expect(True).set(False, src=["x/a"]),
                       case="egress deny overrides ingress allow")
    # relabel a namespace: every node follows the API
    bed.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    await bed.converge(Expect(True).set(False, dst=["x/a"]).set(True, src=Y, dst=["x/a"]),
                       case="namespaceSelector")
    api.patch("v1", "Namespace", "z", {"metadata": {"labels": {"ns": "y"}}})
    await bed.converge(Expect(True).set(False, dst=["x/a"]).set(True, src=[*Y, *Z], dst=["x/a"]),
                       case="namespace relabelled")
    api.patch("v1", "Namespace", "z", {"metadata": {"labels": {"ns": "z"}}})
    # update a policy in place, then relabel a pod
    bed.policies(pol("p", "x", {"podSelector": ON_A, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    await bed.converge(Expect(True).set(False, dst=["x/a"]).set(True, src=["x/b"], dst=["x/a"]),
                       case="podSelector")
    api.patch("networking.k8s.io/v1", "NetworkPolicy", "p", {"spec": {"ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}}, "x")
    await bed.converge(Expect(True).set(False, dst=["x/a"]).set(True, src=["x/c"], dst=["x/a"]),
                       case="policy updated")
    api.patch("v1", "Pod", "b", {"metadata": {"labels": {"pod": "c"}}}, "x")
    await bed.converge(Expect(True).set(False, dst=["x/a"])
                       .set(True, src=["x/b", "x/c"], dst=["x/a"]), case="pod relabelled")
    api.delete("networking.k8s.io/v1", "NetworkPolicy", "p", "x")
    await bed.converge(Expect(True), case="policy deleted")


async def test_service_backends_on_every_node_and_policy_after_dnat(bed: Bed) -> None:
    await bed.converge(Expect(True), within=30)
    for obj in service_objects(bed.tb):
        bed.api.create(obj)

    def served(src: str, n: int = 30, want: bool = True) -> set[str]:
        res = probe_expecting([(bed.procs[src], VIP, 8080, "tcp")] * n, [want] * n,
                              denied=bed.tb.policy_drops)
        return {r if ok else f"failed: {r}" for ok, r in res}

    async def eventually(src: str, want: set[str], expect_served: bool = True) -> None:
        deadline = time.monotonic() + 20
        while (got := await asyncio.to_thread(served, src, 30, expect_served)) != want:
            assert time.monotonic() < deadline, (src, got)
            await asyncio.sleep(0.3)

    # every node balances over backends on all three nodes (reverse NAT on the way back)
    for src in ("x/a", "x/b", "z/c"):
        await eventually(src, set(Y))
    # policy at the backends' nodes sees the client behind the VIP: only namespace x
    bed.policies(pol("from-x", "y", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}))
    await eventually("z/c", {f"failed: {DROPPED}"}, expect_served=False)
    await eventually("x/c", set(Y))
