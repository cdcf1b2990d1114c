"""The validating StatefulSet decision: syntax, replicas against listed addresses,
changes refused on UPDATE, and judgement against store facts."""

from __future__ import annotations

import ipaddress
from typing import Any

from ipam.ranges import geometry
from tests.support.admission import statefulset
from webhooks.review import AdmissionRequest, Verdict
from webhooks.validation import (
    Held,
    PoolFact,
    PoolFacts,
    StatefulSetPlan,
    judge_pod_address,
    judge_statefulset,
    read_statefulset,
)

GEO = geometry("10.20.0.0/24", 28)


def request(obj: dict[str, Any], old: dict[str, Any] | None = None) -> AdmissionRequest:
    return AdmissionRequest(uid="u", operation="UPDATE" if old else "CREATE",
                            namespace="prod", name=obj["metadata"]["name"], object=obj,
                            old_object=old, dry_run=False)


def plan_of(**kw: Any) -> StatefulSetPlan:
    p = read_statefulset(request(statefulset("db", **kw)))
    assert isinstance(p, StatefulSetPlan)
    return p


GEO6 = geometry("fd00:20::/120", 124)


def facts(*, free: int = 250, **kw: Any) -> PoolFacts:
    """Every pool the tests name exists: IPv4 ones on GEO, pool-v6 on GEO6."""
    v4 = PoolFact(geometry=GEO, excluded=frozenset({0, 255}), free=free)
    pools = dict.fromkeys(("default", "pool-a", "pool-b", "pool-c"), v4)
    pools["pool-v6"] = PoolFact(geometry=GEO6, excluded=frozenset({0}), free=free)
    return PoolFacts(known=sorted(pools), pools=pools, **kw)


def held4(pool: str, address: str) -> Held:
    return Held(pools=(pool,), addresses={4: address})


def refused(v: StatefulSetPlan | Verdict) -> Verdict:
    assert isinstance(v, Verdict) and not v.allowed, v
    return v


def test_not_opted_in_is_allowed_but_stray_annotations_warned() -> None:
    v = read_statefulset(request(statefulset("db", opt_in=False,
                                             annotations={"stickyip.io/pool": "a"})))
    assert isinstance(v, Verdict) and v.allowed and v.warnings


def test_label_value_must_be_true_or_false() -> None:
    sts = statefulset("db")
    sts["spec"]["template"]["metadata"]["labels"]["stickyip.io/fixed-ip"] = "yes"
    assert 'set it to "true"' in refused(read_statefulset(request(sts))).message


def test_syntax_errors_name_the_fix() -> None:
    v = refused(read_statefulset(request(statefulset("db", annotations={
        "stickyip.io/ips": "10.20.0.10-10.20.0.5", "stickyip.io/pool": "Bad_Pool"}))))
    assert v.code == 422 and "ends before it starts" in v.message and "pool" in v.message


def test_too_few_addresses_for_replicas() -> None:
    v = refused(read_statefulset(request(statefulset("db", replicas=3, annotations={
        "stickyip.io/ips": "10.20.0.10,10.20.0.11"}))))
    assert "add 1 address(es)" in v.message and "set replicas to 2" in v.message


def test_pool_change_refused_with_how() -> None:
    old = statefulset("db", annotations={"stickyip.io/pool": "pool-a"})
    new = statefulset("db", annotations={"stickyip.io/pool": "pool-b"})
    v = refused(read_statefulset(request(new, old)))
    assert v.code == 409 and "stickyip ipam release prod/db/ORDINAL" in v.message


def test_address_list_may_grow_at_end_only() -> None:
    old = statefulset("db", annotations={"stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    grown = statefulset("db", replicas=4,
                        annotations={"stickyip.io/ips": "10.20.0.10-10.20.0.13"})
    assert isinstance(read_statefulset(request(grown, old)), StatefulSetPlan)
    moved = statefulset("db", annotations={"stickyip.io/ips": "10.20.0.20-10.20.0.22"})
    assert "only grow or shrink at its end" in refused(
        read_statefulset(request(moved, old))).message
    dropped = statefulset("db")
    refused(read_statefulset(request(dropped, old)))


def test_retain_change_is_allowed() -> None:
    old = statefulset("db", annotations={"stickyip.io/retain": "0s"})
    new = statefulset("db", annotations={"stickyip.io/retain": "forever"})
    assert isinstance(read_statefulset(request(new, old)), StatefulSetPlan)


def test_missing_pool_lists_known_pools() -> None:
    v = judge_statefulset(plan_of(), PoolFacts(known=["pool-a", "pool-b"]))
    assert not v.allowed and "'default' does not exist" in v.message and "pool-b" in v.message


def test_addresses_outside_or_excluded() -> None:
    p = plan_of(annotations={"stickyip.io/pool": "pool-a",
                             "stickyip.io/ips": "10.20.0.0,10.30.0.1,10.20.0.5"})
    v = judge_statefulset(p, facts(owners={"10.20.0.5": None}))
    assert not v.allowed and "excluded" in v.message and "outside pool" in v.message


def test_address_held_by_another_owner() -> None:
    p = plan_of(annotations={"stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    v = judge_statefulset(p, facts(owners={"10.20.0.10": "sts/prod/db/0",
                                           "10.20.0.11": "sts/prod/other/0"}))
    assert not v.allowed and v.code == 409
    assert "10.20.0.11 (ordinal 1) is held by sts/prod/other/0" in v.message
    assert "10.20.0.10" not in v.message


