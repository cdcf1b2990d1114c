"""The official kubernetes client does CRUD against the API stand-in: metadata, 409s,
patches, subresources, deletion cascade and discovery."""

from __future__ import annotations

import pytest
from kubernetes import client, dynamic

from kubestandin import KubeStandInThread, objects
from plumbing.kube.client import KubeSettings, api_client


def test_create_assigns_metadata_from_one_global_counter(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    node = v1.create_node(objects.node("n1"))
    pod = v1.create_namespaced_pod("default", objects.pod("p1"))
    assert node.metadata.uid and pod.metadata.uid and node.metadata.uid != pod.metadata.uid
    assert int(pod.metadata.resource_version) > int(node.metadata.resource_version)
    assert pod.metadata.creation_timestamp is not None
    assert pod.metadata.generation == 1
    assert pod.status.phase == "Pending"
    assert pod.spec.scheduler_name == "default-scheduler"
    listed = v1.list_namespaced_pod("default")
    assert int(listed.metadata.resource_version) >= int(pod.metadata.resource_version)
    assert [p.metadata.name for p in listed.items] == ["p1"]


def test_create_of_an_existing_name_is_409_already_exists(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("default", objects.pod("p1"))
    with pytest.raises(client.ApiException) as e:
        v1.create_namespaced_pod("default", objects.pod("p1"))
    assert e.value.status == 409
    assert '"AlreadyExists"' in e.value.body


def test_put_with_stale_resource_version_is_409(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "c"},
                                                     "data": {"k": "1"}})
    stale = cm.metadata.resource_version
    cm.data = {"k": "2"}
    updated = v1.replace_namespaced_config_map("c", "default", cm)
    assert updated.data == {"k": "2"}
    assert int(updated.metadata.resource_version) > int(stale)
    cm.data = {"k": "3"}
    cm.metadata.resource_version = stale
    with pytest.raises(client.ApiException) as e:
        v1.replace_namespaced_config_map("c", "default", cm)
    assert e.value.status == 409
    assert v1.read_namespaced_config_map("c", "default").data == {"k": "2"}


def test_patch_flavours(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("default", objects.pod("p1", labels={"a": "1", "b": "2"}))
    # A dict body goes out as a strategic merge patch; null removes a key.
    p = v1.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"a": None, "c": "3"}}})
    assert p.metadata.labels == {"b": "2", "c": "3"}
    # A list body goes out as a JSON patch.
    p = v1.patch_namespaced_pod("p1", "default", [
        {"op": "add", "path": "/metadata/annotations/x", "value": "y"}])
    assert p.metadata.annotations == {"x": "y"}
    # An explicit merge patch.
    p = v1.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"d": "4"}}},
                                _content_type="application/merge-patch+json")
    assert p.metadata.labels == {"b": "2", "c": "3", "d": "4"}
    # A failing JSON patch test is rejected and changes nothing.
    with pytest.raises(client.ApiException) as e:
        v1.patch_namespaced_pod("p1", "default", [
            {"op": "test", "path": "/metadata/labels/b", "value": "nope"},
            {"op": "remove", "path": "/metadata/labels/b"}])
    assert e.value.status == 422
    assert v1.read_namespaced_pod("p1", "default").metadata.labels["b"] == "2"
    # A patch naming a stale resourceVersion conflicts.
    with pytest.raises(client.ApiException) as e:
        v1.patch_namespaced_pod("p1", "default", {"metadata": {"resourceVersion": "1",
                                                               "labels": {"e": "5"}}})
    assert e.value.status == 409


