from __future__ import annotations

from ipam.models import NodeName
from scheduler.cache import ClusterCache
from scheduler.models import PodUid
from scheduler.objects import pod_from_json
from tests.unit.scheduler.helpers import pod, pod_json


def test_update_before_the_binding_keeps_the_assumption() -> None:
    cache = ClusterCache()
    cache.upsert_pod(pod("db-0", sts="db", cpu="1"))
    uid = PodUid("uid-db-0")
    cache.assume(uid, NodeName("n1"))
    assert cache.used["n1"].cpu_m == 1000 and cache.replicas_on("default", "db") == {"n1": 1}
    # Our own annotation patch arrives before the binding: still counted on n1.
    cache.upsert_pod(pod("db-0", sts="db", cpu="1", annotations={"stickyip.io/ip": "10.0.0.1"}))
    assert cache.pods[uid].node_name == "n1" and cache.used["n1"].cpu_m == 1000
    # The binding shows up; a late "forget" (a 409 from a second attempt) must not undo it.
    cache.upsert_pod(pod("db-0", sts="db", cpu="1", node_name="n1"))
    cache.forget(uid)
    assert cache.pods[uid].node_name == "n1" and cache.used["n1"].cpu_m == 1000


def test_forget_undoes_a_failed_assumption() -> None:
    cache = ClusterCache()
    cache.upsert_pod(pod_from_json(pod_json("web", cpu="500m")))
    uid = PodUid("uid-web")
    cache.assume(uid, NodeName("n2"))
    cache.forget(uid)
    assert cache.pods[uid].node_name == "" and cache.used["n2"].cpu_m == 0
    cache.remove_pod(uid)
    assert uid not in cache.pods and not cache.assumed