def test_ordinal_already_holding_another_address() -> None:
    p = plan_of(annotations={"stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    v = judge_statefulset(p, facts(held={2: held4("default", "10.20.0.40")}))
    assert "ordinal 2 already holds 10.20.0.40" in v.message


def test_reservation_left_in_another_pool() -> None:
    p = plan_of(annotations={"stickyip.io/pool": "pool-b"})
    v = judge_statefulset(p, facts(free=100, held={0: held4("pool-a", "10.1.0.5")}))
    assert "still holds a reservation in pool 'pool-a'" in v.message


def test_capacity_counts_what_is_already_held() -> None:
    p = plan_of(replicas=5)
    assert not judge_statefulset(p, facts(free=2)).allowed
    held = {i: held4("default", f"10.20.0.{i + 1}") for i in range(3)}
    assert judge_statefulset(p, facts(free=2, held=held)).allowed
    v = judge_statefulset(p, facts(free=1, held=held))
    assert not v.allowed and v.code == 403 and "1 free address(es)" in v.message


def test_pod_address_judgement() -> None:
    a = ipaddress.IPv4Address("10.20.0.10")
    assert judge_pod_address(a, owner=None, own=None).allowed
    assert judge_pod_address(a, owner="sts/prod/db/0", own="sts/prod/db/0").allowed
    assert not judge_pod_address(a, owner="sts/prod/db/0", own="sts/prod/db/1").allowed
    assert not judge_pod_address(a, owner="eph/abc/eth0", own=None).allowed


def test_scale_down_needs_no_check_and_scale_up_does() -> None:
    from tests.support.admission import scale_review
    from webhooks.review import SCALE, STATEFULSET, parse_review
    from webhooks.validation import scale_up, with_replicas

    def req(new: int, old: int) -> AdmissionRequest:
        import json

        return parse_review(json.dumps(scale_review("db", replicas=new, old_replicas=old))
                            .encode(), STATEFULSET, SCALE)

    down = req(2, 5)
    assert down.kind == "Scale" and down.sub_resource == "scale"
    assert scale_up(down) == Verdict.allow()
    assert scale_up(req(7, 5)) == 7
    sts = statefulset("db", replicas=5)
    grown = with_replicas(sts, 7)
    assert grown["spec"]["replicas"] == 7 and sts["spec"]["replicas"] == 5
    assert grown["spec"]["template"] is sts["spec"]["template"]


def test_dual_stack_needs_one_pool_per_family() -> None:
    p = plan_of(annotations={"stickyip.io/pool": "pool-a,pool-b"})
    v = judge_statefulset(p, facts())
    assert not v.allowed and "both IPv4" in v.message
    ok = plan_of(annotations={"stickyip.io/pool": "pool-a,pool-v6"})
    assert judge_statefulset(ok, facts()).allowed


def test_dual_stack_pairs_are_checked_per_family() -> None:
    p = plan_of(annotations={"stickyip.io/pool": "pool-a,pool-v6",
                             "stickyip.io/ips": "10.20.0.10-10.20.0.12+fd00:20::10-fd00:20::12"})
    assert judge_statefulset(p, facts()).allowed
    v = judge_statefulset(p, facts(owners={"fd00:20::11": "sts/prod/other/0"}))
    assert not v.allowed and "fd00:20::11 (ordinal 1) is held by sts/prod/other/0" in v.message
    outside = plan_of(replicas=1, annotations={"stickyip.io/pool": "pool-a,pool-v6",
                                               "stickyip.io/ips": "10.20.0.10+fd00:99::1"})
    v = judge_statefulset(outside, facts())
    assert not v.allowed and "fd00:99::1 (ordinal 0) is outside pool 'pool-v6'" in v.message


def test_an_ipv6_address_needs_an_ipv6_pool() -> None:
    p = plan_of(replicas=1, annotations={"stickyip.io/pool": "pool-a",
                                         "stickyip.io/ips": "fd00:20::10"})
    v = judge_statefulset(p, facts())
    assert not v.allowed and "names no IPv6 pool" in v.message


def test_capacity_counts_both_families() -> None:
    p = plan_of(replicas=3, annotations={"stickyip.io/pool": "pool-a,pool-v6"})
    v4_full = facts(free=2)
    assert not judge_statefulset(p, v4_full).allowed
    # ordinals 0 and 1 already hold their IPv4 address but no IPv6 one yet
    held = {i: held4("pool-a", f"10.20.0.{i + 1}") for i in range(2)}
    roomy4 = facts(free=2, held=held)
    v = judge_statefulset(p, roomy4)
    assert not v.allowed and "pool 'pool-v6' has 2 free" in v.message
    both = {i: Held(pools=("pool-a", "pool-v6"),
                    addresses={4: f"10.20.0.{i + 1}", 6: f"fd00:20::{i + 1}"}) for i in range(2)}
    assert judge_statefulset(p, facts(free=1, held=both)).allowed
