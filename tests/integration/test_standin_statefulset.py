"""The stand-in's StatefulSet controller: ordered creation, pod identity, re-creation,
scale-down from the top, status, cascade on deletion; plus the auto-ready kubelet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, watch

from kubestandin import KubeStandInThread, objects
from plumbing.kube.client import KubeSettings, api_client


@pytest.fixture
def standin() -> Iterator[KubeStandInThread]:
    """With the StatefulSet controller, and pods made ready by the tests themselves."""
    with KubeStandInThread(statefulset_controller=True, auto_ready=False) as api:
        yield api


def pod_names(api: KubeStandInThread) -> list[str]:
    api.settle()
    return [p["metadata"]["name"] for p in api.list("v1", "Pod", "default")]


def test_ordered_ready_creates_the_next_pod_only_when_the_previous_is_ready(
        standin: KubeStandInThread, kube: client.ApiClient) -> None:
    client.AppsV1Api(kube).create_namespaced_stateful_set("default", objects.statefulset(
        "web", replicas=3))
    assert pod_names(standin) == ["web-0"]
    assert pod_names(standin) == ["web-0"]  # stays so while web-0 is not Ready
    standin.set_pod_ready("web-0")
    assert pod_names(standin) == ["web-0", "web-1"]
    standin.set_pod_ready("web-1")
    assert pod_names(standin) == ["web-0", "web-1", "web-2"]
    standin.set_pod_ready("web-2")
    standin.settle()
    sts = client.AppsV1Api(kube).read_namespaced_stateful_set("web", "default")
    assert (sts.status.replicas, sts.status.ready_replicas) == (3, 3)
    assert sts.status.observed_generation == 1


def test_pods_carry_the_statefulset_identity(standin: KubeStandInThread,
                                            kube: client.ApiClient) -> None:
    sts = client.AppsV1Api(kube).create_namespaced_stateful_set(
        "default", objects.statefulset(
            "db", replicas=1, template_labels={"app": "db", "tier": "data"},
            template_annotations={"stickyip.io/fixed-ip": "true"},
            scheduler_name="stickyip-scheduler"))
    standin.settle()
    pod = client.CoreV1Api(kube).read_namespaced_pod("db-0", "default")
    labels = pod.metadata.labels
    assert labels["app"] == "db" and labels["tier"] == "data"
    assert labels["statefulset.kubernetes.io/pod-name"] == "db-0"
    assert labels["apps.kubernetes.io/pod-index"] == "0"
    assert labels["controller-revision-hash"].startswith("db-")
    assert pod.metadata.annotations == {"stickyip.io/fixed-ip": "true"}
    [ref] = pod.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller) == (
        "StatefulSet", "db", sts.metadata.uid, True)
    assert pod.spec.scheduler_name == "stickyip-scheduler"
    assert pod.spec.hostname == "db-0" and pod.spec.subdomain == "db"


def test_a_deleted_pod_is_recreated_with_the_same_name(standin: KubeStandInThread,
                                                      kube: client.ApiClient) -> None:
    standin.create(objects.statefulset("web", replicas=2, pod_management_policy="Parallel"))
    assert pod_names(standin) == ["web-0", "web-1"]
    old = standin.get("v1", "Pod", "web-1", "default")
    assert old is not None
    client.CoreV1Api(kube).delete_namespaced_pod("web-1", "default")
    assert pod_names(standin) == ["web-0", "web-1"]
    new = standin.get("v1", "Pod", "web-1", "default")
    assert new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]


def test_scale_down_deletes_the_highest_ordinals_first(standin: KubeStandInThread,
                                                       kube: client.ApiClient) -> None:
    standin.create(objects.statefulset("web", replicas=3))
    for name in ("web-0", "web-1", "web-2"):
        standin.settle()
        standin.set_pod_ready(name)
    assert pod_names(standin) == ["web-0", "web-1", "web-2"]
    apps = client.AppsV1Api(kube)
    scale = apps.read_namespaced_stateful_set_scale("web", "default")
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (
        3, 3, "app=web")
    rv = client.CoreV1Api(kube).list_namespaced_pod("default").metadata.resource_version
    apps.patch_namespaced_stateful_set_scale("web", "default", {"spec": {"replicas": 1}})
    assert pod_names(standin) == ["web-0"]
    w = watch.Watch()
    deleted = []
    for ev in w.stream(client.CoreV1Api(kube).list_namespaced_pod, "default",
                       resource_version=rv, timeout_seconds=5):
        if ev["type"] == "DELETED":
            deleted.append(ev["raw_object"]["metadata"]["name"])
        if len(deleted) == 2:
            w.stop()
    assert deleted == ["web-2", "web-1"]
    standin.settle()
    assert apps.read_namespaced_stateful_set("web", "default").status.replicas == 1
    # and back up: the freed ordinals return in order
    apps.patch_namespaced_stateful_set("web", "default", {"spec": {"replicas": 3}})
    assert pod_names(standin) == ["web-0", "web-1"]


def test_deleting_the_statefulset_deletes_its_pods(standin: KubeStandInThread,
                                                   kube: client.ApiClient) -> None:
    standin.create(objects.statefulset("web", replicas=2, pod_management_policy="Parallel"))
    standin.create(objects.pod("unrelated"))
    assert pod_names(standin) == ["unrelated", "web-0", "web-1"]
    client.AppsV1Api(kube).delete_namespaced_stateful_set("web", "default")
    assert pod_names(standin) == ["unrelated"]


def bind_pending(api: KubeStandInThread, v1: client.CoreV1Api, node: str) -> int:
    """A toy scheduler: bind every unbound pod to ``node``."""
    api.settle()
    pending = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=").items
    for pod in pending:
        v1.create_namespaced_pod_binding(pod.metadata.name, pod.metadata.namespace,
                                         client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(kind="Node", name=node)), _preload_content=False)
    return len(pending)


def test_auto_ready_plays_the_kubelet_once_pods_are_bound() -> None:
    with KubeStandInThread(auto_ready=True) as api:
        ac = api_client(KubeSettings(kube_host=api.url))
        v1 = client.CoreV1Api(ac)
        api.create(objects.node("n1", internal_ip="192.0.2.1"))
        api.create(objects.statefulset("web", replicas=3, template_annotations={}))
        bound = sum(bind_pending(api, v1, "n1") for _ in range(4))
        assert bound == 3
        api.settle()
        pods = v1.list_namespaced_pod("default").items
        assert [(p.metadata.name, p.status.phase, p.spec.node_name, p.status.host_ip)
                for p in pods] == [(f"web-{i}", "Running", "n1", "192.0.2.1")
                                   for i in range(3)]
        assert client.AppsV1Api(ac).read_namespaced_stateful_set(
            "web", "default").status.ready_replicas == 3
        ac.close()


def test_pod_ip_comes_from_the_stickyip_annotation_when_present() -> None:
    with KubeStandInThread(auto_ready=True) as api:
        api.create(objects.node("n1"))
        api.create(objects.pod("p", node_name="n1", annotations={"stickyip.io/ip": "10.20.0.5"}))
        api.settle()
        pod = api.get("v1", "Pod", "p")
        assert pod is not None
        assert pod["status"]["podIP"] == "10.20.0.5"


def test_a_not_ready_node_gets_unreachable_taints_and_its_pods_turn_unready() -> None:
    with KubeStandInThread(auto_ready=True) as api:
        api.create(objects.node("n1"))
        api.create(objects.pod("p", node_name="n1"))
        api.settle()
        api.set_node_ready("n1", False)
        api.settle()
        node = api.get("v1", "Node", "n1")
        pod = api.get("v1", "Pod", "p")
        assert node is not None and pod is not None
        assert {(t["key"], t["effect"]) for t in node["spec"]["taints"]} == {
            ("node.kubernetes.io/unreachable", "NoSchedule"),
            ("node.kubernetes.io/unreachable", "NoExecute")}
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "Unknown"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
        # New pods bound there stay not Ready while the node is away ...
        api.create(objects.pod("q", node_name="n1"))
        api.settle()
        q = api.get("v1", "Pod", "q")
        assert q is not None and q["status"]["phase"] == "Pending"
        # ... and become Ready when it comes back.
        api.set_node_ready("n1", True)
        api.settle()
        node = api.get("v1", "Node", "n1")
        q = api.get("v1", "Pod", "q")
        assert node is not None and node["spec"]["taints"] == []
        assert q is not None and q["status"]["phase"] == "Running"


def test_a_failed_pod_is_replaced(standin: KubeStandInThread) -> None:
    standin.create(objects.statefulset("web", replicas=1))
    standin.settle()
    old = standin.get("v1", "Pod", "web-0")
    assert old is not None
    standin.set_pod_phase("web-0", "Failed")
    standin.settle()
    new = standin.get("v1", "Pod", "web-0")
    assert new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]
    assert new["status"]["phase"] == "Pending"


def test_graceful_deletion_waits_for_a_live_kubelet_or_a_force_delete() -> None:
    with KubeStandInThread(auto_ready=True, graceful_deletion=True) as api:
        ac = api_client(KubeSettings(kube_host=api.url))
        v1 = client.CoreV1Api(ac)
        api.create(objects.node("alive"))
        api.create(objects.node("dead"))
        api.create(objects.pod("unbound"))
        api.create(objects.pod("on-alive", node_name="alive"))
        api.create(objects.pod("on-dead", node_name="dead"))
        api.settle()
        api.set_node_ready("dead", False)
        for name in ("unbound", "on-alive", "on-dead"):
            v1.delete_namespaced_pod(name, "default")
        api.settle()
        # The unbound pod goes at once, the live kubelet confirms its pod; the pod on the
        # dead node stays Terminating.
        assert pod_names(api) == ["on-dead"]
        stuck = v1.read_namespaced_pod("on-dead", "default")
        assert stuck.metadata.deletion_timestamp is not None
        assert stuck.metadata.deletion_grace_period_seconds == 30
        v1.delete_namespaced_pod("on-dead", "default", grace_period_seconds=0)
        assert pod_names(api) == []

        # A StatefulSet pod stuck Terminating is not replaced until it is gone; when the
        # node comes back, its kubelet finishes the deletion.
        api.create(objects.statefulset("web", replicas=1, pod_management_policy="Parallel"))
        api.settle()
        v1.create_namespaced_pod_binding("web-0", "default", client.V1Binding(
            metadata=client.V1ObjectMeta(name="web-0"),
            target=client.V1ObjectReference(kind="Node", name="dead")), _preload_content=False)
        first = api.get("v1", "Pod", "web-0")
        assert first is not None
        v1.delete_namespaced_pod("web-0", "default")
        api.settle()
        again = api.get("v1", "Pod", "web-0")
        assert again is not None and again["metadata"]["uid"] == first["metadata"]["uid"]
        api.set_node_ready("dead", True)
        api.settle()
        new = api.get("v1", "Pod", "web-0")
        assert new is not None and new["metadata"]["uid"] != first["metadata"]["uid"]
        assert "deletionTimestamp" not in new["metadata"]
        ac.close()
