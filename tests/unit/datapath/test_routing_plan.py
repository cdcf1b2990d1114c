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
N6 = ipaddress.IPv6Network
A6 = ipaddress.IPv6Address


def _view(migrated: list[MigratedAddress] | None = None) -> RoutingView:
    blocks = [BlockInfo(pool=PoolName("p"), index=i, cidr=N(f"10.0.0.{i * 64}/26"),
                        node=NodeName(n), used=1)
              for i, n in enumerate(["n1", "n2", "n3"])]
    return RoutingView(blocks=blocks, migrated=migrated or [])


PEERS = {"n1": {4: "192.168.0.1"}, "n2": {4: "192.168.0.2"}, "n3": {4: "192.168.0.3"}}


def test_direct_mode_routes_blocks_to_their_node_and_blackholes_own() -> None:
    eps = [LocalEndpoint((A("10.0.0.5"),), "sipaaa")]
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
    ep = LocalEndpoint((A("10.0.0.5"),), "sipaaa")
    assert to_fence("n1", view, [ep]) == [ep]
    assert to_fence("n3", view, [ep]) == []
    got = desired_routes(node="n2", view=view, endpoints=[], peers=PEERS, mode="direct")
    assert Route(N("10.0.0.5/32"), "via", "192.168.0.3") in got
    fenced = LocalEndpoint((A("10.0.0.5"),), "sipaaa", fenced=True)
    on_old = desired_routes(node="n1", view=view, endpoints=[fenced], peers=PEERS, mode="direct")
    assert Route(N("10.0.0.5/32"), "via", "192.168.0.3") in on_old
    assert not any(r.kind == "dev" for r in on_old)
    assert announced("n3", view) == ([N("10.0.0.128/26")], [A("10.0.0.5")])
    assert announced("n1", view) == ([N("10.0.0.0/26")], [])


