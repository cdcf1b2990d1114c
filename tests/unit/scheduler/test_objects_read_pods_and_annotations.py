from __future__ import annotations

import ipaddress

import pytest

from ipam.models import NodeFailurePolicy
from scheduler.errors import InvalidAnnotation
from scheduler.models import Resources
from scheduler.objects import pod_from_json, sticky_request
from tests.unit.scheduler.helpers import node, pod, pod_json


def test_node_readiness_taints_allocatable() -> None:
    n = node("n1", ready=False, cpu="3500m", memory="2Gi",
             taints=[{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}])
    assert not n.ready and n.out_of_service
    assert n.allocatable == Resources(3500, 2**31)
    assert n.ready_since > 0


def test_pod_requests_sum_containers_and_default_to_limits() -> None:
    raw = pod_json("p")
    raw["spec"]["containers"] = [
        {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
        {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
    ]
    raw["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]
    assert pod_from_json(raw).requests == Resources(2000, 64 * 2**20 + 2**30)


def test_statefulset_ordinal_from_owner() -> None:
    p = pod("web-2", sts="web", fixed=True)
    assert (p.statefulset, p.ordinal) == ("web", 2)
    assert pod("web-2").ordinal == -1  # no owner: not a StatefulSet pod
    assert pod("other-2", sts="web").ordinal == -1


def test_sticky_request_from_annotations() -> None:
    p = pod("db-1", sts="db", fixed=True, namespace="prod", annotations={
        "stickyip.io/pool": "prod-a", "stickyip.io/ips": "10.20.0.10-10.20.0.12",
        "stickyip.io/retain": "24h", "stickyip.io/node-failure": "wait"})
    req = sticky_request(p)
    assert req is not None
    assert str(req.key) == "prod/db/1" and req.pool == "prod-a"
    assert req.addresses == (ipaddress.IPv4Address("10.20.0.11"),)
    assert req.request.retain == 86400 and req.request.policy is NodeFailurePolicy.WAIT


def test_defaults_and_non_opted_in_pods() -> None:
    req = sticky_request(pod("db-0", sts="db", fixed=True))
    assert req is not None and req.pool == "default" and req.addresses == ()
    # not given: a new reservation defaults to migrate, a recorded one keeps its own
    assert req.request.retain is None and req.request.policy is None
    assert sticky_request(pod("db-0", sts="db")) is None
    assert sticky_request(pod("lonely", fixed=True)) is None


@pytest.mark.parametrize(("ann", "needle"), [
    ({"stickyip.io/ips": "10.0.0.1"}, "ordinal 3 has none"),
    ({"stickyip.io/ips": "10.0.0.x"}, "invalid"),
    ({"stickyip.io/retain": "soon"}, "retain"),
    ({"stickyip.io/node-failure": "panic"}, "migrate"),
])
def test_bad_annotations_say_what_to_fix(ann: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidAnnotation, match=needle):
        sticky_request(pod("db-3", sts="db", fixed=True, annotations=ann))
