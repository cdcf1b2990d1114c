"""Label and field selectors on list and watch, as kube-apiserver parses them; and the
async Python API of the stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kubernetes import client

from kubestandin import KubeStandIn, KubeStandInThread, objects
from kubestandin.errors import BadRequest
from kubestandin.selectors import parse_label_selector
from plumbing.kube.client import KubeSettings, api_client


@pytest.fixture(scope="module")
def v1() -> Iterator[client.CoreV1Api]:
    with KubeStandInThread(statefulset_controller=False) as api:
        api.create(objects.namespace("other"))
        for name, labels, ns in [
            ("a", {"app": "web", "tier": "front"}, "default"),
            ("b", {"app": "web", "tier": "back"}, "default"),
            ("c", {"app": "db"}, "default"),
            ("d", {}, "default"),
            ("e", {"app": "web"}, "other"),
        ]:
            api.create(objects.pod(name, ns, labels=labels,
                                   scheduler_name="mine" if name in ("a", "b") else None))
        api.create(objects.pod("f", "other", node_name="n1"))
        api.set_pod_phase("f", "Running", "other")
        ac = api_client(KubeSettings(kube_host=api.url))
        yield client.CoreV1Api(ac)
        ac.close()


@pytest.mark.parametrize(("selector", "names"), [
    ("app=web", ["a", "b"]),
    ("app==web", ["a", "b"]),
    ("app!=web", ["c", "d"]),
    ("app in (web, db)", ["a", "b", "c"]),
    ("app notin (web)", ["c", "d"]),
    ("tier", ["a", "b"]),
    ("!tier", ["c", "d"]),
    ("app=web,tier in (front)", ["a"]),
    ("app in (web,db),!tier", ["c"]),
    ("app=nope", []),
])
def test_label_selectors(v1: client.CoreV1Api, selector: str, names: list[str]) -> None:
    got = v1.list_namespaced_pod("default", label_selector=selector).items
    assert [p.metadata.name for p in got] == names


@pytest.mark.parametrize(("selector", "names"), [
    ("metadata.name=a", ["a"]),
    ("metadata.namespace=other", ["e", "f"]),
    ("metadata.namespace!=default", ["e", "f"]),
    ("spec.nodeName=", ["a", "b", "c", "d", "e"]),
    ("spec.nodeName=n1", ["f"]),
    ("spec.schedulerName=mine", ["a", "b"]),
    ("spec.schedulerName=default-scheduler,spec.nodeName=", ["c", "d", "e"]),
    ("status.phase=Running", ["f"]),
    ("status.phase!=Running", ["a", "b", "c", "d", "e"]),
])
def test_field_selectors(v1: client.CoreV1Api, selector: str, names: list[str]) -> None:
    got = v1.list_pod_for_all_namespaces(field_selector=selector).items
    assert sorted(p.metadata.name for p in got) == names


def test_selectors_combine(v1: client.CoreV1Api) -> None:
    got = v1.list_pod_for_all_namespaces(label_selector="app=web",
                                         field_selector="metadata.namespace=other").items
    assert [p.metadata.name for p in got] == ["e"]


def test_malformed_selector_is_400(v1: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as e:
        v1.list_namespaced_pod("default", label_selector="app in web")
    assert e.value.status == 400
    with pytest.raises(BadRequest):
        parse_label_selector("=x")


async def test_async_api_with_the_sync_client_in_a_worker_thread() -> None:
    # The official client blocks: in async tests call it through asyncio.to_thread so the
    # stand-in, which runs on this loop, can answer.
    async with KubeStandIn(statefulset_controller=True, auto_ready=True) as api:
        await api.create(objects.node("n1"))
        await api.create(objects.statefulset("web", replicas=1,
                                             scheduler_name="stickyip-scheduler"))
        await api.settle()
        ac = api_client(KubeSettings(kube_host=api.url))
        v1 = client.CoreV1Api(ac)
        pending = await asyncio.to_thread(v1.list_pod_for_all_namespaces,
                                          field_selector="spec.nodeName=")
        assert [p.metadata.name for p in pending.items] == ["web-0"]
        await asyncio.to_thread(
            v1.create_namespaced_pod_binding, "web-0", "default",
            client.V1Binding(metadata=client.V1ObjectMeta(name="web-0"),
                             target=client.V1ObjectReference(kind="Node", name="n1")),
            _preload_content=False)

        async def ready(a: KubeStandIn) -> bool:
            sts = await a.get("apps/v1", "StatefulSet", "web", "default")
            return sts is not None and sts["status"].get("readyReplicas") == 1

        await api.wait_for(ready, timeout=5)
        assert await api.list("v1", "Pod", label_selector="app=web",
                              field_selector="spec.nodeName=n1") != []
        patched = await api.patch("v1", "Pod", "web-0", {"metadata": {"labels": {"x": "1"}}})
        assert patched["metadata"]["labels"]["x"] == "1"
        assert await api.delete("apps/v1", "StatefulSet", "web") is not None
        assert await api.list("v1", "Pod") == []
        assert await api.delete("apps/v1", "StatefulSet", "web") is None
        await asyncio.to_thread(ac.close)
