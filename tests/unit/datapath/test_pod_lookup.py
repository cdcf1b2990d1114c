"""Which pods get a sticky reservation key (pure part of the Kubernetes pod lookup)."""

from __future__ import annotations

from typing import Any

from datapath.models import host_ifname
from datapath.podinfo import sticky_key_of
from ipam import ReservationKey


def _pod(**meta: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "db-2", "namespace": "prod",
        "labels": {"stickyip.io/fixed-ip": "true"},
        "ownerReferences": [{"kind": "StatefulSet", "name": "db"}],
        "annotations": {"stickyip.io/pool": "prod-a"},
    }
    base.update(meta)
    return {"metadata": base}


def test_opted_in_statefulset_pod() -> None:
    assert sticky_key_of(_pod()) == (ReservationKey.of("prod", "db", 2), "prod-a")


def test_pod_index_label_wins_and_pool_is_optional() -> None:
    pod = _pod(labels={"stickyip.io/fixed-ip": "true", "apps.kubernetes.io/pod-index": "7"},
               annotations={})
    assert sticky_key_of(pod) == (ReservationKey.of("prod", "db", 7), None)


def test_other_pods_are_ephemeral() -> None:
    assert sticky_key_of(_pod(labels={})) is None
    assert sticky_key_of(_pod(ownerReferences=[{"kind": "ReplicaSet", "name": "x"}])) is None
    assert sticky_key_of(_pod(name="db-x")) is None


def test_host_veth_names_are_stable_and_short() -> None:
    a = host_ifname("sip", "container-1", "eth0")
    assert a == host_ifname("sip", "container-1", "eth0")
    assert a != host_ifname("sip", "container-1", "net1")
    assert len(a) == 15 and a.startswith("sip")
