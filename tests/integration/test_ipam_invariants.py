"""A hypothesis state machine drives allocate/release/reserve/re-home/retain/expire
over an IPv4 and an IPv6 pool (single-family and dual-stack leases) against a real
redis-server and checks the IPAM invariants after every step: no address held by
two owners, every acknowledged allocation still there with the same addresses, at
most one address per family, a failed call changes nothing, no leak, and the stored
indexes and counters consistent (``ipam check`` is clean), and a follower of the
change log holds exactly what a fresh snapshot holds — one reading the store, one
reading it through a feed replica — across trims of the log and restarts of the
store (issue 10.4)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from datapath.feed import FeedServer, FeedSource
from ipam import (
    AddressTaken,
    InvalidAddress,
    IpamError,
    Lease,
    LeaseKind,
    PoolExhausted,
    PoolSpec,
    RedisIpam,
    ReservationConflict,
    ReservationInUse,
    ReservationKey,
    ReservationState,
    RoutingSnapshot,
    StaleEpoch,
    check_and_repair,
    ephemeral_owner,
    layout,
)
from ipam.connection import open_redis
from ipam.follow import Follower, StoreSource
from tests.support.redis_server import RedisServer, free_port

NODES = ["n1", "n2", "n3"]
V4, V6 = "sm", "sm6"
# 64 addresses per pool in blocks of 8: 8 blocks, 62 usable — small enough to exhaust.
SPECS = [PoolSpec(name=V4, cidr="10.77.0.0/26", block_size=29),
         PoolSpec(name=V6, cidr="fd00:77::ffc0/122", block_size=125)]
GEO = {s.name: s.geometry() for s in SPECS}
POOL_SETS = [[V4], [V6], [V4, V6]]
KEYS = [ReservationKey.of("ns", "sts", i) for i in range(6)]
CONTAINERS = [f"c{i}" for i in range(40)]

Held = tuple[frozenset[tuple[str, str]], str | None]


def held_of(lease: Lease) -> Held:
    return frozenset((a.pool, str(a.address)) for a in lease.addresses), lease.node


class IpamMachine(RuleBasedStateMachine):
    url: str = ""
    server: RedisServer | None = None
    #: store restarts per example (each costs the followers a fresh snapshot)
    MAX_RESTARTS = 2

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        client, _ = self.run(open_redis(self.url))
        self.ipam = RedisIpam(client, actor="sm")
        self.run(client.flushall())
        self.run(self.ipam.apply_pools(SPECS))
        # followers of the change log, each started from a snapshot: one on the store,
        # one through a feed replica (the agents' path)
        self.direct = Follower(StoreSource(RedisIpam(self.run(open_redis(self.url))[0]),
                                           own=True), block_ms=0, resnapshot_spread=0)
        self.feed = FeedServer(StoreSource(RedisIpam(self.run(open_redis(self.url))[0]),
                                           own=True), host="127.0.0.1", port=0,
                               block_ms=1000, resnapshot_spread=0)
        self.run(self.feed.start())
        self.via_feed = Follower(FeedSource([f"127.0.0.1:{self.feed.port}"]), block_ms=200,
                                 resnapshot_spread=0)
        self.restarts = 0
        self.now = 1000.0
        # model: owner -> (addresses, node)
        self.held: dict[str, Held] = {}
        self.epochs: dict[str, int] = {}
        self.retained_until: dict[str, float] = {}
        self.quarantined: dict[str, str] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.via_feed.source.aclose())
        self.run(self.feed.stop())
        self.run(self.direct.source.aclose())
        self.run(self.ipam.aclose())
        self.loop.close()

    def stored(self, owner: str) -> Lease | None:
        return self.run(self.ipam.lease(owner=owner))  # type: ignore[no-any-return]

    @initialize()
    def start(self) -> None:
        pass

    @rule(c=st.sampled_from(CONTAINERS), node=st.sampled_from(NODES),
          pools=st.sampled_from(POOL_SETS))
    def allocate(self, c: str, node: str, pools: list[str]) -> None:
        owner = ephemeral_owner(c)
        before = self.stored(owner)
        try:
            lease = self.run(self.ipam.allocate(pools=pools, node=node, owner=owner,
                                                now=self.now))
        except PoolExhausted:
            assert any(self.used(p) >= 62 for p in pools)
            assert self.stored(owner) == before, "a failed allocation changed the store"
            return
        if owner in self.held:
            assert held_of(lease) == self.held[owner], "retry changed an address"
        else:
            assert sorted(a.pool for a in lease.addresses) == sorted(pools)
        self.held[owner] = held_of(lease)

    @rule(c=st.sampled_from(CONTAINERS))
    def release(self, c: str) -> None:
        owner = ephemeral_owner(c)
        got = self.run(self.ipam.release(owner=owner, now=self.now))
        assert (got is not None) == (owner in self.held)
        self.held.pop(owner, None)

    @rule(k=st.sampled_from(KEYS), node=st.none() | st.sampled_from(NODES),
          pools=st.sampled_from(POOL_SETS),
          explicit=st.lists(st.integers(min_value=0, max_value=66), max_size=2),
          retain=st.sampled_from([0.0, 30.0, -1.0]))
    def claim(self, k: ReservationKey, node: str | None, pools: list[str],
              explicit: list[int], retain: float) -> None:
        addrs = []
        for pool, off in zip(pools, explicit, strict=False):
            geo = GEO[pool]
            cls = ipaddress.IPv4Address if geo.family == 4 else ipaddress.IPv6Address
            addrs.append(str(cls(geo.first + off)))
        before = self.held.get(k.owner)
        stored_before = self.stored(k.owner)
        try:
            res = self.run(self.ipam.claim(k, pools=pools, node=node, addresses=addrs,
                                           retain=retain, holder="uid" if node else "",
                                           now=self.now))
        except (AddressTaken, InvalidAddress, PoolExhausted, ReservationConflict):
            assert self.stored(k.owner) == stored_before, "a refused claim changed the store"
            return
        got, home = held_of(res)
        if before is not None:
            assert before[0] <= got, "a reservation's address changed"
        for a in addrs:
            assert any(x == a for _, x in got)
        if node is not None:
            assert {p for p, _ in got} >= set(pools), "scheduling left a family without address"
            assert home == node
        assert len({GEO[p].family for p, _ in got}) == len(got), "two addresses of a family"
        self.held[k.owner] = (got, home)
        self.epochs[k.owner] = res.epoch
        self.retained_until.pop(k.owner, None)

    @rule(k=st.sampled_from(KEYS))
    def retain(self, k: ReservationKey) -> None:
        if k.owner not in self.held:
            return
        status, res = self.run(self.ipam.retain_reservation(k, now=self.now))
        if status == "released":
            self.held.pop(k.owner)
            self.retained_until.pop(k.owner, None)
        elif k.owner in self.quarantined:
            assert res is not None and res.state is ReservationState.QUARANTINED
        else:
            assert res is not None and res.state is ReservationState.RETAINED
            self.retained_until[k.owner] = res.expires_at

    @rule(k=st.sampled_from(KEYS), force=st.booleans())
    def release_reservation(self, k: ReservationKey, force: bool) -> None:
        before = self.stored(k.owner)
        try:
            res = self.run(self.ipam.release_reservation(k, force=force, now=self.now))
        except ReservationInUse as e:
            assert (before is not None and before.holder == e.holder and not force) or (
                k.owner in self.quarantined)
            assert self.stored(k.owner) == before
            return
        if before is None:
            assert res is None
        elif res is not None and res.state is ReservationState.QUARANTINED:
            assert force and before.holder
            self.quarantined[k.owner] = before.holder
            self.retained_until.pop(k.owner, None)
        else:
            self.held.pop(k.owner, None)
            self.retained_until.pop(k.owner, None)

    @precondition(lambda self: bool(self.quarantined))
    @rule(data=st.data())
    def holder_gone(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.quarantined)))
        holder = self.quarantined.pop(owner)
        got = self.run(self.ipam.confirm_holder_gone(owner, holder=holder, now=self.now))
        assert got is not None and got.state is ReservationState.QUARANTINED
        self.held.pop(owner)

    @rule(dt=st.sampled_from([1.0, 20.0, 50.0]))
    def advance_and_expire(self, dt: float) -> None:
        self.now += dt
        for k in KEYS:
            if k.owner not in self.held:
                continue
            freed = self.run(self.ipam.expire_reservation(k, now=self.now))
            until = self.retained_until.get(k.owner)
            should = until is not None and 0 <= until <= self.now
            assert freed == should, f"expiry of {k}: freed={freed}, until={until}"
            if freed:
                self.held.pop(k.owner)
                self.retained_until.pop(k.owner)

    @precondition(lambda self: any(v[1] for v in self.held.values()))
    @rule(data=st.data(), to=st.sampled_from(NODES), pool=st.sampled_from([V4, V6]))
    def rehome_block(self, data: st.DataObject, to: str, pool: str) -> None:
        blocks = self.run(self.ipam.blocks(pool))
        if not blocks:
            return
        b = data.draw(st.sampled_from(blocks))
        moved = self.run(self.ipam.rehome_block(pool=pool, block=b.index, from_node=b.node,
                                                to_node=to, now=self.now))
        for owner in moved:
            addrs, _ = self.held[owner]
            self.held[owner] = (addrs, to)
            self.epochs[owner] = self.epochs.get(owner, 1) + 1

    @rule(k=st.sampled_from(KEYS), to=st.sampled_from(NODES), stale=st.booleans())
    def rehome_one(self, k: ReservationKey, to: str, stale: bool) -> None:
        if k.owner not in self.held:
            return
        cur = self.epochs.get(k.owner, 1)
        try:
            res = self.run(self.ipam.rehome_reservation(
                k, to_node=to, expect_epoch=cur - 1 if stale else cur, now=self.now))
        except StaleEpoch:
            assert stale and self.held[k.owner][1] != to
            return
        assert held_of(res)[0] == self.held[k.owner][0]
        if self.held[k.owner][1] != to:
            assert res.epoch == cur + 1
        self.held[k.owner] = (held_of(res)[0], to)
        self.epochs[k.owner] = res.epoch

    def used(self, pool: str) -> int:
        return int(self.run(self.ipam.pool_status(pool)).used)

    @invariant()
    def store_matches_model_and_is_consistent(self) -> None:
        raw = self.run(self.ipam.redis.hkeys(layout.RECORDS))
        assert {k.decode() for k in raw} == set(self.held), "owners differ from acknowledged"
        seen: dict[str, str] = {}
        for owner, (addrs, node) in self.held.items():
            lease = self.stored(owner)
            assert lease is not None
            assert held_of(lease) == (addrs, node), f"{owner} differs from the model"
            for _, a in addrs:
                assert a not in seen, f"{owner} and {seen[a]} share {a}"
                seen[a] = owner
                holder = self.run(self.ipam.owner_of(a))
                assert holder is not None and holder.owner == owner
        for pool in (V4, V6):
            assert self.used(pool) == sum(1 for a in seen
                                          if GEO[pool].contains(ipaddress.ip_address(a)))
        findings = self.run(check_and_repair(self.ipam))
        assert findings == [], findings

    @invariant()
    def statistics_and_the_expiry_index_agree_with_the_records(self) -> None:
        leases = [self.stored(o) for o in self.held]
        classes = Counter("ephemeral" if x.kind is LeaseKind.EPHEMERAL else x.state.value
                          for x in leases if x is not None)
        st = self.run(self.ipam.stats())
        assert st.records == dict(classes)
        for ps in st.pools:
            mine = Counter("ephemeral" if x.kind is LeaseKind.EPHEMERAL else x.state.value
                           for x in leases if x is not None and ps.pool in x.pools)
            assert ps.records == dict(mine), ps.pool
        due = {o for o, until in self.retained_until.items() if 0 <= until <= self.now}
        assert set(self.run(self.ipam.expired(now=self.now))) == due

    @rule()
    def trim_the_change_log(self) -> None:
        """The log keeps a bounded history: followers behind it get a gap."""
        self.run(self.ipam.redis.xtrim(layout.LOG, maxlen=1, approximate=False))

    @precondition(lambda self: self.restarts < self.MAX_RESTARTS)
    @rule()
    def restart_the_store(self) -> None:
        """A restart keeps every write (AOF, clean shutdown) but changes the store's
        identity: followers cannot know what they missed and take a fresh snapshot."""
        assert self.server is not None
        self.restarts += 1
        self.server.stop()
        self.server.start()
        assert self.run(self.ipam.ping())

    async def catch_up(self, f: Follower, fresh: RoutingSnapshot) -> None:
        async with asyncio.timeout(60):
            while (f.revision, f.identity) != (fresh.revision, fresh.identity):
                try:
                    await f.step()
                except IpamError:  # the store (or the feed) is coming back
                    await asyncio.sleep(0.05)

    @invariant()
    def a_follower_of_the_change_log_sees_what_a_fresh_snapshot_sees(self) -> None:
        fresh = self.run(self.ipam.routing_snapshot())
        for f in (self.direct, self.via_feed):
            self.run(self.catch_up(f, fresh))
            assert f.view is not None and f.view.state() == fresh.state()


@pytest.fixture
def machine_server() -> Iterator[RedisServer]:
    with RedisServer(port=free_port()) as server:  # the same port across restarts
        yield server


def test_ipam_invariants_hold_under_random_operations(machine_server: RedisServer) -> None:
    IpamMachine.url = machine_server.url
    IpamMachine.server = machine_server
    run_state_machine_as_test(
        IpamMachine,
        settings=settings(max_examples=100, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
