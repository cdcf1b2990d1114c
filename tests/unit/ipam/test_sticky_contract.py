"""The sticky contract (ipam/contract.py): one table for every case the webhook,
the scheduler and the node agent used to decide by their own rules.

Where those copies disagreed, the ``was`` column says who decided otherwise
before: the one rule now is the webhook's careful one (an ``apps/*``
StatefulSet ownerReference, and every ordinal source present must agree).
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from ipam.contract import (
    ANN_IPS,
    ANN_NODE_FAILURE,
    ANN_POOL,
    ANN_RETAIN,
    DEFAULT_POOL,
    LABEL_FIXED_IP,
    LABEL_POD_INDEX,
    LABEL_POD_NAME,
    MAX_ADDRESSES,
    InvalidAnnotations,
    NodeFailurePolicy,
    NotEnoughAddresses,
    ReservationKey,
    Slot,
    SlotUnclear,
    ephemeral_owner,
    format_ips,
    label_problem,
    opted_in,
    pod_request,
    pool_of,
    read_request,
    slot_of,
    sticky_owner,
    written_annotations,
)
from ipam.errors import InvalidRequest
from ipam.ranges import FOREVER

OWNER = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u1",
         "controller": True}


def pod(name: str | None = "web-2", *, namespace: str | None = "prod",
        owners: list[dict[str, Any]] | None = None, index: str | None = "2",
        pod_name: str | None = "web-2", fixed: str | None = "true",
        annotations: dict[str, Any] | None = None) -> dict[str, Any]:
    """A StatefulSet pod as the StatefulSet controller writes it."""
    labels: dict[str, Any] = {"app": "web"}
    if index is not None:
        labels[LABEL_POD_INDEX] = index
    if pod_name is not None:
        labels[LABEL_POD_NAME] = pod_name
    if fixed is not None:
        labels[LABEL_FIXED_IP] = fixed
    meta: dict[str, Any] = {"labels": labels, "annotations": dict(annotations or {}),
                            "ownerReferences": copy.deepcopy([OWNER] if owners is None
                                                             else owners)}
    if name is not None:
        meta["name"] = name
    if namespace is not None:
        meta["namespace"] = namespace
    return {"metadata": meta, "spec": {}}


WEB2 = Slot(namespace="prod", statefulset="web", ordinal=2, pod="web-2")

# (case, pod, keyword arguments, expected Slot | None | "unclear: <needle>", was)
SLOT_CASES: list[tuple[str, dict[str, Any], dict[str, str], Any, str]] = [
    ("owner, name and both labels agree", pod(), {}, WEB2, ""),
    ("name not yet set: pod-index label and the request's name",
     pod(name=None), {"name": "web-2"}, WEB2, ""),
    ("name not set anywhere: pod-index label alone", pod(name=None, pod_name=None), {},
     Slot(namespace="prod", statefulset="web", ordinal=2, pod="web-2"),
     "scheduler and agent needed the name"),
    ("no pod-index label (Kubernetes before 1.28): the name",
     pod(index=None), {}, WEB2, "agent's podinfo split the name only as a fallback"),
    ("only the name", pod(index=None, pod_name=None), {}, WEB2, ""),
    ("the request's namespace wins", pod(namespace="other"), {"namespace": "prod"}, WEB2,
     ""),
    ("namespace from metadata", pod(), {}, WEB2, ""),
    ("no namespace anywhere", pod(namespace=None), {}, "unclear: no namespace", ""),
    ("no ownerReference: not a StatefulSet pod", pod(owners=[]), {}, None,
     "scheduler accepted pod-name label == name without an owner; agent used the name"),
    ("owned by a ReplicaSet", pod(owners=[{**OWNER, "kind": "ReplicaSet"}]), {}, None,
     "agent used the name alone"),
    ("a StatefulSet kind of another API group",
     pod(owners=[{**OWNER, "apiVersion": "example.com/v1"}]), {}, None,
     "scheduler and agent accepted any apiVersion"),
    ("the controller reference wins",
     pod(name="web-2", owners=[{**OWNER, "name": "other", "controller": False},
                               {**OWNER, "name": "web", "controller": True}]), {}, WEB2,
     "scheduler took the first StatefulSet reference"),
    ("pod-index label disagrees with the name", pod(index="5"), {},
     "unclear: inconsistent ordinals", "agent's podinfo trusted the label, agent the name"),
    ("pod-name label disagrees", pod(pod_name="web-7"), {},
     "unclear: inconsistent ordinals", "scheduler and agent ignored it"),
    ("a name that is not STATEFULSET-N and no labels",
     pod(name="web", index=None, pod_name=None), {}, "unclear: expected a name",
     "agent: not sticky at all"),
    ("a name of another StatefulSet", pod(name="db-2", index=None, pod_name=None), {},
     "unclear: expected a name", "scheduler: not a StatefulSet pod"),
    ("a StatefulSet name with digits and hyphens",
     pod(name="db-2-3", index="3", pod_name="db-2-3",
         owners=[{**OWNER, "name": "db-2"}]), {},
     Slot(namespace="prod", statefulset="db-2", ordinal=3, pod="db-2-3"), ""),
    ("an ordinal of ten digits is no ordinal",
     pod(name="web-1234567890", index=None, pod_name=None), {},
     "unclear: expected a name", "scheduler's regex took any length"),
    ("a non-numeric pod-index label is ignored", pod(index="two"), {}, WEB2, ""),
]


@pytest.mark.parametrize(("case", "obj", "kw", "want", "was"), SLOT_CASES,
                         ids=[c[0] for c in SLOT_CASES])
def test_slot_of(case: str, obj: dict[str, Any], kw: dict[str, str], want: Any,
                 was: str) -> None:
    if isinstance(want, str):
        needle = want.removeprefix("unclear: ")
        with pytest.raises(SlotUnclear, match=needle):
            slot_of(obj, **kw)
    else:
        assert slot_of(obj, **kw) == want


def test_slot_key_and_pod_names() -> None:
    key = WEB2.key
    assert key == ReservationKey.of("prod", "web", 2)
    assert key.owner == sticky_owner("prod", "web", 2) == "sts/prod/web/2"
    assert key.pod_name == "web-2" and key.pod_ref == "prod/web-2"
    assert str(key) == "prod/web/2"
    assert ReservationKey.parse("prod/web/2") == ReservationKey.parse("sts/prod/web/2") == key


@pytest.mark.parametrize("text", ["prod/web", "prod/web/x", "Prod/web/1", "a/b/c/d/e", ""])
def test_bad_reservation_names_say_the_form(text: str) -> None:
    with pytest.raises(InvalidRequest, match=r"NAMESPACE/STATEFULSET/ORDINAL|invalid"):
        ReservationKey.parse(text)


def test_ephemeral_owner_format_and_limits() -> None:
    assert ephemeral_owner("abc123", "eth0") == "eph/abc123/eth0"
    with pytest.raises(InvalidRequest):
        ephemeral_owner("bad/id")
    with pytest.raises(InvalidRequest):
        ephemeral_owner("abc", "x" * 16)


@pytest.mark.parametrize(("labels", "opted", "problem"), [
    ({LABEL_FIXED_IP: "true"}, True, False),
    ({LABEL_FIXED_IP: "false"}, False, False),
    ({}, False, False),
    ({LABEL_FIXED_IP: "True"}, False, True),
    ({LABEL_FIXED_IP: "yes"}, False, True),
])
def test_opt_in_label(labels: dict[str, str], opted: bool, problem: bool) -> None:
    assert opted_in(labels) is opted
    assert (label_problem(labels) is not None) is problem


def test_request_reads_every_annotation() -> None:
    req = read_request({ANN_POOL: " prod-a ", ANN_IPS: "10.20.0.10-10.20.0.12,10.20.0.20",
                        ANN_RETAIN: "1h30m", ANN_NODE_FAILURE: "wait"})
    assert req.pool == "prod-a" and req.pool_explicit
    assert req.addresses == tuple((ipaddress.IPv4Address(a),) for a in (
        "10.20.0.10", "10.20.0.11", "10.20.0.12", "10.20.0.20"))
    assert req.retain == 5400 and req.policy is NodeFailurePolicy.WAIT
    assert read_request({ANN_RETAIN: "forever"}).retain == FOREVER


def test_request_defaults_say_not_given() -> None:
    # The scheduler used to default the policy to migrate, overwriting a recorded
    # "wait" when the annotation went away; None keeps what is recorded.
    req = read_request({})
    assert req.pools == (DEFAULT_POOL,) and req.pool == DEFAULT_POOL and not req.pool_explicit
    assert req.addresses is None and req.retain is None and req.policy is None


def test_every_mistake_is_reported_at_once() -> None:
    with pytest.raises(InvalidAnnotations) as err:
        read_request({ANN_POOL: "Bad_Pool", ANN_IPS: "10.0.0.x", ANN_RETAIN: "soon",
                      ANN_NODE_FAILURE: "panic"})
    problems = err.value.problems
    assert len(problems) == 4
    for needle in (ANN_POOL, ANN_IPS, ANN_RETAIN, "'migrate'"):
        assert any(needle in p for p in problems), needle


def test_non_string_annotations_are_refused() -> None:
    with pytest.raises(InvalidAnnotations, match="must be a string"):
        read_request({ANN_RETAIN: 5})


def test_address_list_limit_is_one_for_everyone() -> None:
    # The scheduler accepted 65,536 addresses, the webhook 4,096.
    last = ipaddress.IPv4Address("10.0.0.0") + MAX_ADDRESSES
    with pytest.raises(InvalidAnnotations, match="longer than"):
        read_request({ANN_IPS: f"10.0.0.0-{last}"})
    ok = read_request({ANN_IPS: f"10.0.0.0-{last - 1}"})
    assert ok.addresses is not None and len(ok.addresses) == MAX_ADDRESSES


def test_pod_request_joins_slot_and_listed_address() -> None:
    got = pod_request(pod(annotations={ANN_IPS: "10.20.0.10-10.20.0.12", ANN_POOL: "p"}))
    assert got is not None
    assert got.key == ReservationKey.of("prod", "web", 2) and got.pool == "p"
    assert got.addresses == (ipaddress.IPv4Address("10.20.0.12"),)


def test_pod_request_short_list_says_how_to_fix() -> None:
    with pytest.raises(NotEnoughAddresses, match=r"ordinal 2 has none.*scale to 2 replicas"):
        pod_request(pod(annotations={ANN_IPS: "10.20.0.10-10.20.0.11"}))


def test_pod_request_is_none_for_pods_that_do_not_ask() -> None:
    assert pod_request(pod(fixed=None)) is None
    assert pod_request(pod(owners=[])) is None


def test_pool_of_falls_back_to_the_default() -> None:
    assert pool_of({ANN_POOL: "prod-a"}) == "prod-a"
    assert pool_of({ANN_POOL: "Bad Pool"}) == DEFAULT_POOL
    assert pool_of({}) == DEFAULT_POOL


# ------------------------------------------------------------------ dual-stack


def test_an_ipv6_list_is_a_single_stack_ipv6_request() -> None:
    req = read_request({ANN_POOL: "v6", ANN_IPS: "fd00:20::10-fd00:20::12"})
    assert req.pools == ("v6",)
    assert req.addresses == tuple((ipaddress.IPv6Address(f"fd00:20::{i}"),)
                                  for i in ("10", "11", "12"))


def test_dual_stack_pairs_give_each_ordinal_one_of_each_family_ipv4_first() -> None:
    req = read_request({ANN_POOL: "prod-a,prod-a-v6",
                        ANN_IPS: "fd00:20::9+10.20.0.9,"
                                 "10.20.0.10-10.20.0.11+fd00:20::10-fd00:20::11"})
    assert req.pools == ("prod-a", "prod-a-v6")
    v4, v6 = ipaddress.IPv4Address, ipaddress.IPv6Address
    assert req.addresses == (
        (v4("10.20.0.9"), v6("fd00:20::9")),
        (v4("10.20.0.10"), v6("fd00:20::10")),
        (v4("10.20.0.11"), v6("fd00:20::11")))
    assert req.addresses_for(2, statefulset="db") == (v4("10.20.0.11"), v6("fd00:20::11"))
    assert len(req.listed(2)) == 4


def test_dual_stack_without_addresses_names_two_pools() -> None:
    req = read_request({ANN_POOL: "prod-a, prod-a-v6"})
    assert req.pools == ("prod-a", "prod-a-v6") and req.addresses is None
    assert pool_of({ANN_POOL: "prod-a,prod-a-v6"}) == "prod-a"


@pytest.mark.parametrize(("ann", "needle"), [
    ({ANN_POOL: "a,a"}, "twice"),
    ({ANN_POOL: "a,b,c"}, "names 3 pools"),
    ({ANN_POOL: "a,b", ANN_IPS: "10.0.0.1,fd00::1"}, "give each ordinal a pair"),
    ({ANN_POOL: "a,b", ANN_IPS: "10.0.0.1+fd00::1,10.0.0.2"}, "mixes dual-stack pairs"),
    ({ANN_POOL: "a,b", ANN_IPS: "10.0.0.1+10.0.0.2"}, "two IPv4 addresses"),
    ({ANN_POOL: "a,b", ANN_IPS: "10.0.0.1-10.0.0.3+fd00::1-fd00::2"}, "as long"),
    ({ANN_POOL: "a", ANN_IPS: "10.0.0.1+fd00::1"}, "one pool per family"),
    ({ANN_POOL: "a,b", ANN_IPS: "10.0.0.1+fd00::1,10.0.0.1+fd00::2"}, "appears twice"),
    ({ANN_IPS: "10.0.0.1-fd00::9"}, "mixes IPv4 and IPv6"),
])
def test_dual_stack_mistakes_say_how_to_write_it(ann: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidAnnotations, match=needle):
        read_request(ann)


def test_ip_annotation_lists_ipv4_first() -> None:
    v4, v6 = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv6Address("fd00::1")
    assert format_ips([v6, v4]) == "10.0.0.1,fd00::1"
    assert written_annotations([v6, v4], "n1", 3) == {
        "stickyip.io/ip": "10.0.0.1,fd00::1", "stickyip.io/node": "n1", "stickyip.io/epoch": "3"}
