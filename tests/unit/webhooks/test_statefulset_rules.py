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


def facts(**kw: Any) -> PoolFacts:
    return PoolFacts(exists=True, pools=["pool-a"], geometry=GEO,
                     excluded=frozenset({0, 255}), **kw)


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
    v = judge_statefulset(plan_of(), PoolFacts(exists=False, pools=["pool-a", "pool-b"]))
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
    v = judge_statefulset(p, facts(held={2: Held(pool="default", address="10.20.0.40")}))
    assert "ordinal 2 already holds 10.20.0.40" in v.message


def test_reservation_left_in_another_pool() -> None:
    p = plan_of(annotations={"stickyip.io/pool": "pool-b"})
    v = judge_statefulset(p, facts(free=100, held={0: Held(pool="pool-a", address="10.1.0.5")}))
    assert "still holds a reservation in pool 'pool-a'" in v.message


def test_capacity_counts_what_is_already_held() -> None:
    p = plan_of(replicas=5)
    assert not judge_statefulset(p, facts(free=2)).allowed
    held = {i: Held(pool="default", address=f"10.20.0.{i + 1}") for i in range(3)}
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
