from __future__ import annotations

from typing import Any

import pytest

from ipam.models import NodeName, PoolName
from scheduler.filtering import (
    AddressView,
    bound_usage,
    check_node,
    feasible_target,
    filter_nodes,
    matches_affinity,
    summarize,
)
from scheduler.models import Resources
from tests.unit.scheduler.helpers import node, pod


def test_ready_schedulable_node_fits() -> None:
    assert check_node(pod("p"), node("n1"), used=None) is None


def test_not_ready_and_cordoned_nodes_fail() -> None:
    assert "NotReady" in (check_node(pod("p"), node("n1", ready=False), used=None) or "")
    assert "cordoned" in (check_node(pod("p"), node("n1", unschedulable=True), used=None) or "")


@pytest.mark.parametrize(("taint", "tolerations", "fits"), [
    ({"key": "gpu", "value": "yes", "effect": "NoSchedule"}, [], False),
    ({"key": "gpu", "value": "yes", "effect": "NoExecute"}, [], False),
    ({"key": "gpu", "value": "yes", "effect": "PreferNoSchedule"}, [], True),
    ({"key": "gpu", "value": "yes", "effect": "NoSchedule"},
     [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}], True),
    ({"key": "gpu", "value": "yes", "effect": "NoSchedule"},
     [{"key": "gpu", "operator": "Equal", "value": "no"}], False),
    ({"key": "gpu", "value": "yes", "effect": "NoSchedule"},
     [{"key": "gpu", "operator": "Exists"}], True),
    ({"key": "gpu", "value": "yes", "effect": "NoSchedule"},
     [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}], False),
    ({"key": "gpu", "value": "yes", "effect": "NoExecute"}, [{"operator": "Exists"}], True),
])
def test_taints_and_tolerations(taint: dict[str, str], tolerations: list[dict[str, str]],
                                fits: bool) -> None:
    reason = check_node(pod("p", tolerations=tolerations), node("n1", taints=[taint]), used=None)
    assert (reason is None) is fits
    if not fits:
        assert "gpu" in (reason or "")


def test_node_selector() -> None:
    p = pod("p", node_selector={"zone": "a"})
    assert check_node(p, node("n1", labels={"zone": "a", "x": "y"}), used=None) is None
    assert "nodeSelector" in (check_node(p, node("n2", labels={"zone": "b"}), used=None) or "")


@pytest.mark.parametrize(("expr", "labels", "fits"), [
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "b"}, True),
    ({"key": "zone", "operator": "In", "values": ["a"]}, {"zone": "c"}, False),
    ({"key": "zone", "operator": "In", "values": ["a"]}, {}, False),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "c"}, True),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "a"}, False),
    ({"key": "ssd", "operator": "Exists"}, {"ssd": ""}, True),
    ({"key": "ssd", "operator": "Exists"}, {}, False),
    ({"key": "ssd", "operator": "DoesNotExist"}, {}, True),
    ({"key": "ssd", "operator": "DoesNotExist"}, {"ssd": "1"}, False),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "16"}, True),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "8"}, False),
    ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"cores": "4"}, True),
    ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"cores": "many"}, False),
])
def test_required_affinity_operators(expr: dict[str, Any], labels: dict[str, str],
                                     fits: bool) -> None:
    p = pod("p", terms=[{"matchExpressions": [expr]}])
    assert (check_node(p, node("n1", labels=labels), used=None) is None) is fits


def test_affinity_terms_are_ored_and_expressions_anded() -> None:
    terms: list[Any] = [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                              {"key": "ssd", "operator": "Exists"}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]},
    ]
    p = pod("p", terms=terms)
    assert matches_affinity(p.required_terms, node("n1", labels={"zone": "a", "ssd": "1"}))
    assert not matches_affinity(p.required_terms, node("n2", labels={"zone": "a"}))
    assert matches_affinity(p.required_terms, node("special"))
    assert not matches_affinity([{}], node("n3"))  # an empty term matches nothing


def test_resources_count_what_is_bound() -> None:
    n = node("n1", cpu="2", memory="4Gi")
    bound = [pod("a", cpu="1500m", memory="1Gi", node_name="n1"),
             pod("b", cpu="1", memory="1Gi", node_name="n2"),
             pod("done", cpu="2", node_name="n1", phase="Succeeded")]
    used = bound_usage(bound)
    assert used[NodeName("n1")] == Resources(1500, 2**30)
    assert check_node(pod("p", cpu="500m", memory="3Gi"), n, used=used["n1"]) is None
    assert "cpu" in (check_node(pod("p", cpu="501m"), n, used=used["n1"]) or "")
    assert "memory" in (check_node(pod("p", memory="3073Mi"), n, used=used["n1"]) or "")


def test_pool_selector_and_address_shortage() -> None:
    nodes = [node("n1", labels={"rack": "1"}), node("n2", labels={"rack": "2"})]
    view = AddressView(pool=PoolName("p"), free_total=5, node_selector={"rack": "2"})
    res = filter_nodes(pod("p"), nodes, used={}, addresses=view, needs_address=True)
    assert [n.name for n in res.feasible] == ["n2"]
    assert "pool" in res.failed[NodeName("n1")]
    empty = AddressView(pool=PoolName("p"), free_total=0)
    res = filter_nodes(pod("p"), nodes, used={}, addresses=empty, needs_address=True)
    assert not res.feasible
    assert "no free address" in res.failed[NodeName("n1")]
    # A pod that takes no new address is not limited by the pool's free count.
    res = filter_nodes(pod("p"), nodes, used={}, addresses=empty, needs_address=False)
    assert len(res.feasible) == 2


def test_filter_stops_at_enough_and_rotates_start() -> None:
    nodes = [node(f"n{i}") for i in range(10)]
    res = filter_nodes(pod("p"), nodes, used={}, enough=3, start=8)
    assert [n.name for n in res.feasible] == ["n8", "n9", "n0"]
    assert res.examined == 3


def test_feasible_target_is_adaptive() -> None:
    assert feasible_target(50, 0) == 50
    assert feasible_target(5000, 0) == 500
    assert feasible_target(1000, 0) == 420
    assert feasible_target(5000, 100) == 5000
    assert feasible_target(200, 0) == 100


def test_summary_counts_reasons() -> None:
    nodes = [node("a", ready=False), node("b", ready=False), node("c", cpu="0")]
    res = filter_nodes(pod("p", cpu="1"), nodes, used={})
    text = summarize(res.failed, 3)
    assert text.startswith("0/3 nodes are available")
    assert "2 NotReady" in text and "1 insufficient cpu" in text
