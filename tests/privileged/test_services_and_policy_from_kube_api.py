"""The whole feature path from the Kubernetes API to packets: Services,
EndpointSlices, Namespaces, Pods and NetworkPolicies created in the API stand-in are
watched with the official client (KubeFeed), translated, written to the eBPF maps,
and enforced on real connections between pod namespaces attached by the agent hook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from datapath.features.hook import FeaturesHook
from datapath.features.kube import KubeFeed
from datapath.features.policy import PolicyManager
from datapath.features.services import ServiceManager
from kubestandin import KubeStandInThread, objects
from netbed.pods import DROPPED
from netbed.topology import Topology, policy_drops
from plumbing.kube.client import KubeSettings, api_client
from tests.support.feature_programs import programs_on

VIP = "10.96.60.1"


def eventually(check: Callable[[], bool], timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


@pytest.fixture
def world() -> Iterator[tuple[Topology, KubeStandInThread, FeaturesHook]]:
    topo = Topology(subnet="10.84.0.0/24")
    with programs_on(topo, "kube") as progs:
        feed: KubeFeed | None = None
        api = KubeStandInThread(statefulset_controller=False, bookmark_interval=0.2)
        api.start()
        ac = None
        try:
            pods = {"x/client": {"app": "client"}, "y/web1": {"app": "web"},
                    "y/web2": {"app": "web"}, "z/other": {"app": "other"}}
            for n in ("x", "y", "z"):
                api.create(objects.namespace(n, {"team": n}))
            for key, labels in pods.items():
                ns, name = key.split("/")
                p = topo.add_pod(ns, name, labels)
                obj = objects.pod(name, ns, labels=labels,
                                  annotations={"stickyip.io/ip": str(p.address)})
                obj["spec"]["containers"][0]["ports"] = [
                    {"name": "http", "containerPort": 80, "protocol": "TCP"}]
                api.create(obj)
                api.set_pod_ready(name, ns)
            progs.load()
            lock_hook = FeaturesHook(progs, services=ServiceManager(progs, node_name="n1",
                                                                    node_addresses=[]),
                                     policy=PolicyManager(progs), netns=f"/run/netns/{topo.node}")
            asyncio.run(lock_hook.resync([p.endpoint() for p in topo.pods.values()]))
            ac = api_client(KubeSettings(kube_host=api.url))
            feed = KubeFeed(ac, services=lock_hook.services, policy=lock_hook.policy,
                            lock=lock_hook.lock, watch_timeout_s=5)
            feed.start()
            assert feed.wait_synced(10)
            yield topo, api, lock_hook
        finally:
            if feed is not None:
                feed.stop()
            if ac is not None:
                ac.close()  # type: ignore[no-untyped-call]
            api.stop()


def service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "y"},
            "spec": {"type": "ClusterIP", "clusterIP": VIP, "clusterIPs": [VIP],
                     "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP",
                                "targetPort": "http"}]}}


def endpoint_slice(topo: Topology, names: list[str]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-x1", "namespace": "y",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [str(topo.pods[f"y/{n}"].address)],
                           "conditions": {"ready": True}, "nodeName": "n1"} for n in names],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}


def test_service_and_policy_follow_the_api(
        world: tuple[Topology, KubeStandInThread, FeaturesHook]) -> None:
    topo, api, hook = world
    client, other = topo.pods["x/client"], topo.pods["z/other"]
    web1 = str(topo.pods["y/web1"].address)

    def via_vip(src: Any = client, n: int = 10, served: bool = True) -> set[str]:
        """Backends answering ``n`` connections to the VIP (failed ones retried a few
        times when ``served``: they may only be late)."""
        res = topo.probe_expecting([(src, VIP, 8080, "tcp")] * n, [served] * n)
        return {r for ok, r in res if ok}

    def direct(src: Any) -> bool:
        return topo.probe_expecting([(src, web1, 80, "tcp")], [True])[0][0]

    def drops() -> int:
        return policy_drops(hook.programs)

    def dropped(src: Any, ip: str = web1, port: int = 80, n: int = 1) -> bool:
        """Connections vanish because the policy dropped them (not refused, not slow)."""
        res = topo.probe_expecting([(src, ip, port, "tcp")] * n, [False] * n, denied=drops)
        return all(r == (False, DROPPED) for r in res)

    api.create(service())
    api.create(endpoint_slice(topo, ["web1", "web2"]))
    assert eventually(lambda: via_vip(n=20) == {"web1", "web2"})
    # NetworkPolicy: only namespace team=x may reach web pods, on the named port
    api.create({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "web-from-x", "namespace": "y"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                         "ingress": [{"from": [{"namespaceSelector": {
                             "matchLabels": {"team": "x"}}}],
                                      "ports": [{"port": "http"}]}]}})
    assert eventually(lambda: dropped(other))
    assert direct(client) and via_vip() == {"web1", "web2"}
    assert dropped(other, VIP, 8080, n=3)
    # relabel namespace z into team x: allowed again
    api.patch("v1", "Namespace", "z", {"metadata": {"labels": {"team": "x"}}})
    assert eventually(lambda: direct(other))
    # backend removal through the EndpointSlice
    current = api.get("discovery.k8s.io/v1", "EndpointSlice", "web-x1", "y")
    assert current is not None
    api.replace(endpoint_slice(topo, ["web2"]) | {
        "metadata": {**endpoint_slice(topo, [])["metadata"],
                     "resourceVersion": current["metadata"]["resourceVersion"]}})
    assert eventually(lambda: via_vip(n=20) == {"web2"})
    # deleting the Service: its address no longer answers (no service entry left)
    api.delete("v1", "Service", "web", "y")
    assert eventually(lambda: via_vip(n=2, served=False) == set())
