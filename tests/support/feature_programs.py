"""The eBPF feature programs on a netbed ``Topology`` for the privileged tests: pinned
under a directory unique to the topology, attached on every pod's host side, and
unpinned with the topology removed afterwards, also when setting up failed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from datapath.features.policy import PolicyManager
from datapath.features.policy.models import NetworkPolicyObject
from datapath.features.services import ServiceManager
from datapath.loader import FeaturePrograms
from netbed.topology import Topology


@contextmanager
def programs_on(topo: Topology, name: str) -> Iterator[FeaturePrograms]:
    """Programs pinned under ``/sys/fs/bpf/sipf-NAME-TAG``; on the way out they are
    unpinned and ``topo`` is closed (its namespaces and links removed)."""
    progs = FeaturePrograms(pin_dir=f"/sys/fs/bpf/sipf-{name}-{topo.tag}")
    try:
        yield progs
    finally:
        progs.close(unpin=True)
        topo.close()


def load_on_every_pod(topo: Topology, progs: FeaturePrograms, *, policy: bool = True) -> None:
    """Load the programs and attach them on the host side of every pod of ``topo``."""
    progs.load()
    for pod in topo.pods.values():
        progs.attach(pod.host_ifindex, policy=policy, netns=f"/run/netns/{topo.node}")


def set_policies(mgr: PolicyManager, *pols: dict[str, Any]) -> None:
    """Make ``pols`` the only NetworkPolicies ``mgr`` enforces (none: no policy)."""
    mgr.policies.clear()
    for pol in pols:
        mgr.set_policy(cast(NetworkPolicyObject, pol))
    mgr.sync()


def remove_services(mgr: ServiceManager) -> None:
    """Delete every Service and EndpointSlice ``mgr`` holds, and so their map entries."""
    for key in list(mgr.services):
        mgr.delete_service(key)
    for key in list(mgr.slices):
        for sl in list(mgr.slices[key].values()):
            mgr.delete_slice(sl)
