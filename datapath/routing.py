"""Pure routing decisions: which routes a node wants (from the IPAM routing view, its
endpoints and peer addresses), which endpoints it must fence (their address now
served elsewhere, or their reservation re-homed with a newer epoch), and the diff
between desired and actual kernel routes as a list of operations for the caller to
apply."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ipam.models import RoutingView

RouteKind = Literal["dev", "via", "blackhole"]


@dataclass(frozen=True, slots=True, order=True)
class Route:
    """One route in the main table owned by the agent (marked by its protocol)."""

    dst: ipaddress.IPv4Network
    kind: RouteKind
    #: interface name (dev), gateway address (via), "" (blackhole)
    target: str = ""


@dataclass(slots=True)
class RoutePlan:
    add: list[Route] = field(default_factory=list)
    replace: list[Route] = field(default_factory=list)
    delete: list[Route] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.add or self.replace or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.replace) + len(self.delete)


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """What routing needs to know of a local pod attachment."""

    address: ipaddress.IPv4Address
    host_ifname: str
    fenced: bool = False
    #: the reservation key of a sticky endpoint ("" for an ephemeral one)
    owner: str = ""
    #: the reservation's epoch when this node set the endpoint up
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Where IPAM places a sticky reservation now."""

    address: ipaddress.IPv4Address | None
    node: str | None
    epoch: int


def serving_node(view: RoutingView, address: ipaddress.IPv4Address) -> str | None:
    """The node that serves ``address`` per IPAM: a migrated /32's node, else its
    block's node; None when the address is in no claimed block."""
    for m in view.migrated:
        if m.address == address:
            return m.node
    for b in view.blocks:
        if address in b.cidr:
            return b.node
    return None


def to_fence(node: str, view: RoutingView,
             endpoints: Iterable[LocalEndpoint]) -> list[LocalEndpoint]:
    """Endpoints this node serves but IPAM now places on another node (re-homed with a
    newer epoch): their routes are withdrawn and their traffic dropped."""
    out = []
    for ep in endpoints:
        if ep.fenced:
            continue
        who = serving_node(view, ep.address)
        if who is not None and who != node:
            out.append(ep)
    return out


def to_fence_by_epoch(node: str, endpoints: Iterable[LocalEndpoint],
                      placements: Mapping[str, Placement]) -> list[LocalEndpoint]:
    """Sticky endpoints whose reservation moved on even where the routing view does not
    show it: re-homed to another node with a newer epoch, or given another address.
    ``placements`` maps reservation keys to what IPAM says now; endpoints without an
    entry (reservation unknown, or not sticky) are left alone."""
    out = []
    for ep in endpoints:
        if ep.fenced or not ep.owner:
            continue
        now = placements.get(ep.owner)
        if now is None:
            continue
        if (now.epoch > ep.epoch and now.node != node) or now.address != ep.address:
            out.append(ep)
    return out


def local_blocks(node: str, view: RoutingView) -> list[ipaddress.IPv4Network]:
    # IPv4 only until the datapath routes IPv6 (issue 14); the IPAM serves both.
    return sorted(b.cidr for b in view.blocks
                  if b.node == node and isinstance(b.cidr, ipaddress.IPv4Network))


def announced(node: str, view: RoutingView) -> tuple[list[ipaddress.IPv4Network],
                                                   list[ipaddress.IPv4Address]]:
    """What this node announces in BGP: its blocks, and the /32s it serves away from
    their block's node (aggregated blocks, /32 only for migrated addresses)."""
    migrated = sorted({m.address for m in view.migrated
                       if m.node == node and m.block_node != node
                       and isinstance(m.address, ipaddress.IPv4Address)})
    return local_blocks(node, view), migrated


def desired_routes(*, node: str, view: RoutingView, endpoints: Iterable[LocalEndpoint],
                   peers: Mapping[str, str], mode: Literal["direct", "bgp"]) -> set[Route]:
    """Routes this node wants in its main table.

    - every unfenced local endpoint: ``ADDR/32 dev HOSTVETH``;
    - its own blocks: blackhole (unused addresses are dropped here, not bounced back);
    - direct mode only: other nodes' blocks and /32s migrated to other nodes, via that
      node's address (``peers``); in bgp mode BIRD installs those.
    """
    routes: dict[ipaddress.IPv4Network, Route] = {}
    for b in local_blocks(node, view):
        routes[b] = Route(b, "blackhole")
    if mode == "direct":
        for blk in view.blocks:
            gw = peers.get(blk.node)
            if blk.node != node and gw and isinstance(blk.cidr, ipaddress.IPv4Network):
                routes[blk.cidr] = Route(blk.cidr, "via", gw)
        for m in view.migrated:
            if not isinstance(m.address, ipaddress.IPv4Address):
                continue
            gw = peers.get(m.node)
            dst = ipaddress.IPv4Network(f"{m.address}/32")
            if m.node != node and gw:
                routes[dst] = Route(dst, "via", gw)
    for ep in endpoints:
        dst = ipaddress.IPv4Network(f"{ep.address}/32")
        if ep.fenced:
            continue  # withdrawn here; a /32 via its new node may stand in its place
        routes[dst] = Route(dst, "dev", ep.host_ifname)
    return set(routes.values())


def diff(desired: Iterable[Route], actual: Iterable[Route]) -> RoutePlan:
    """Operations turning ``actual`` into ``desired``; routes that already match are
    left alone (an agent restart must not flap working routes)."""
    want = {r.dst: r for r in desired}
    have: dict[ipaddress.IPv4Network, list[Route]] = {}
    for r in actual:
        have.setdefault(r.dst, []).append(r)
    plan = RoutePlan()
    for dst, routes in sorted(have.items()):
        w = want.get(dst)
        if w is None:
            plan.delete.extend(sorted(routes))
            continue
        extra = [r for r in routes if r != w]
        if len(extra) == len(routes):
            plan.replace.append(w)
            plan.delete.extend(sorted(extra[1:]))
        else:
            plan.delete.extend(sorted(extra))
    for dst, w in sorted(want.items()):
        if dst not in have:
            plan.add.append(w)
    return plan
