"""The store's part of a node's routes, kept in step with a follower's view change by
change (pure: no I/O).

:func:`datapath.routing.desired_routes` over a whole view costs tens of
milliseconds at 5,000 nodes (10,000 blocks); a change touches one block or one
address. :class:`RouteState` keeps the routes the view gives (blocks, migrated
addresses; not the endpoints', which the agent adds) and, for each batch of changes,
recomputes only the destinations it touched by calling the same pure functions on
a view restricted to them: the rules stay :mod:`datapath.routing`'s, and the result
equals the whole computation (a property test checks it). Fencing decisions are
likewise :func:`datapath.routing.to_fence` on restricted views, and
:func:`datapath.routing.to_fence_by_epoch` on the re-homes of the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from datapath import routing
from ipam.changes import ChangeBatch, ChangeOp, RoutingSnapshot
from ipam.models import BlockInfo, MigratedAddress, NodeName, PoolName, RoutingView
from ipam.ranges import IPAddress, IPNetwork, PoolGeometry

Mode = Literal["direct", "bgp"]
_BLOCK_OPS = (ChangeOp.BLOCK_CLAIM, ChangeOp.BLOCK_MOVE, ChangeOp.BLOCK_RELEASE)
_MIG_OPS = (ChangeOp.MIG_SET, ChangeOp.MIG_CLEAR)
_POOL_OPS = (ChangeOp.POOL_PUT, ChangeOp.POOL_DELETE)


host_network = routing.host_network


@dataclass(slots=True)
class Touched:
    """What a batch touched: recompute everything (``full``), or these blocks and
    addresses; ``homes``: reservations re-homed (owner -> placement now)."""

    full: bool = False
    blocks: set[tuple[str, int]] = field(default_factory=set)
    addresses: set[tuple[str, IPAddress]] = field(default_factory=set)
    homes: dict[str, routing.Placement] = field(default_factory=dict)
    #: this node's own blocks or served addresses changed (BGP announcements)
    own: bool = False

    def empty(self) -> bool:
        return not (self.full or self.blocks or self.addresses or self.homes)


class RouteState:
    """The store-derived routes of ``node`` (``routes``: destination -> route)."""

    def __init__(self, node: str, mode: Mode) -> None:
        self.node = node
        self.mode = mode
        self.routes: dict[IPNetwork, routing.Route] = {}
        self._view: RoutingSnapshot | None = None
        self._geos: dict[str, PoolGeometry] = {}

    # ---------------------------------------------------------------- views

    def _geo(self, pool: str) -> PoolGeometry | None:
        assert self._view is not None
        spec = self._view.pools.get(pool)
        if spec is None:
            return None
        geo = self._geos.get(pool)
        if geo is None:
            geo = self._geos[pool] = spec.geometry()
        return geo

    def locate(self, address: IPAddress) -> tuple[str, int] | None:
        """(pool, block index) of ``address`` in the view's pools, None outside them."""
        assert self._view is not None
        for pool in self._view.pools:
            geo = self._geo(pool)
            if geo is not None and geo.contains(address):
                return pool, geo.block_of(geo.offset_of(address))
        return None

    def restricted(self, blocks: Iterable[tuple[str, int]],
                   addresses: Iterable[tuple[str, IPAddress]]) -> RoutingView:
        """The view's ``blocks`` (those claimed) and migrated ``addresses`` (those
        migrated), as a routing view the pure functions take."""
        snap = self._view
        assert snap is not None
        out_b = []
        for pool, b in sorted(set(blocks)):
            node = snap.blocks.get((pool, b))
            geo = self._geo(pool)
            if node is not None and geo is not None:
                out_b.append(BlockInfo(pool=PoolName(pool), index=b, cidr=geo.block_cidr(b),
                                       node=NodeName(node), used=0))
        out_m = []
        for pool, addr in set(addresses):
            m = snap.migrated.get((pool, addr))
            geo = self._geo(pool)
            if m is None or geo is None:
                continue
            bn = snap.blocks.get((pool, geo.block_of(geo.offset_of(addr))))
            out_m.append(MigratedAddress(pool=PoolName(pool), address=addr,
                                         node=NodeName(m.node),
                                         block_node=NodeName(bn) if bn else None,
                                         owner=m.owner, epoch=m.epoch))
        return RoutingView(blocks=out_b, migrated=out_m)

    # ---------------------------------------------------------------- routes

    def reset(self, view: RoutingSnapshot, peers: routing.Peers) -> None:
        """Compute every route from ``view`` (a fresh snapshot, a pool change, new
        node addresses)."""
        self._view = view
        self._geos = {}
        self.routes = {r.dst: r for r in routing.desired_routes(
            node=self.node, view=view.view(), endpoints=[], peers=peers, mode=self.mode)}

    def touched(self, batches: Sequence[ChangeBatch]) -> Touched:
        t = Touched()
        for batch in batches:
            for c in batch.changes:
                if c.op in _POOL_OPS:
                    t.full = True
                elif c.op in _BLOCK_OPS and c.block is not None:
                    t.blocks.add((c.pool, c.block))
                    t.own |= self.node in (c.node, c.from_node)
                elif c.op in _MIG_OPS and c.address is not None:
                    t.addresses.add((c.pool, c.address))
                    t.own = True  # cheap to recheck; the old server is not in the change
                elif c.op is ChangeOp.RES_HOME:
                    t.homes[c.owner] = routing.Placement(c.addresses, c.node, c.epoch)
        return t

    def apply(self, view: RoutingSnapshot, batches: Sequence[ChangeBatch],
              peers: routing.Peers) -> Touched:
        """``batches`` were applied to ``view``: recompute the routes they touched."""
        t = self.touched(batches)
        if t.full or self._view is not view:
            self.reset(view, peers)
            t.full = True
            return t
        dsts: set[IPNetwork] = set()
        blocks = set(t.blocks)
        for pool, b in t.blocks:
            geo = self._geo(pool)
            if geo is not None:
                dsts.add(geo.block_cidr(b))
        addresses = set(t.addresses)
        dsts |= {host_network(a) for _, a in t.addresses}
        # every item whose route lands on one of these destinations
        for pool, addr in view.migrated:
            if host_network(addr) in dsts:
                addresses.add((pool, addr))
        mini = self.restricted(blocks, addresses)
        new: dict[IPNetwork, routing.Route] = {r.dst: r for r in routing.desired_routes(
            node=self.node, view=mini, endpoints=[], peers=peers, mode=self.mode)}
        for dst in dsts:
            route = new.get(dst)
            if route is None:
                self.routes.pop(dst, None)
            else:
                self.routes[dst] = route
        return t

    def desired(self, endpoints: Iterable[routing.LocalEndpoint],
                peers: routing.Peers) -> set[routing.Route]:
        """The node's routes: the store's, with every unfenced local endpoint's on top
        (as :func:`datapath.routing.desired_routes` ranks them)."""
        out = dict(self.routes)
        for r in routing.desired_routes(node=self.node, view=RoutingView(blocks=[], migrated=[]),
                                        endpoints=endpoints, peers=peers, mode=self.mode):
            out[r.dst] = r
        return set(out.values())

    # --------------------------------------------------------------- fencing

    def to_fence(self, endpoints: Sequence[routing.LocalEndpoint],
                 t: Touched | None = None) -> list[routing.LocalEndpoint]:
        """Endpoints the view now places elsewhere: all of them checked (``t`` None, or
        a full recompute), else only those inside what ``t`` touched; then the epochs
        of the reservations ``t`` re-homed."""
        out: list[routing.LocalEndpoint] = []
        for ep in endpoints:
            if ep.fenced:
                continue
            found = [(where, a) for a in ep.addresses if (where := self.locate(a))]
            if t is not None and not t.full and not any(
                    where in t.blocks or (where[0], a) in t.addresses for where, a in found):
                continue
            mini = self.restricted([w for w, _ in found], [(w[0], a) for w, a in found])
            out += routing.to_fence(self.node, mini, [ep])
        if t is not None and t.homes:
            chosen = {id(e) for e in out}
            out += [e for e in routing.to_fence_by_epoch(self.node, endpoints, t.homes)
                    if id(e) not in chosen]
        return out

    def announced(self) -> tuple[list[IPNetwork], list[IPAddress]]:
        """What this node announces in BGP (:func:`datapath.routing.announced`) from its
        own blocks and the addresses migrated to it."""
        snap = self._view
        assert snap is not None
        own = [k for k, n in snap.blocks.items() if n == self.node]
        mine = [k for k, m in snap.migrated.items() if m.node == self.node]
        return routing.announced(self.node, self.restricted(own, mine))