def test_unknown_peer_address_installs_no_route() -> None:
    got = desired_routes(node="n1", view=_view(), endpoints=[], peers={"n2": {4: "192.168.0.2"}},
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
        return LocalEndpoint((A(addr),), f"sip{owner}", fenced, owner=owner, epoch=epoch)

    here = sticky("10.0.0.5", "ns/db/0", 2)
    rehomed = sticky("10.0.0.6", "ns/db/1", 2)
    same_epoch_elsewhere = sticky("10.0.0.7", "ns/db/2", 3)
    newer_here = sticky("10.0.0.8", "ns/db/3", 1)
    readdressed = sticky("10.0.0.9", "ns/db/4", 1)
    already = sticky("10.0.0.10", "ns/db/5", 1, fenced=True)
    unknown = sticky("10.0.0.11", "ns/db/6", 1)
    ephemeral = LocalEndpoint((A("10.0.0.12"),), "sipeph")
    placements = {
        "ns/db/0": Placement((A("10.0.0.5"),), "n1", 2),
        "ns/db/1": Placement((A("10.0.0.6"),), "n2", 3),  # re-homed with a newer epoch
        "ns/db/2": Placement((A("10.0.0.7"),), "n2", 3),  # not newer than ours: not fenced
        "ns/db/3": Placement((A("10.0.0.8"),), "n1", 4),  # newer, but still home here
        "ns/db/4": Placement((A("10.0.0.99"),), "n1", 1),  # another address now
        "ns/db/5": Placement((A("10.0.0.10"),), "n2", 9),
        "": Placement((A("10.0.0.12"),), "n2", 9),  # never matches an ephemeral endpoint
    }
    eps = [here, rehomed, same_epoch_elsewhere, newer_here, readdressed, already, unknown,
           ephemeral]
    assert to_fence_by_epoch("n1", eps, placements) == [rehomed, readdressed]


# ---------------------------------------------------------------- IPv6 and dual-stack

PEERS2 = {"n1": {4: "192.168.0.1", 6: "fd00:fab::1"},
          "n2": {4: "192.168.0.2", 6: "fd00:fab::2"},
          "n3": {4: "192.168.0.3"}}  # n3 has no IPv6 address


def _view2(migrated: list[MigratedAddress] | None = None) -> RoutingView:
    blocks = [BlockInfo(pool=PoolName("p4"), index=0, cidr=N("10.0.0.0/26"),
                        node=NodeName("n1"), used=1),
              BlockInfo(pool=PoolName("p6"), index=0, cidr=N6("fd00:10::/122"),
                        node=NodeName("n1"), used=1),
              BlockInfo(pool=PoolName("p4"), index=1, cidr=N("10.0.0.64/26"),
                        node=NodeName("n2"), used=1),
              BlockInfo(pool=PoolName("p6"), index=1, cidr=N6("fd00:10::40/122"),
                        node=NodeName("n2"), used=1),
              BlockInfo(pool=PoolName("p6"), index=2, cidr=N6("fd00:10::80/122"),
                        node=NodeName("n3"), used=1)]
    return RoutingView(blocks=blocks, migrated=migrated or [])


def test_dual_stack_routes_each_family_via_the_peer_address_of_that_family() -> None:
    ep = LocalEndpoint((A("10.0.0.5"), A6("fd00:10::5")), "sipaaa")
    got = desired_routes(node="n1", view=_view2(), endpoints=[ep], peers=PEERS2,
                         mode="direct")
    assert got == {
        Route(N("10.0.0.0/26"), "blackhole"),
        Route(N6("fd00:10::/122"), "blackhole"),
        Route(N("10.0.0.64/26"), "via", "192.168.0.2"),
        Route(N6("fd00:10::40/122"), "via", "fd00:fab::2"),
        # n3 publishes no IPv6 address: no IPv6 route to its block
        Route(N("10.0.0.5/32"), "dev", "sipaaa"),
        Route(N6("fd00:10::5/128"), "dev", "sipaaa"),
    }


def test_a_migrated_128_is_routed_via_its_new_node_and_fences_the_whole_endpoint() -> None:
    mig = MigratedAddress(pool=PoolName("p6"), address=A6("fd00:10::5"), node=NodeName("n2"),
                          block_node=NodeName("n1"))
    view = _view2([mig])
    ep = LocalEndpoint((A("10.0.0.5"), A6("fd00:10::5")), "sipaaa")
    assert to_fence("n1", view, [ep]) == [ep]  # one family moved: the pod is fenced
    on_n3 = desired_routes(node="n3", view=view, endpoints=[], peers=PEERS2, mode="direct")
    assert Route(N6("fd00:10::5/128"), "via", "fd00:fab::2") in on_n3
    assert announced("n2", view) == ([N("10.0.0.64/26"), N6("fd00:10::40/122")],
                                     [A6("fd00:10::5")])
    # an IPv6 address never falls "inside" an IPv4 block (nor the reverse)
    v4_lookalike = LocalEndpoint((A6("::a00:5"),), "sipbbb")
    assert to_fence("n1", view, [v4_lookalike]) == []


def test_diff_orders_both_families_without_comparing_across_them() -> None:
    want = {Route(N6("fd00::/122"), "blackhole"), Route(N("10.0.0.0/26"), "blackhole"),
            Route(N6("fd00::9/128"), "dev", "sipb"), Route(N("10.0.0.9/32"), "dev", "sipb")}
    have = [Route(N6("fd00:9::/122"), "via", "fd00:fab::9"), Route(N("10.0.0.0/26"), "blackhole")]
    plan = diff(want, have)
    assert plan.add == [Route(N("10.0.0.9/32"), "dev", "sipb"),
                        Route(N6("fd00::/122"), "blackhole"),
                        Route(N6("fd00::9/128"), "dev", "sipb")]
    assert plan.delete == [Route(N6("fd00:9::/122"), "via", "fd00:fab::9")]
    assert diff(want, list(want)).empty()


def test_epoch_check_compares_both_addresses() -> None:
    ep = LocalEndpoint((A("10.0.0.5"), A6("fd00::5")), "sipx", owner="ns/db/0", epoch=1)
    same = {"ns/db/0": Placement((A("10.0.0.5"), A6("fd00::5")), "n1", 1)}
    other6 = {"ns/db/0": Placement((A("10.0.0.5"), A6("fd00::6")), "n1", 1)}
    assert to_fence_by_epoch("n1", [ep], same) == []
    assert to_fence_by_epoch("n1", [ep], other6) == [ep]
