"""A node that appears or recovers queues the pods waiting for a node; the first list
of nodes, while the caches sync, does not scan the pods once per node (the pods are
queued once, when the caches are synced)."""

from __future__ import annotations

from typing import Any

from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.scheduling import Scheduler
from tests.unit.scheduler.helpers import node_json, pod_json


def scheduler() -> tuple[Scheduler, ClusterCache, list[int]]:
    cache = ClusterCache()
    sched = Scheduler(SchedulerSettings(), cache, ipam=Any, kube=None)  # type: ignore[arg-type]
    scans: list[int] = []
    real = sched.enqueue_pending

    def counting() -> None:
        scans.append(len(cache.pods))
        real()

    sched.enqueue_pending = counting  # type: ignore[method-assign]
    return sched, cache, scans


def queued(sched: Scheduler) -> set[str]:
    return {str(u) for u in sched._queued}


def test_the_first_node_list_scans_no_pods_and_every_waiting_pod_is_queued() -> None:
    sched, cache, scans = scheduler()
    cache.replace("pods", [pod_json(f"p{i}") for i in range(50)])
    cache.replace("nodes", [node_json(f"n{i}") for i in range(200)])
    assert scans == []
    assert queued(sched) == {f"uid-p{i}" for i in range(50)}


def test_after_the_sync_a_new_or_recovered_node_queues_waiting_pods() -> None:
    sched, cache, scans = scheduler()
    cache.replace("pods", [pod_json("p0")])
    cache.replace("nodes", [node_json("n0", ready=False)])
    sched._queued.clear()
    scans.clear()
    cache.apply("nodes", "MODIFIED", node_json("n0", ready=True))
    assert scans == [1] and queued(sched) == {"uid-p0"}
    sched._queued.clear()
    cache.apply("nodes", "ADDED", node_json("n1"))
    assert scans == [1, 1] and queued(sched) == {"uid-p0"}
