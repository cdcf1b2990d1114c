"""Which pods get a sticky reservation key, by the contract's ordinal rule (pure part of
the Kubernetes pod lookup); the name-only lookup without the API."""

from __future__ import annotations

from typing import Any

import pytest

from datapath.errors import UnclearPod
from datapath.models import host_ifname
from datapath.podinfo import name_pod_lookup, sticky_key_of
from ipam import RedisIpam, ReservationKey


def _pod(**meta: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "db-2", "namespace": "prod",
        "labels": {"stickyip.io/fixed-ip": "true"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}],
        "annotations": {"stickyip.io/pool": "prod-a"},
    }
    base.update(meta)
    return {"metadata": base}


def test_opted_in_statefulset_pod() -> None:
    assert sticky_key_of(_pod()) == (ReservationKey.of("prod", "db", 2), "prod-a")


def test_a_dual_stack_pod_names_one_pool_per_family() -> None:
    pod = _pod(annotations={"stickyip.io/pool": "prod-a, prod-a6"})
    assert sticky_key_of(pod) == (ReservationKey.of("prod", "db", 2), "prod-a,prod-a6")


def test_pod_index_label_alone_and_pool_is_optional() -> None:
    pod = _pod(name="", labels={"stickyip.io/fixed-ip": "true",
                                "apps.kubernetes.io/pod-index": "7"}, annotations={})
    assert sticky_key_of(pod) == (ReservationKey.of("prod", "db", 7), None)


def test_other_pods_are_ephemeral() -> None:
    assert sticky_key_of(_pod(labels={})) is None
    assert sticky_key_of(_pod(ownerReferences=[{"apiVersion": "apps/v1",
                                                "kind": "ReplicaSet", "name": "x"}])) is None


def test_an_opted_in_pod_of_unclear_ordinal_is_refused_not_made_ephemeral() -> None:
    # The copies disagreed here: the agent used to give such pods an ephemeral
    # address (name not NAME-N) or let the pod-index label win over the name.
    with pytest.raises(UnclearPod, match="db-x"):
        sticky_key_of(_pod(name="db-x"))
    with pytest.raises(UnclearPod, match="inconsistent"):
        sticky_key_of(_pod(labels={"stickyip.io/fixed-ip": "true",
                                   "apps.kubernetes.io/pod-index": "7"}))


async def test_without_the_api_a_pod_name_counts_only_when_ipam_holds_it(
        ipam: RedisIpam) -> None:
    from ipam import PoolSpec

    await ipam.apply_pool(PoolSpec(name="p", cidr="10.40.0.0/24", block_size=28))
    key = ReservationKey.of("prod", "my-db", 3)
    await ipam.claim(key, pool="p", node="n1")
    lookup = name_pod_lookup(ipam)
    assert await lookup("prod", "my-db-3") == (key, "p")
    assert await lookup("prod", "my-db-4") is None  # no such reservation
    assert await lookup("prod", "web") is None
    assert await lookup("prod", "-3") is None
    assert await lookup("", "my-db-3") is None


def test_host_veth_names_are_stable_and_short() -> None:
    a = host_ifname("sip", "container-1", "eth0")
    assert a == host_ifname("sip", "container-1", "eth0")
    assert a != host_ifname("sip", "container-1", "net1")
    assert len(a) == 15 and a.startswith("sip")
