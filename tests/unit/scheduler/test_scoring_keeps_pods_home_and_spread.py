from __future__ import annotations

from ipam.models import NodeName, PoolName
from scheduler.filtering import AddressView
from scheduler.models import Resources
from scheduler.scoring import ScoreInputs, pick, score_node, score_nodes
from tests.unit.scheduler.helpers import node


def test_home_node_is_the_only_good_one() -> None:
    nodes = [node("a"), node("b"), node("home")]
    scores = dict(score_nodes(nodes, ScoreInputs(home=NodeName("home"))))
    assert scores == {"a": 0, "b": 0, "home": 10}


def test_first_placement_prefers_free_addresses_in_claimed_blocks() -> None:
    view = AddressView(pool=PoolName("p"), free_in_node_blocks={NodeName("b"): 3},
                       unclaimed_blocks=4, free_total=100)
    nodes = [node("a"), node("b"), node("c")]
    chosen = pick(nodes, ScoreInputs(addresses=view, sticky=True))
    assert chosen is not None and chosen.name == "b"
    # With the pool's blocks all claimed, a node without a block would borrow a /32.
    full = AddressView(pool=PoolName("p"), free_in_node_blocks={NodeName("b"): 1},
                       unclaimed_blocks=0, free_total=1)
    assert score_node(node("b"), ScoreInputs(addresses=full, sticky=True)) > score_node(
        node("a"), ScoreInputs(addresses=full, sticky=True))


def test_replicas_of_one_statefulset_spread() -> None:
    view = AddressView(pool=PoolName("p"), free_in_node_blocks={NodeName("a"): 5,
                                                               NodeName("b"): 5},
                       unclaimed_blocks=2, free_total=100)
    inputs = ScoreInputs(addresses=view, sticky=True,
                         replicas_on={NodeName("a"): 2, NodeName("b"): 0})
    chosen = pick([node("a"), node("b")], inputs)
    assert chosen is not None and chosen.name == "b"


def test_least_requested_breaks_ties_and_scores_stay_in_range() -> None:
    used = {NodeName("a"): Resources(3000, 0), NodeName("b"): Resources(500, 0)}
    inputs = ScoreInputs(used=used)
    chosen = pick([node("a", cpu="4"), node("b", cpu="4")], inputs)
    assert chosen is not None and chosen.name == "b"
    for _, s in score_nodes([node("a"), node("b")], inputs):
        assert 0 <= s <= 10
    assert pick([], inputs) is None
