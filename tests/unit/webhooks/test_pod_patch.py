"""The mutating decision: what a pod asks for, and the patch that pins it home
(which ordinal a pod is: tests/unit/ipam/test_sticky_contract.py)."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import jsonpatch
import pytest

from ipam.contract import PodRequest
from tests.support.admission import statefulset, statefulset_pod
from webhooks.mutation import Home, pin, target_of
from webhooks.review import Verdict

HOME = Home(address="10.20.0.11", node="node-3", epoch=2)
REQ = {"key": "metadata.name", "operator": "In", "values": ["node-3"]}


def apply(pod: dict[str, Any], verdict: Verdict) -> dict[str, Any]:
    assert verdict.allowed, verdict.message
    out: dict[str, Any] = jsonpatch.apply_patch(pod, list(verdict.patch))
    return out


def pod_of(ordinal: int = 1, **kw: Any) -> dict[str, Any]:
    return statefulset_pod(statefulset("web", **kw), ordinal)


def terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    na = pod["spec"]["affinity"]["nodeAffinity"]
    result: list[dict[str, Any]] = na["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    return result


def test_inconsistent_ordinals_are_refused() -> None:
    pod = pod_of(1)
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = "5"
    verdict = target_of(pod, namespace="prod", request_name="web-1")
    assert isinstance(verdict, Verdict) and not verdict.allowed
    assert "inconsistent ordinals" in verdict.message


def test_not_opted_in_is_left_alone() -> None:
    pod = pod_of(0, opt_in=False)
    verdict = target_of(pod, namespace="prod", request_name="web-0")
    assert verdict == Verdict.allow()


def test_opted_in_pod_without_statefulset_gets_warning_only() -> None:
    pod = pod_of(0)
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                           "name": "x", "uid": "u", "controller": True}]
    verdict = target_of(pod, namespace="prod", request_name="web-0")
    assert isinstance(verdict, Verdict) and verdict.allowed and not verdict.patch
    assert verdict.warnings and all(len(w) < 120 for w in verdict.warnings)


def test_explicit_address_for_ordinal() -> None:
    pod = pod_of(1, annotations={"stickyip.io/ips": "10.20.0.10-10.20.0.12",
                                 "stickyip.io/pool": "pool-a", "stickyip.io/retain": "24h",
                                 "stickyip.io/node-failure": "wait"})
    t = target_of(pod, namespace="prod", request_name="web-1")
    assert isinstance(t, PodRequest)
    assert t.addresses == (ipaddress.IPv4Address("10.20.0.11"),)
    assert t.request.pool == "pool-a" and t.request.retain == 86400.0
    assert t.request.policy is not None and t.request.policy.value == "wait"


def test_ordinal_beyond_address_list_is_refused_with_fix() -> None:
    pod = pod_of(3, annotations={"stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    verdict = target_of(pod, namespace="prod", request_name="web-3")
    assert isinstance(verdict, Verdict) and not verdict.allowed
    assert "add addresses" in verdict.message and "3 replicas" in verdict.message


def test_bad_annotations_are_refused_naming_each() -> None:
    pod = pod_of(0, annotations={"stickyip.io/retain": "soon",
                                 "stickyip.io/node-failure": "panic"})
    verdict = target_of(pod, namespace="prod", request_name="web-0")
    assert isinstance(verdict, Verdict) and verdict.code == 422
    assert "stickyip.io/retain" in verdict.message and "'wait'" in verdict.message


def test_patch_adds_annotations_and_affinity() -> None:
    pod = pod_of(1)
    out = apply(pod, pin(pod, HOME))
    ann = out["metadata"]["annotations"]
    assert ann["stickyip.io/ip"] == "10.20.0.11"
    assert ann["stickyip.io/node"] == "node-3"
    assert ann["stickyip.io/epoch"] == "2"
    assert terms(out) == [{"matchFields": [REQ]}]
    assert out["spec"]["schedulerName"] == "default-scheduler"


def test_annotation_keys_are_pointer_escaped() -> None:
    verdict = pin(pod_of(1), HOME)
    paths = [op["path"] for op in verdict.patch]
    assert "/metadata/annotations/stickyip.io~1ip" in paths


def test_pod_without_annotations_gets_the_whole_map() -> None:
    pod = pod_of(1)
    del pod["metadata"]["annotations"]
    out = apply(pod, pin(pod, HOME))
    assert out["metadata"]["annotations"] == {"stickyip.io/ip": "10.20.0.11",
                                              "stickyip.io/node": "node-3",
                                              "stickyip.io/epoch": "2"}


def test_existing_terms_each_get_the_home_node() -> None:
    pod = pod_of(1)
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
    pod["spec"]["affinity"] = {
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [zone]},
                {"matchExpressions": [zone], "matchFields": [
                    {"key": "metadata.name", "operator": "NotIn", "values": ["node-9"]}]},
            ]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [zone]}}],
        },
    }
    out = apply(pod, pin(pod, HOME))
    got = terms(out)
    assert got[0] == {"matchExpressions": [zone], "matchFields": [REQ]}
    assert got[1]["matchFields"][-1] == REQ and len(got[1]["matchFields"]) == 2
    assert out["spec"]["affinity"]["podAntiAffinity"] == pod["spec"]["affinity"][
        "podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in out["spec"]["affinity"][
        "nodeAffinity"]


def test_affinity_without_node_affinity_is_merged() -> None:
    pod = pod_of(1)
    pod["spec"]["affinity"] = {"podAffinity": {}}
    out = apply(pod, pin(pod, HOME))
    assert out["spec"]["affinity"]["podAffinity"] == {}
    assert terms(out) == [{"matchFields": [REQ]}]


@pytest.mark.parametrize("scheduler", ["", "stickyip-scheduler"])
def test_reinvocation_yields_no_change(scheduler: str) -> None:
    pod = pod_of(1)
    pod["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}
    once = apply(pod, pin(pod, HOME, scheduler_name=scheduler))
    again = pin(once, HOME, scheduler_name=scheduler)
    assert again.allowed and again.patch == ()
    assert apply(once, again) == once


def test_scheduler_name_replaces_default_only() -> None:
    pod = pod_of(1)
    out = apply(pod, pin(pod, HOME, scheduler_name="stickyip-scheduler"))
    assert out["spec"]["schedulerName"] == "stickyip-scheduler"
    custom = copy.deepcopy(pod)
    custom["spec"]["schedulerName"] = "volcano"
    verdict = pin(custom, HOME, scheduler_name="stickyip-scheduler")
    assert apply(custom, verdict)["spec"]["schedulerName"] == "volcano"
    assert any("volcano" in w for w in verdict.warnings)


def test_unknown_home_adds_no_affinity_and_drops_stale_annotations() -> None:
    pod = pod_of(1)
    pod["metadata"]["annotations"]["stickyip.io/ip"] = "10.9.9.9"
    pod["metadata"]["annotations"]["stickyip.io/node"] = "elsewhere"
    out = apply(pod, pin(pod, Home()))
    assert "stickyip.io/ip" not in out["metadata"]["annotations"]
    assert "stickyip.io/node" not in out["metadata"]["annotations"]
    assert "affinity" not in out["spec"]


def test_address_without_home_node_sets_ip_only() -> None:
    pod = pod_of(1)
    out = apply(pod, pin(pod, Home(address="10.20.0.11", epoch=1)))
    assert out["metadata"]["annotations"]["stickyip.io/ip"] == "10.20.0.11"
    assert "stickyip.io/node" not in out["metadata"]["annotations"]
    assert "affinity" not in out["spec"]


def test_node_name_elsewhere_is_refused() -> None:
    pod = pod_of(1)
    pod["spec"]["nodeName"] = "node-1"
    verdict = pin(pod, HOME)
    assert not verdict.allowed and "remove spec.nodeName" in verdict.message
