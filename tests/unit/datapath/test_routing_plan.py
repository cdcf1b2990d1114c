"""Routing decisions: desired routes from the IPAM view, fencing (by the view and by
reservation epoch), and the diff."""

from __future__ import annotations

import ipaddress

from datapath.routing import (
    LocalEndpoint,
    Placement,
    Route,
    announced,
    desired_routes,
    diff,
    to_fence,
    to_fence_by_epoch,
)
from ipam.models import BlockInfo, MigratedAddress, NodeName, PoolName, RoutingView

N = ipaddress.IPv4Network
A = ipaddress.IPv4Address


def _view(migrated: list[MigratedAddress] | None = None) -> RoutingView:
    blocks = [BlockInfo(pool=PoolName("p"), index=i, cidr=N(f"10.0.0.{i * 64}/26"),
                        node=NodeName(n), used=1)
              for i, n in enumerate(["n1", "n2", "n3"])]
    return RoutingView(blocks=blocks, migrated=migrated or [])


PEERS = {"n1": "192.168.0.1", "n2": "192.168.0.2", "n3": "192.168.0.3"}


def test_direct_mode_routes_blocks_to_their_node_and_blackholes_own() -> None:
    eps = [LocalEndpoint(A("10.0.0.5"), "sipaaa")]
    got = desired_routes(node="n1", view=_view(), endpoints=eps, peers=PEERS, mode="direct")
    assert got == {
        Route(N("10.0.0.0/26"), "blackhole"),
        Route(N("10.0.0.64/26"), "via", "192.168.0.2"),
        Route(N("10.0.0.128/26"), "via", "192.168.0.3"),
        Route(N("10.0.0.5/32"), "dev", "sipaaa"),
    }


def test_bgp_mode_leaves_other_nodes_to_bird() -> None:
    got = desired_routes(node="n1", view=_view(), endpoints=[], peers=PEERS, mode="bgp")
    assert got == {Route(N("10.0.0.0/26"), "blackhole")}


def test_migrated_address_gets_a_32_via_its_new_node_and_is_fenced_on_the_old() -> None:
    mig = MigratedAddress(pool=PoolName("p"), address=A("10.0.0.5"), node=NodeName("n3"),
                          block_node=NodeName("n1"))
    view = _view([mig])
    ep = LocalEndpoint(A("10.0.0.5"), "sipaaa")
    assert to_fence("n1", view, [ep]) == [ep]
    assert to_fence("n3", view, [ep]) == []
    got = desired_routes(node="n2", view=view, endpoints=[], peers=PEERS, mode="direct")
    assert Route(N("10.0.0.5/32"), "via", "192.168.0.3") in got
    fenced = LocalEndpoint(A("10.0.0.5"), "sipaaa", fenced=True)
    on_old = desired_routes(node="n1", view=view, endpoints=[fenced], peers=PEERS, mode="direct")
    assert Route(N("10.0.0.5/32"), "via", "192.168.0.3") in on_old
    assert not any(r.kind == "dev" for r in on_old)
    assert announced("n3", view) == ([N("10.0.0.128/26")], [A("10.0.0.5")])
    assert announced("n1", view) == ([N("10.0.0.0/26")], [])


def test_unknown_peer_address_installs_no_route() -> None:
    got = desired_routes(node="n1", view=_view(), endpoints=[], peers={"n2": "192.168.0.2"},
                         mode="direct")
    assert all(r.dst != N("10.0.0.128/26") for r in got)


def test_diff_leaves_matching_routes_alone() -> None:
    want = {Route(N("10.0.0.0/26"), "blackhole"), Route(N("10.0.0.64/26"), "via", "1.1.1.2")}
    assert diff(want, list(want)).empty()


def test_diff_adds_replaces_and_deletes() -> None:
    want = {Route(N("10.0.0.0/26"), "blackhole"), Route(N("10.0.0.64/26"), "via", "1.1.1.3"),
            Route(N("10.0.0.9/32"), "dev", "sipb")}
    have = [Route(N("10.0.0.64/26"), "via", "1.1.1.2"), Route(N("10.9.0.0/26"), "via", "1.1.1.2"),
            Route(N("10.0.0.0/26"), "blackhole")]
    plan = diff(want, have)
    assert plan.add == [Route(N("10.0.0.9/32"), "dev", "sipb")]
    assert plan.replace == [Route(N("10.0.0.64/26"), "via", "1.1.1.3")]
    assert plan.delete == [Route(N("10.9.0.0/26"), "via", "1.1.1.2")]
    assert len(plan) == 3


def test_diff_drops_duplicates_for_one_destination() -> None:
    w = Route(N("10.0.0.0/26"), "blackhole")
    dup = Route(N("10.0.0.0/26"), "via", "1.1.1.1")
    plan = diff({w}, [dup, w])
    assert plan.delete == [dup] and not plan.add and not plan.replace


def test_epoch_check_fences_reservations_that_moved_on() -> None:
    def sticky(addr: str, owner: str, epoch: int, fenced: bool = False) -> LocalEndpoint:
        return LocalEndpoint(A(addr), f"sip{owner}", fenced, owner=owner, epoch=epoch)

    here = sticky("10.0.0.5", "ns/db/0", 2)
    rehomed = sticky("10.0.0.6", "ns/db/1", 2)
    same_epoch_elsewhere = sticky("10.0.0.7", "ns/db/2", 3)
    newer_here = sticky("10.0.0.8", "ns/db/3", 1)
    readdressed = sticky("10.0.0.9", "ns/db/4", 1)
    already = sticky("10.0.0.10", "ns/db/5", 1, fenced=True)
    unknown = sticky("10.0.0.11", "ns/db/6", 1)
    ephemeral = LocalEndpoint(A("10.0.0.12"), "sipeph")
    placements = {
        "ns/db/0": Placement(A("10.0.0.5"), "n1", 2),
        "ns/db/1": Placement(A("10.0.0.6"), "n2", 3),  # re-homed with a newer epoch
        "ns/db/2": Placement(A("10.0.0.7"), "n2", 3),  # not newer than ours: not fenced
        "ns/db/3": Placement(A("10.0.0.8"), "n1", 4),  # newer, but still home here
        "ns/db/4": Placement(A("10.0.0.99"), "n1", 1),  # another address now
        "ns/db/5": Placement(A("10.0.0.10"), "n2", 9),
        "": Placement(A("10.0.0.12"), "n2", 9),  # never matches an ephemeral endpoint
    }
    eps = [here, rehomed, same_epoch_elsewhere, newer_here, readdressed, already, unknown,
           ephemeral]
    assert to_fence_by_epoch("n1", eps, placements) == [rehomed, readdressed]
