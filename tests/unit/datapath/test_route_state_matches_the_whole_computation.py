"""The agent's incremental routes (datapath.routestate) equal the whole computation
(datapath.routing over the whole view) after any sequence of changes: blocks claimed,
moved and released, addresses migrated and cleared, reservations re-homed — in both
routing modes, with the node's own endpoints on top; and the endpoints fenced change
by change are exactly those the whole computation fences."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from datapath import routing
from datapath.routestate import RouteState
from ipam.changes import Change, ChangeBatch, ChangeOp, RoutingSnapshot
from ipam.models import PoolSpec

NODE = "n1"
NODES = ["n1", "n2", "n3", "n4"]
PEERS = {n: {4: f"192.0.2.{i + 1}"} for i, n in enumerate(NODES)}
SPEC = PoolSpec(name="p", cidr="10.60.0.0/26", block_size=29)  # 8 blocks of 8
GEO = SPEC.geometry()
OWNERS = [f"sts/ns/db/{i}" for i in range(4)]
#: this node's endpoints: (address offset in the pool, owner or "")
ENDPOINTS = [(1, OWNERS[0]), (9, OWNERS[1]), (10, ""), (33, OWNERS[2])]


def addr(offset: int) -> ipaddress.IPv4Address:
    a = GEO.network[offset]
    assert isinstance(a, ipaddress.IPv4Address)
    return a


def cidr(block: int) -> ipaddress.IPv4Network:
    c = GEO.block_cidr(block)
    assert isinstance(c, ipaddress.IPv4Network)
    return c


op = st.one_of(
    st.tuples(st.just("claim"), st.integers(0, 7), st.sampled_from(NODES)),
    st.tuples(st.just("move"), st.integers(0, 7), st.sampled_from(NODES)),
    st.tuples(st.just("release"), st.integers(0, 7), st.just("")),
    st.tuples(st.just("mig"), st.integers(0, 63), st.sampled_from(NODES)),
    st.tuples(st.just("unmig"), st.integers(0, 63), st.just("")),
    st.tuples(st.just("home"), st.integers(0, 3), st.sampled_from(NODES)),
)


def to_change(view: RoutingSnapshot, o: tuple[str, int, str], epoch: int) -> Change | None:
    kind, n, node = o
    if kind in ("claim", "move", "release"):
        holder = view.blocks.get(("p", n))
        if (kind == "claim") != (holder is None):
            return None
        opcode = {"claim": ChangeOp.BLOCK_CLAIM, "move": ChangeOp.BLOCK_MOVE,
                  "release": ChangeOp.BLOCK_RELEASE}[kind]
        return Change(op=opcode, pool="p", block=n, cidr=cidr(n), node=node or (holder or ""),
                      from_node=holder or "")
    if kind in ("mig", "unmig"):
        b = GEO.block_of(n)
        return Change(op=ChangeOp.MIG_SET if kind == "mig" else ChangeOp.MIG_CLEAR, pool="p",
                      block=b, cidr=cidr(b), address=addr(n), node=node, owner="sts/x/y/0",
                      epoch=epoch)
    owner = OWNERS[n]
    where = next((off for off, o2 in ENDPOINTS if o2 == owner), 60)
    return Change(op=ChangeOp.RES_HOME, owner=owner, node=node, epoch=epoch,
                  addresses=(addr(where),))


def local(fenced: set[int]) -> list[routing.LocalEndpoint]:
    return [routing.LocalEndpoint((addr(off),), f"sip{i}", i in fenced, owner=owner, epoch=1)
            for i, (off, owner) in enumerate(ENDPOINTS)]


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.lists(op, min_size=1, max_size=3), max_size=25),
       mode=st.sampled_from(["direct", "bgp"]))
def test_incremental_equals_whole(ops: list[list[tuple[str, int, str]]], mode: str) -> None:
    assert mode in ("direct", "bgp")
    view = RoutingSnapshot(revision=1, identity="x", pools={"p": SPEC})
    state = RouteState(NODE, mode)  # type: ignore[arg-type]
    state.reset(view, PEERS)
    fenced_inc: set[int] = set()
    fenced_all: set[int] = set()
    epoch = 1
    for batch_ops in ops:
        changes = []
        shadow = RoutingSnapshot(revision=view.revision, identity="x", pools=dict(view.pools),
                                 blocks=dict(view.blocks), migrated=dict(view.migrated))
        for o in batch_ops:
            epoch += 1
            c = to_change(shadow, o, epoch)
            if c is not None:
                shadow.apply(ChangeBatch(shadow.revision + 1, (c,)))
                changes.append(c)
        batch = ChangeBatch(view.revision + 1, tuple(changes))
        view.apply(batch)
        touched = state.apply(view, [batch], PEERS)
        # fencing, change by change vs the whole view
        for ep in state.to_fence(local(fenced_inc), touched):
            fenced_inc |= {i for i, e in enumerate(local(set())) if e.addresses == ep.addresses}
        whole = view.view()
        eps = local(fenced_all)
        for ep in routing.to_fence(NODE, whole, eps) + routing.to_fence_by_epoch(
                NODE, eps, touched.homes):
            fenced_all |= {i for i, e in enumerate(local(set())) if e.addresses == ep.addresses}
        assert fenced_inc == fenced_all
        # routes, with the endpoints on top
        eps = local(fenced_inc)
        want = routing.desired_routes(node=NODE, view=whole, endpoints=eps, peers=PEERS,
                                      mode=mode)  # type: ignore[arg-type]
        assert state.desired(eps, PEERS) == want
        assert state.announced() == routing.announced(NODE, whole)


def test_a_pool_change_recomputes_everything() -> None:
    view = RoutingSnapshot(revision=1, identity="x", pools={"p": SPEC},
                           blocks={("p", 0): "n2"})
    state = RouteState(NODE, "direct")
    state.reset(view, PEERS)
    assert state.routes[cidr(0)] == routing.Route(cidr(0), "via", PEERS["n2"][4])
    gone = ChangeBatch(2, (Change(op=ChangeOp.POOL_DELETE, pool="p"),))
    view.apply(gone)
    assert state.apply(view, [gone], PEERS).full
    assert state.routes == {}
    # a fresh view object (a snapshot) is recomputed whole too
    fresh = replace(view, revision=3, blocks={("p", 1): "n3"}, pools={"p": SPEC})
    assert state.apply(fresh, [], PEERS).full
    assert set(state.routes) == {cidr(1)}