def test_strategic_merge_merges_conditions_by_type(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_node(objects.node("n1"))
    v1.patch_node_status("n1", {"status": {"conditions": [
        {"type": "MemoryPressure", "status": "False"}]}})
    node = v1.read_node("n1")
    assert {c.type: c.status for c in node.status.conditions} == {
        "Ready": "True", "MemoryPressure": "False"}


def test_status_and_main_resource_are_written_separately(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("default", objects.pod("p1"))
    # Writing the main resource ignores status ...
    p = v1.patch_namespaced_pod("p1", "default", {"status": {"phase": "Running"},
                                                  "metadata": {"labels": {"x": "1"}}})
    assert p.status.phase == "Pending" and p.metadata.labels == {"x": "1"}
    # ... and writing status ignores everything else.
    p = v1.patch_namespaced_pod_status("p1", "default", {"status": {"phase": "Running"},
                                                         "metadata": {"labels": {"x": "2"}}})
    assert p.status.phase == "Running" and p.metadata.labels == {"x": "1"}


def test_generation_counts_spec_changes_only(kube: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_stateful_set("default", objects.statefulset("web", replicas=1))
    s = apps.patch_namespaced_stateful_set("web", "default", {"metadata": {"labels": {"a": "b"}}})
    assert s.metadata.generation == 1
    s = apps.patch_namespaced_stateful_set("web", "default", {"spec": {"replicas": 2}})
    assert s.metadata.generation == 2


def test_pod_node_name_changes_only_through_binding(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_pod("default", objects.pod("p1"))
    with pytest.raises(client.ApiException) as e:
        v1.patch_namespaced_pod("p1", "default", {"spec": {"nodeName": "n1"}})
    assert e.value.status == 422


def test_get_and_delete_missing_objects_are_404(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    for call in (lambda: v1.read_namespaced_pod("nope", "default"),
                 lambda: v1.delete_namespaced_pod("nope", "default"),
                 lambda: v1.read_node("nope")):
        with pytest.raises(client.ApiException) as e:
            call()
        assert e.value.status == 404


def test_delete_returns_the_object_and_removes_it(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    created = v1.create_namespaced_pod("default", objects.pod("p1"))
    v1.delete_namespaced_pod("p1", "default")
    assert v1.list_namespaced_pod("default").items == []
    # uid precondition on a re-created object of the same name
    v1.create_namespaced_pod("default", objects.pod("p1"))
    with pytest.raises(client.ApiException) as e:
        v1.delete_namespaced_pod("p1", "default", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=created.metadata.uid)))
    assert e.value.status == 409


def test_finalizers_hold_deletion_until_removed(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    v1.create_namespaced_config_map("default", {"metadata": {"name": "c",
                                                             "finalizers": ["x/y"]}})
    v1.delete_namespaced_config_map("c", "default")
    held = v1.read_namespaced_config_map("c", "default")
    assert held.metadata.deletion_timestamp is not None
    v1.patch_namespaced_config_map("c", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(client.ApiException) as e:
        v1.read_namespaced_config_map("c", "default")
    assert e.value.status == 404


def test_owner_deletion_cascades_and_orphan_keeps(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    owner = v1.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner.metadata.uid}
    v1.create_namespaced_pod("default", {**objects.pod("dep"), "metadata": {
        "name": "dep", "ownerReferences": [ref]}})
    v1.delete_namespaced_config_map("owner", "default")
    assert v1.list_namespaced_pod("default").items == []

    owner = v1.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref["uid"] = owner.metadata.uid
    v1.create_namespaced_pod("default", {**objects.pod("dep"), "metadata": {
        "name": "dep", "ownerReferences": [ref]}})
    v1.delete_namespaced_config_map("owner", "default", propagation_policy="Orphan")
    assert [p.metadata.name for p in v1.list_namespaced_pod("default").items] == ["dep"]


def test_generate_name_and_service_cluster_ip(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    ev = v1.create_namespaced_event("default", {
        "metadata": {"generateName": "p1."}, "involvedObject": {"kind": "Pod", "name": "p1"},
        "reason": "Test", "message": "hello"})
    assert ev.metadata.name.startswith("p1.") and len(ev.metadata.name) == 8
    svc = v1.create_namespaced_service("default", {"metadata": {"name": "s"}, "spec": {
        "ports": [{"port": 80}]}})
    assert svc.spec.cluster_ip


def test_list_pages_with_limit_and_continue(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    for i in range(5):
        v1.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    first = v1.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["c0", "c1"]
    assert first.metadata.remaining_item_count == 3
    second = v1.list_namespaced_config_map("default", limit=2,
                                           _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["c2", "c3"]


def test_namespace_deletion_removes_its_contents(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    ns = v1.create_namespace(objects.namespace("team-a"))
    assert ns.metadata.labels["kubernetes.io/metadata.name"] == "team-a"
    v1.create_namespaced_pod("team-a", objects.pod("p1", namespace="team-a"))
    v1.delete_namespace("team-a")
    assert v1.list_pod_for_all_namespaces().items == []


def test_discovery_serves_every_resource_to_the_dynamic_client(
        kube: client.ApiClient) -> None:
    assert client.VersionApi(kube).get_code().major == "1"
    dyn = dynamic.DynamicClient(kube)
    samples = [
        ("v1", "Service", {"spec": {"ports": [{"port": 53}]}}),
        ("v1", "ConfigMap", {"data": {"a": "b"}}),
        ("v1", "Event", {"involvedObject": {"kind": "Pod", "name": "x"}, "reason": "R"}),
        ("apps/v1", "StatefulSet", objects.statefulset("s", replicas=0)),
        ("discovery.k8s.io/v1", "EndpointSlice", {"addressType": "IPv4", "endpoints": []}),
        ("networking.k8s.io/v1", "NetworkPolicy", {"spec": {"podSelector": {}}}),
        ("coordination.k8s.io/v1", "Lease", {"spec": {"holderIdentity": "a"}}),
        ("events.k8s.io/v1", "Event", {"reason": "R", "action": "A"}),
    ]
    for api_version, kind, extra in samples:
        body = {**extra, "apiVersion": api_version, "kind": kind,
                "metadata": {"name": "x", "namespace": "default"}}
        resource = dyn.resources.get(api_version=api_version, kind=kind)
        created = resource.create(body=body, namespace="default")
        assert created.metadata.uid, kind
        got = resource.get(name="x", namespace="default")
        assert got.metadata.resourceVersion == created.metadata.resourceVersion, kind
        assert [i.metadata.name for i in resource.get(namespace="default").items] == ["x"]
        resource.delete(name="x", namespace="default")
    nodes = dyn.resources.get(api_version="v1", kind="Node")
    nodes.create(body=objects.node("n9"))
    assert nodes.get(name="n9").status.allocatable.cpu == "8"


def test_a_uid_in_the_body_is_a_precondition(kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    pod = v1.create_namespaced_pod("default", objects.pod("p1"))
    v1.patch_namespaced_pod("p1", "default", {"metadata": {"uid": pod.metadata.uid,
                                                           "annotations": {"a": "1"}}},
                            _content_type="application/merge-patch+json")
    with pytest.raises(client.ApiException) as e:
        v1.patch_namespaced_pod("p1", "default", {"metadata": {"uid": "someone-else",
                                                               "annotations": {"a": "2"}}},
                                _content_type="application/merge-patch+json")
    assert e.value.status == 409
    assert v1.read_namespaced_pod("p1", "default").metadata.annotations == {"a": "1"}


def test_pods_get_the_default_not_ready_and_unreachable_tolerations(
        kube: client.ApiClient) -> None:
    v1 = client.CoreV1Api(kube)
    own = {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
           "effect": "NoExecute", "tolerationSeconds": 10}
    pod = v1.create_namespaced_pod("default", objects.pod("p1", tolerations=[own]))
    tolerations = {(t.key, t.effect, t.toleration_seconds) for t in pod.spec.tolerations}
    assert tolerations == {("node.kubernetes.io/unreachable", "NoExecute", 10),
                           ("node.kubernetes.io/not-ready", "NoExecute", 300)}


def test_strict_namespaces_rejects_objects_in_missing_namespaces() -> None:
    with KubeStandInThread(statefulset_controller=False, strict_namespaces=True) as api:
        ac = api_client(KubeSettings(kube_host=api.url))
        v1 = client.CoreV1Api(ac)
        with pytest.raises(client.ApiException) as e:
            v1.create_namespaced_pod("nowhere", objects.pod("p", namespace="nowhere"))
        assert e.value.status == 404
        v1.create_namespace(objects.namespace("nowhere"))
        assert v1.create_namespaced_pod("nowhere", objects.pod("p", namespace="nowhere"))
        ac.close()
