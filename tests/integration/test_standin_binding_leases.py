"""pods/binding (one bind wins, 409 for the rest) and Lease-based leader election
through the official client, including its own ``LeaseLock``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from kubestandin import KubeStandInThread, objects


def binding(pod: str, node: str, uid: str | None = None) -> client.V1Binding:
    return client.V1Binding(metadata=client.V1ObjectMeta(name=pod, uid=uid),
                            target=client.V1ObjectReference(kind="Node", name=node))


def test_binding_sets_node_name_and_answers_like_kube_apiserver(
        standin: KubeStandInThread, kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    standin.create(objects.node("n1"))
    v1.create_namespaced_pod("default", objects.pod("p", scheduler_name="mine"))
    resp = v1.create_namespaced_pod_binding("p", "default", binding("p", "n1"),
                                            _preload_content=False)
    # kube-apiserver answers a binding with a Status, not a Binding (which is why the
    # generated client needs _preload_content=False here, against a real cluster too).
    assert resp.status == 201
    assert json.loads(resp.data)["status"] == "Success"
    pod = v1.read_namespaced_pod("p", "default")
    assert pod.spec.node_name == "n1"
    assert {c.type: c.status for c in pod.status.conditions}["PodScheduled"] == "True"


def test_binding_a_bound_pod_is_409(standin: KubeStandInThread,
                                    kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("default", objects.pod("p"))
    v1.create_namespaced_pod_binding("p", "default", binding("p", "n1"),
                                     _preload_content=False)
    with pytest.raises(client.ApiException) as e:
        v1.create_namespaced_pod_binding("p", "default", binding("p", "n2"),
                                         _preload_content=False)
    assert e.value.status == 409
    assert 'already assigned to node "n1"' in json.loads(e.value.body)["message"]
    assert v1.read_namespaced_pod("p", "default").spec.node_name == "n1"


def test_binding_checks_the_uid_precondition_and_the_pod_exists(
        kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("default", objects.pod("p"))
    with pytest.raises(client.ApiException) as e:
        v1.create_namespaced_pod_binding("p", "default", binding("p", "n1", uid="other"),
                                         _preload_content=False)
    assert e.value.status == 409
    with pytest.raises(client.ApiException) as e:
        v1.create_namespaced_pod_binding("nope", "default", binding("nope", "n1"),
                                         _preload_content=False)
    assert e.value.status == 404


def test_racing_binds_of_one_pod_have_exactly_one_winner(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("default", objects.pod("p"))

    def bind(node: str) -> int:
        try:
            return int(v1.create_namespaced_pod_binding(
                "p", "default", binding("p", node), _preload_content=False).status)
        except client.ApiException as e:
            return int(e.status)

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(bind, [f"n{i}" for i in range(8)]))
    assert sorted(codes) == [201] + [409] * 7
    winner = v1.read_namespaced_pod("p", "default").spec.node_name
    assert winner == f"n{codes.index(201)}"


def lock(kube: client.ApiClient, identity: str) -> LeaseLock:
    lk = LeaseLock("stickyip-scheduler", "kube-system", identity)
    lk.api_instance = client.CoordinationV1Api(kube)
    return lk


def record(identity: str) -> LeaderElectionRecord:
    return LeaderElectionRecord(identity, "15", "2026-01-01 00:00:00.000000+00:00",
                                "2026-01-01 00:00:00.000000+00:00")


def test_lease_lock_has_one_creator_and_one_taker_over(kube: client.ApiClient) -> None:
    a, b = lock(kube, "a"), lock(kube, "b")
    assert a.get("stickyip-scheduler", "kube-system")[0] is False
    assert a.create("stickyip-scheduler", "kube-system", record("a")) is True
    assert b.create("stickyip-scheduler", "kube-system", record("b")) is False  # 409
    # Both observe the same version, then both try to take over: one replace wins,
    # the other carries a stale resourceVersion and gets 409.
    ok_a, rec_a = a.get("stickyip-scheduler", "kube-system")
    ok_b, rec_b = b.get("stickyip-scheduler", "kube-system")
    assert ok_a and ok_b and rec_a.holder_identity == rec_b.holder_identity == "a"
    assert b.update("stickyip-scheduler", "kube-system", record("b")) is True
    assert a.update("stickyip-scheduler", "kube-system", record("a")) is False
    lease = client.CoordinationV1Api(kube).read_namespaced_lease("stickyip-scheduler",
                                                                 "kube-system")
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_duration_seconds == 15
    assert lease.spec.renew_time is not None
