"""Pure routing decisions: which routes a node wants (from the IPAM routing view, its
endpoints and peer addresses), which endpoints it must fence (an address now served
elsewhere, or their reservation re-homed with a newer epoch), and the diff between
desired and actual kernel routes as a list of operations for the caller to apply.

Both families throughout: IPv4 blocks and /32s, IPv6 blocks and /128s. A route to
another node's block goes via that node's address of the block's family."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ipam.models import RoutingView

RouteKind = Literal["dev", "via", "blackhole"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: node name -> family (4, 6) -> that node's address
Peers = Mapping[str, Mapping[int, str]]


@dataclass(frozen=True, slots=True)
class Route:
    """One route in the main table owned by the agent (marked by its protocol)."""

    dst: IPNetwork
    kind: RouteKind
    #: interface name (dev), gateway address (via), "" (blackhole)
    target: str = ""

    @property
    def family(self) -> int:
        return self.dst.version

    def order(self) -> tuple[int, IPNetwork, str, str]:
        """Sort key: IPv4 before IPv6 (the two families do not compare)."""
        return (self.dst.version, self.dst, self.kind, self.target)


def host_network(address: IPAddress) -> IPNetwork:
    """The /32 or /128 of one address."""
    return ipaddress.ip_network(address)


def _net_order(net: IPNetwork) -> tuple[int, IPNetwork]:
    return (net.version, net)


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

    addresses: tuple[IPAddress, ...]
    host_ifname: str
    fenced: bool = False
    #: the reservation key of a sticky endpoint ("" for an ephemeral one)
    owner: str = ""
    #: the reservation's epoch when this node set the endpoint up
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Where IPAM places a sticky reservation now."""

    addresses: tuple[IPAddress, ...]
    node: str | None
    epoch: int


def contains(net: IPNetwork, address: IPAddress) -> bool:
    """``address in net``, false across families."""
    return net.version == address.version and address in net


def serving_node(view: RoutingView, address: IPAddress) -> str | None:
    """The node that serves ``address`` per IPAM: a migrated /32's or /128's node, else
    its block's node; None when the address is in no claimed block."""
    for m in view.migrated:
        if m.address == address:
            return m.node
    for b in view.blocks:
        if contains(b.cidr, address):
            return b.node
    return None


def to_fence(node: str, view: RoutingView,
             endpoints: Iterable[LocalEndpoint]) -> list[LocalEndpoint]:
    """Endpoints this node serves one of whose addresses IPAM now places on another
    node (re-homed with a newer epoch): their routes are withdrawn and their traffic
    dropped."""
    out = []
    for ep in endpoints:
        if ep.fenced:
            continue
        for address in ep.addresses:
            who = serving_node(view, address)
            if who is not None and who != node:
                out.append(ep)
                break
    return out


def to_fence_by_epoch(node: str, endpoints: Iterable[LocalEndpoint],
                      placements: Mapping[str, Placement]) -> list[LocalEndpoint]:
    """Sticky endpoints whose reservation moved on even where the routing view does not
    show it: re-homed to another node with a newer epoch, or given other addresses.
    ``placements`` maps reservation keys to what IPAM says now; endpoints without an
    entry (reservation unknown, or not sticky) are left alone."""
    out = []
    for ep in endpoints:
        if ep.fenced or not ep.owner:
            continue
        now = placements.get(ep.owner)
        if now is None:
            continue
        if (now.epoch > ep.epoch and now.node != node) \
                or set(now.addresses) != set(ep.addresses):
            out.append(ep)
    return out


def local_blocks(node: str, view: RoutingView) -> list[IPNetwork]:
    return sorted((b.cidr for b in view.blocks if b.node == node), key=_net_order)


def announced(node: str, view: RoutingView) -> tuple[list[IPNetwork], list[IPAddress]]:
    """What this node announces in BGP: its blocks, and the /32s and /128s it serves
    away from their block's node (aggregated blocks, host routes only for migrated
    addresses)."""
    migrated = sorted({m.address for m in view.migrated
                       if m.node == node and m.block_node != node},
                      key=lambda a: (a.version, a))
    return local_blocks(node, view), migrated


def desired_routes(*, node: str, view: RoutingView, endpoints: Iterable[LocalEndpoint],
                   peers: Peers, mode: Literal["direct", "bgp"]) -> set[Route]:
    """Routes this node wants in its main table.

    - every address of every unfenced local endpoint: ``ADDR/32`` or ``ADDR/128 dev
      HOSTVETH``;
    - its own blocks: blackhole (unused addresses are dropped here, not bounced back);
    - direct mode only: other nodes' blocks and host routes migrated to other nodes,
      via that node's address of the same family (``peers``; a node without one gets
      no route of that family); in bgp mode BIRD installs those.
    """
    routes: dict[IPNetwork, Route] = {}
    for b in local_blocks(node, view):
        routes[b] = Route(b, "blackhole")
    if mode == "direct":
        for blk in view.blocks:
            gw = peers.get(blk.node, {}).get(blk.cidr.version)
            if blk.node != node and gw:
                routes[blk.cidr] = Route(blk.cidr, "via", gw)
        for m in view.migrated:
            gw = peers.get(m.node, {}).get(m.address.version)
            dst = host_network(m.address)
            if m.node != node and gw:
                routes[dst] = Route(dst, "via", gw)
    for ep in endpoints:
        if ep.fenced:
            continue  # withdrawn here; a host route via its new node may stand in its place
        for address in ep.addresses:
            dst = host_network(address)
            routes[dst] = Route(dst, "dev", ep.host_ifname)
    return set(routes.values())


def diff(desired: Iterable[Route], actual: Iterable[Route]) -> RoutePlan:
    """Operations turning ``actual`` into ``desired``; routes that already match are
    left alone (an agent restart must not flap working routes)."""
    want = {r.dst: r for r in desired}
    have: dict[IPNetwork, list[Route]] = {}
    for r in actual:
        have.setdefault(r.dst, []).append(r)
    plan = RoutePlan()
    for dst in sorted(have, key=_net_order):
        routes = sorted(have[dst], key=Route.order)
        w = want.get(dst)
        if w is None:
            plan.delete.extend(routes)
            continue
        extra = [r for r in routes if r != w]
        if len(extra) == len(routes):
            plan.replace.append(w)
            plan.delete.extend(extra[1:])
        else:
            plan.delete.extend(extra)
    for dst in sorted(want, key=_net_order):
        if dst not in have:
            plan.add.append(want[dst])
    return plan
