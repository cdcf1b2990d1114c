"""The agent's Kubernetes feed computes the NetworkPolicy maps over every pod of the
cluster; it must not do so once per event. A re-list of many pods and a burst of pods
starting each cost a few computations, and the maps end up holding every pod (the
API stand-in, the real client, the policy manager over in-memory maps)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from datapath.features.kube import KubeFeed
from datapath.features.policy import PolicyManager
from datapath.maps import ipcache
from datapath.maps.state import MemoryMaps
from kubestandin import objects
from kubestandin.standin import KubeStandInThread
from plumbing.kube.client import KubeSettings, api_client

LISTED, BURST = 300, 150


def address(i: int) -> str:
    return f"10.77.{i // 250}.{i % 250 + 1}"


def start_pod(api: KubeStandInThread, i: int) -> None:
    name = f"web-{i}"
    api.create(objects.pod(name, "shop", labels={"app": "web", "n": str(i)},
                           annotations={"stickyip.io/ip": address(i)}, node_name="n1"))
    api.set_pod_ready(name, "shop")  # the stand-in's kubelet: Ready with that podIP


@pytest.fixture
def api() -> Iterator[KubeStandInThread]:
    with KubeStandInThread(statefulset_controller=False) as standin:
        standin.create(objects.namespace("shop"))
        yield standin


def in_ipcache(maps: MemoryMaps, n: int) -> bool:
    have = {k[1] for k, _ in maps.items(ipcache.NAME) if k[0] == 32}
    from datapath.maps.fields import be32

    return all(be32(ipaddress.IPv4Address(address(i))) in have for i in range(n))


def test_a_relist_and_a_burst_are_computed_a_few_times(api: KubeStandInThread) -> None:
    for i in range(LISTED):
        start_pod(api, i)
    maps = MemoryMaps()
    policy = PolicyManager(maps)
    client = api_client(KubeSettings(kube_host=api.url))
    feed = KubeFeed(client, services=None, policy=policy, watch_timeout_s=5,
                    policy_interval=0.2)
    feed.start()
    try:
        assert feed.wait_synced(30)
        assert in_ipcache(maps, LISTED)
        # one event per pod at least (ADDED), one computation per event before
        assert policy.syncs <= 3, policy.syncs
        before = policy.syncs
        for i in range(LISTED, LISTED + BURST):
            start_pod(api, i)  # ADDED, then Ready with its address: two events each
        with feed.computed:
            assert feed.computed.wait_for(lambda: in_ipcache(maps, LISTED + BURST), 30)
        assert policy.syncs - before < BURST // 5, policy.syncs - before
    finally:
        feed.stop()
        client.close()  # type: ignore[no-untyped-call]
