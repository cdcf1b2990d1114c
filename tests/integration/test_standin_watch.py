"""List + watch through the official client's ``Watch().stream``: resume from a
resourceVersion, bookmarks, 410 Gone after compaction, selector enter/leave events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from kubestandin import KubeStandInThread, objects
from plumbing.kube.client import KubeSettings, api_client


@pytest.fixture
def standin() -> Iterator[KubeStandInThread]:
    with KubeStandInThread(statefulset_controller=False, bookmark_interval=0.05) as api:
        yield api


@pytest.fixture
def v1(kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube)


def take(stream: Iterator[dict[str, Any]], w: watch.Watch, n: int,
         skip_bookmarks: bool = True) -> list[tuple[str, str]]:
    """The next ``n`` events as (type, name), then stop the watch."""
    out: list[tuple[str, str]] = []
    for ev in stream:
        if skip_bookmarks and ev["type"] == "BOOKMARK":
            continue
        out.append((ev["type"], ev["raw_object"]["metadata"]["name"]))
        if len(out) == n:
            break
    w.stop()
    return out


def test_watch_resumes_from_a_list_resource_version(v1: client.CoreV1Api) -> None:
    v1.create_namespaced_pod("default", objects.pod("before"))
    listed = v1.list_namespaced_pod("default")
    v1.create_namespaced_pod("default", objects.pod("a"))
    v1.create_namespaced_pod("default", objects.pod("b"))
    v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}})
    v1.delete_namespaced_pod("b", "default")
    w = watch.Watch()
    events = take(w.stream(v1.list_namespaced_pod, "default", timeout_seconds=5,
                           resource_version=listed.metadata.resource_version), w, 4)
    assert events == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_watch_without_resource_version_starts_with_current_state_then_live_events(
        standin: KubeStandInThread, v1: client.CoreV1Api) -> None:
    v1.create_namespaced_pod("default", objects.pod("p0"))
    w = watch.Watch()
    stream = w.stream(v1.list_namespaced_pod, "default", timeout_seconds=5)
    first = next(stream)
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "p0")
    # The watch is open now: changes made after this point arrive live.
    standin.create(objects.pod("p1"))
    standin.delete("v1", "Pod", "p0")
    assert take(stream, w, 2) == [("ADDED", "p1"), ("DELETED", "p0")]


def test_events_carry_increasing_resource_versions_and_deleted_gets_its_own(
        v1: client.CoreV1Api) -> None:
    rv0 = v1.list_namespaced_pod("default").metadata.resource_version
    created = v1.create_namespaced_pod("default", objects.pod("p"))
    v1.delete_namespaced_pod("p", "default")
    w = watch.Watch()
    rvs = []
    for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=rv0,
                       timeout_seconds=5):
        rvs.append(int(ev["raw_object"]["metadata"]["resourceVersion"]))
        if ev["type"] == "DELETED":
            w.stop()
    assert rvs[0] == int(created.metadata.resource_version) and rvs[1] > rvs[0]


def test_bookmarks_report_progress_and_resume_from_there(
        standin: KubeStandInThread, v1: client.CoreV1Api) -> None:
    v1.create_namespaced_pod("default", objects.pod("p0"))
    rv0 = v1.list_namespaced_pod("default").metadata.resource_version
    standin.create(objects.node("n1"))  # advances the global counter; not a pod event
    w = watch.Watch()
    bookmark = None
    for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=rv0,
                       allow_watch_bookmarks=True, timeout_seconds=5):
        assert ev["type"] == "BOOKMARK"  # no pod changed since rv0
        bookmark = ev["raw_object"]["metadata"]["resourceVersion"]
        assert ev["raw_object"]["kind"] == "Pod"
        w.stop()
    assert bookmark is not None and int(bookmark) == standin.resource_version > int(rv0)
    v1.create_namespaced_pod("default", objects.pod("p1"))
    w = watch.Watch()
    assert take(w.stream(v1.list_namespaced_pod, "default", resource_version=bookmark,
                         timeout_seconds=5), w, 1) == [("ADDED", "p1")]


def test_no_bookmarks_unless_asked(v1: client.CoreV1Api) -> None:
    w = watch.Watch()
    events = list(w.stream(v1.list_namespaced_pod, "default", timeout_seconds=1))
    assert events == []


def test_resuming_from_a_compacted_resource_version_is_410_gone(
        standin: KubeStandInThread, v1: client.CoreV1Api) -> None:
    rv0 = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", objects.pod("p"))
    standin.compact()
    w = watch.Watch()
    with pytest.raises(client.ApiException) as e:
        list(w.stream(v1.list_namespaced_pod, "default", resource_version=rv0,
                      timeout_seconds=5))
    assert e.value.status == 410
    # The remedy works: list again, watch from the new resourceVersion.
    rv1 = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", objects.pod("q"))
    w = watch.Watch()
    assert take(w.stream(v1.list_namespaced_pod, "default", resource_version=rv1,
                         timeout_seconds=5), w, 1) == [("ADDED", "q")]


def test_small_history_expires_old_resource_versions() -> None:
    with KubeStandInThread(statefulset_controller=False, history_size=3) as api:
        ac = api_client(KubeSettings(kube_host=api.url))
        v1 = client.CoreV1Api(ac)
        rv0 = v1.list_namespaced_pod("default").metadata.resource_version
        for i in range(5):
            v1.create_namespaced_pod("default", objects.pod(f"p{i}"))
        with pytest.raises(client.ApiException) as e:
            list(watch.Watch().stream(v1.list_namespaced_pod, "default",
                                      resource_version=rv0, timeout_seconds=5))
        assert e.value.status == 410
        ac.close()


def test_objects_entering_and_leaving_a_label_selection(v1: client.CoreV1Api) -> None:
    rv0 = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", objects.pod("p", labels={"app": "y"}))
    v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "x"}}})
    v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"tier": "1"}}})
    v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"app": "z"}}})
    v1.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"tier": "2"}}})
    w = watch.Watch()
    assert take(w.stream(v1.list_namespaced_pod, "default", label_selector="app=x",
                         resource_version=rv0, timeout_seconds=5), w, 3) == [
        ("ADDED", "p"), ("MODIFIED", "p"), ("DELETED", "p")]


def test_unscheduled_pod_watch_sees_binding_as_deletion(
        standin: KubeStandInThread, v1: client.CoreV1Api) -> None:
    rv0 = v1.list_pod_for_all_namespaces().metadata.resource_version
    standin.create(objects.node("n1"))
    v1.create_namespaced_pod("default", objects.pod("p", scheduler_name="mine"))
    v1.create_namespaced_pod("default", objects.pod("other"))
    v1.create_namespaced_pod_binding("p", "default", client.V1Binding(
        metadata=client.V1ObjectMeta(name="p"),
        target=client.V1ObjectReference(kind="Node", name="n1")), _preload_content=False)
    w = watch.Watch()
    assert take(w.stream(v1.list_pod_for_all_namespaces, resource_version=rv0,
                         field_selector="spec.schedulerName=mine,spec.nodeName=",
                         timeout_seconds=5), w, 2) == [("ADDED", "p"), ("DELETED", "p")]


def test_watch_all_namespaces_and_one_object(v1: client.CoreV1Api) -> None:
    v1.create_namespace(objects.namespace("other"))
    rv0 = v1.list_pod_for_all_namespaces().metadata.resource_version
    v1.create_namespaced_pod("default", objects.pod("a"))
    v1.create_namespaced_pod("other", objects.pod("b", namespace="other"))
    v1.create_namespaced_pod("other", objects.pod("a", namespace="other"))
    w = watch.Watch()
    assert take(w.stream(v1.list_pod_for_all_namespaces, resource_version=rv0,
                         timeout_seconds=5), w, 3) == [
        ("ADDED", "a"), ("ADDED", "b"), ("ADDED", "a")]
    w = watch.Watch()
    ns_events = []
    for ev in w.stream(v1.list_namespaced_pod, "other", resource_version=rv0,
                       field_selector="metadata.name=a", timeout_seconds=5):
        ns_events.append((ev["type"], ev["raw_object"]["metadata"]["namespace"]))
        w.stop()
    assert ns_events == [("ADDED", "other")]


def test_watch_ends_at_timeout_seconds(v1: client.CoreV1Api) -> None:
    # Returns (rather than hanging) once the server closes the stream.
    assert list(watch.Watch().stream(v1.list_node, timeout_seconds=1)) == []
