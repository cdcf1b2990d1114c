"""The inlined hot paths choose exactly what the plain definitions choose."""

from __future__ import annotations

import random

from ipam.models import NodeName, PoolName
from scheduler import filtering, scoring
from scheduler.filtering import AddressView
from scheduler.models import NodeInfo, PodInfo, PodUid, Resources, Taint


def _nodes(rng: random.Random) -> list[NodeInfo]:
    return [NodeInfo(name=NodeName(f"n{i}"),
                     allocatable=Resources(rng.choice([0, 4000, 8000]),
                                           rng.choice([0, 2**33, 2**34])),
                     ready=rng.random() > 0.1, unschedulable=rng.random() < 0.05,
                     taints=(Taint("gpu", "", "NoSchedule"),) if rng.random() < 0.1 else (),
                     labels={"zone": rng.choice(["a", "b"])})
            for i in range(rng.randint(1, 14))]


def _used(rng: random.Random, nodes: list[NodeInfo]) -> dict[NodeName, Resources]:
    """Resources already taken on about 60% of ``nodes``."""
    return {n.name: Resources(rng.randrange(0, 8000), rng.randrange(0, 2**34))
            for n in nodes if rng.random() < 0.6}


def test_pick_agrees_with_raw_scores() -> None:
    rng = random.Random(11)
    for trial in range(300):
        nodes = _nodes(rng)
        used = _used(rng, nodes)
        view = AddressView(pool=PoolName("p"), unclaimed_blocks=rng.choice([0, 3]),
                           free_in_node_blocks={n.name: rng.choice([0, 5]) for n in nodes}
                           ) if rng.random() < 0.8 else None
        inputs = scoring.ScoreInputs(
            addresses=view, used=used or None, sticky=trial % 2 == 0,
            replicas_on={n.name: rng.randrange(3) for n in nodes} if rng.random() < 0.5
            else None)
        assert scoring.pick(nodes, inputs) is scoring._pick_generic(nodes, inputs)


def test_filter_fast_path_agrees_with_check_node() -> None:
    rng = random.Random(5)
    for _ in range(300):
        nodes = _nodes(rng)
        used = _used(rng, nodes)
        pod = PodInfo(uid=PodUid("u"), namespace="ns", name="p",
                      requests=Resources(rng.choice([0, 500, 4000]),
                                         rng.choice([0, 2**30, 2**33])),
                      node_selector={"zone": "a"} if rng.random() < 0.3 else {})
        got = filtering.filter_nodes(pod, nodes, used=used)
        want = [n for n in nodes if filtering.check_node(
            pod, n, used=used.get(n.name, Resources())) is None]
        assert got.feasible == want
        assert set(got.failed) == {n.name for n in nodes} - {n.name for n in want}
