"""The demo's StatefulSet story on a real cluster (opt-in: ``make e2e``).

Needs a cluster reachable through ``KUBECONFIG`` (kind or any other) with stickyip
installed from ``manifests/`` (webhook, scheduler, agents, a pool covering
``STICKYIP_E2E_POOL``), and ``STICKYIP_E2E=1``. The node-loss step taints a worker
``node.kubernetes.io/out-of-service`` and removes the taint afterwards; it runs only
with ``STICKYIP_E2E_DISRUPTIVE=1``. No real cluster can run on the build machines, so
here every test skips with that reason.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

E2E = os.environ.get("STICKYIP_E2E") == "1"
KUBECONFIG = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
POOL = os.environ.get("STICKYIP_E2E_POOL", "default")
TIMEOUT = float(os.environ.get("STICKYIP_E2E_TIMEOUT", "300"))

pytestmark = pytest.mark.skipif(
    not E2E or not os.path.exists(KUBECONFIG),
    reason="needs a real cluster: set STICKYIP_E2E=1 and KUBECONFIG (see README, 'make e2e')",
)


@pytest.fixture(scope="module")
def apis() -> Any:
    from kubernetes import client, config

    config.load_kube_config(config_file=KUBECONFIG)
    return client.CoreV1Api(), client.AppsV1Api()


@pytest.fixture
def namespace(apis: Any) -> Iterator[str]:
    core, _ = apis
    name = f"stickyip-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def wait(what: str, check: Callable[[], Any], within: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def statefulset(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name, "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, "stickyip.io/fixed-ip": "true"},
                    "annotations": {"stickyip.io/pool": POOL, "stickyip.io/retain": "1h",
                                    "stickyip.io/node-failure": "migrate"},
                },
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "web", "image": "registry.k8s.io/pause:3.9"}]},
            },
        },
    }


def placement(core: Any, ns: str, name: str, replicas: int) -> dict[str, tuple[str, str]]:
    """pod -> (node, pod IP) once every replica is Running with an IP."""
    def ready() -> dict[str, tuple[str, str]] | None:
        pods = core.list_namespaced_pod(ns, label_selector=f"app={name}").items
        out = {p.metadata.name: (p.spec.node_name, p.status.pod_ip) for p in pods
               if p.status.phase == "Running" and p.status.pod_ip
               and p.metadata.deletion_timestamp is None}
        return out if len(out) == replicas else None
    got: dict[str, tuple[str, str]] = wait(f"{replicas} running replicas of {name}", ready)
    return got


def test_statefulset_keeps_its_addresses(apis: Any, namespace: str) -> None:
    core, apps = apis
    apps.create_namespaced_stateful_set(namespace, statefulset("web", 3))
    before = placement(core, namespace, "web", 3)
    for pod in core.list_namespaced_pod(namespace, label_selector="app=web").items:
        ann = pod.metadata.annotations or {}
        assert ann.get("stickyip.io/ip") == pod.status.pod_ip, "admission recorded the IP"
        assert ann.get("stickyip.io/node") == pod.spec.node_name

    # a deleted pod comes back with its address, on its node
    core.delete_namespaced_pod("web-1", namespace)
    after = placement(core, namespace, "web", 3)
    assert after == before

    # scale down and up within retain: the same addresses
    apps.patch_namespaced_stateful_set_scale(namespace=namespace, name="web",
                                             body={"spec": {"replicas": 1}})
    placement(core, namespace, "web", 1)
    apps.patch_namespaced_stateful_set_scale(namespace=namespace, name="web",
                                             body={"spec": {"replicas": 3}})
    assert placement(core, namespace, "web", 3) == before


@pytest.mark.skipif(os.environ.get("STICKYIP_E2E_DISRUPTIVE") != "1",
                    reason="taints a node out-of-service: set STICKYIP_E2E_DISRUPTIVE=1")
def test_node_loss_rehomes_with_the_same_address(apis: Any, namespace: str) -> None:
    core, apps = apis
    apps.create_namespaced_stateful_set(namespace, statefulset("db", 2))
    before = placement(core, namespace, "db", 2)
    node, ip = before["db-1"]
    taint = {"key": "node.kubernetes.io/out-of-service", "value": "stickyip-e2e",
             "effect": "NoExecute"}
    spec = core.read_node(node).spec
    taints = list(spec.taints or [])
    core.patch_node(node, {"spec": {"taints": [*[t.to_dict() for t in taints], taint]}})
    try:
        def moved() -> bool:
            now = placement(core, namespace, "db", 2)
            return now["db-1"][0] != node and now["db-1"][1] == ip
        wait("db-1 re-homed with its address", moved)
        pod = core.read_namespaced_pod("db-1", namespace)
        assert int(pod.metadata.annotations["stickyip.io/epoch"]) >= 2
    finally:
        core.patch_node(node, {"spec": {"taints": [t.to_dict() for t in taints] or None}})
