"""Each component's RBAC allows every Kubernetes API request its code makes
(found statically by tests/unit/manifests/kubecalls.py), in every install, and
the checker itself does refuse a request the rules do not allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.manifests import kubecalls
from tests.unit.manifests.conftest import INSTALLS, ROOT, rendered

NAMESPACE = "stickyip-system"
#: Product package -> the ServiceAccount its deployed process runs as.
COMPONENTS = {
    "scheduler": "stickyip-scheduler",
    "webhooks": "stickyip-webhook",
    "datapath": "stickyip-agent",
}


@pytest.mark.parametrize("install", INSTALLS)
@pytest.mark.parametrize("package", sorted(COMPONENTS))
def test_rbac_allows_every_api_request_of_the_code(package: str, install: str) -> None:
    calls = kubecalls.scan_package(ROOT / package)
    rules = kubecalls.rules_for(rendered(install), NAMESPACE, COMPONENTS[package])
    assert rules, f"{COMPONENTS[package]} has no RBAC in {install}"
    missing = kubecalls.denied(calls, rules)
    assert not missing, "RBAC of {} does not allow:\n{}".format(
        COMPONENTS[package],
        "\n".join(f"  {c.where}: {c.text} -> "
                  f"{sorted((r.verb, r.group, r.resource) for r in c.candidates)}"
                  for c in missing))


#: Requests each component is known to make: the scanner must find them in the real
#: code, or it has gone blind and the test above would pass on nothing.
KNOWN_CALLS = {
    "scheduler": {("create", "", "pods/binding"), ("update", "coordination.k8s.io", "leases"),
                  ("watch", "", "nodes"), ("watch", "", "pods"), ("delete", "", "pods")},
    "webhooks": {("get", "apps", "statefulsets")},
    "datapath": {("get", "", "pods"), ("watch", "", "services"),
                 ("watch", "discovery.k8s.io", "endpointslices"),
                 ("watch", "networking.k8s.io", "networkpolicies")},
}


@pytest.mark.parametrize("package", sorted(COMPONENTS))
def test_the_scanner_sees_each_components_known_requests(package: str) -> None:
    """Guards against the scanner silently finding nothing in the real code: a
    failure (never a skip) when a component's known requests are not found."""
    found = {(r.verb, r.group, r.resource) for c in
             kubecalls.scan_package(ROOT / package) for r in c.candidates}
    missing = KNOWN_CALLS[package] - found
    assert not missing, f"the scanner no longer sees these requests of {package}/: {missing}"


SOURCE = '''
from kubernetes import client, watch

PATHS = {"nodes": "/api/v1/nodes", "secrets": "/api/v1/secrets"}

class Api:
    def _call(self, method, path, **kw): ...
    def get(self, path):
        return self._call("GET", path)
    def lease_path(self, ns, name=""):
        base = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        return f"{base}/{name}" if name else base
    def run(self, kind, ns, name):
        self._call("GET", PATHS[kind], stream=True)
        self.get(self.lease_path(ns, name))
        self._call("POST", f"/api/v1/namespaces/{ns}/pods/{name}/eviction", body={})

def official(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_pod_binding("p", ns, {})
    v1.patch_node("n", {})
    for _ in watch.Watch().stream(v1.list_namespaced_pod, ns):
        pass

class Agent:
    def __init__(self, api):
        self.core = client.CoreV1Api(api)
        self.policy = object()
    def run(self):
        self.core.read_namespaced_pod("p", "ns")
        client.AppsV1Api(None).list_stateful_set_for_all_namespaces()
        self.policy.delete_namespace("ns")  # not an API object: not a request

def informer(rest, sink):
    return Reflector(rest, "/api/v1/configmaps", sink, name="configmaps")
'''


def test_the_checker_maps_calls_to_requests() -> None:
    calls = kubecalls.scan_source(Path("fake.py"), SOURCE)
    seen = {(r.verb, r.group, r.resource) for c in calls for r in c.candidates}
    assert {("watch", "", "nodes"), ("watch", "", "secrets"), ("get", "coordination.k8s.io",
            "leases"), ("create", "", "pods/eviction"), ("create", "", "pods/binding"),
            ("patch", "", "nodes"), ("watch", "", "pods"), ("get", "", "pods"),
            ("list", "apps", "statefulsets"), ("list", "", "configmaps"),
            ("watch", "", "configmaps")} <= seen
    assert ("delete", "", "namespaces") not in seen


def test_the_checker_refuses_what_rbac_does_not_allow() -> None:
    calls = kubecalls.scan_source(Path("fake.py"), SOURCE)
    rules = kubecalls.rules_for(rendered("default"), NAMESPACE, "stickyip-scheduler")
    refused = {c.text for c in kubecalls.denied(calls, rules)}
    # The scheduler may watch nodes and pods, bind, and read its Lease...
    assert "create_namespaced_pod_binding" not in refused
    assert "list_namespaced_pod (watch)" not in refused
    # ...but not read Secrets, evict pods or patch nodes.
    assert "GET /api/v1/secrets" in refused
    assert any("eviction" in t for t in refused)
    assert "patch_node" in refused


def test_a_role_grants_only_namespaced_requests() -> None:
    rules = [kubecalls.Rule(frozenset({""}), frozenset({"nodes", "pods"}),
                            frozenset({"get"}), named_only=False, cluster_wide=False)]
    assert kubecalls.allows(rules, kubecalls.Request("get", "", "pods", namespaced=True))
    assert not kubecalls.allows(rules, kubecalls.Request("get", "", "nodes", namespaced=False))
    named = [kubecalls.Rule(frozenset({""}), frozenset({"pods"}), frozenset({"list", "get"}),
                            named_only=True, cluster_wide=True)]
    assert not kubecalls.allows(named, kubecalls.Request("list", "", "pods", namespaced=True))
