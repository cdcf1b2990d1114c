"""A hypothesis state machine drives allocate/release/reserve/re-home/retain/expire
against a real redis-server and checks the IPAM invariants after every step:
no address held by two owners, every acknowledged allocation still there with the
same address, no leak, and the stored indexes consistent (``ipam check`` is clean)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
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

from ipam import (
    AddressTaken,
    InvalidAddress,
    PoolExhausted,
    PoolSpec,
    RedisIpam,
    ReservationConflict,
    ReservationKey,
    ReservationState,
    StaleEpoch,
    check_and_repair,
    ephemeral_owner,
    pool_prefix,
)
from ipam.connection import open_redis
from tests.support.redis_server import RedisServer

NODES = ["n1", "n2", "n3"]
POOL = "sm"
# 64 addresses in /29 blocks: 8 blocks, 62 usable — small enough to exhaust.
SPEC = PoolSpec(name=POOL, cidr="10.77.0.0/26", block_size=29)
KEYS = [ReservationKey.of("ns", "sts", i) for i in range(6)]
CONTAINERS = [f"c{i}" for i in range(40)]


class IpamMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        client, _ = self.run(open_redis(self.url))
        self.ipam = RedisIpam(client, actor="sm")
        self.run(client.flushall())
        self.run(self.ipam.apply_pool(SPEC))
        self.now = 1000.0
        # model: owner -> (address, node or None)
        self.held: dict[str, tuple[ipaddress.IPv4Address | None, str | None]] = {}
        self.epochs: dict[str, int] = {}
        self.retained_until: dict[str, float] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.ipam.aclose())
        self.loop.close()

    @initialize()
    def start(self) -> None:
        pass

    @rule(c=st.sampled_from(CONTAINERS), node=st.sampled_from(NODES))
    def allocate(self, c: str, node: str) -> None:
        owner = ephemeral_owner(c)
        try:
            lease = self.run(self.ipam.allocate(pool=POOL, node=node, owner=owner, now=self.now))
        except PoolExhausted:
            assert self.used() >= 62
            return
        if owner in self.held:
            assert lease.address == self.held[owner][0], "retry changed an address"
        self.held[owner] = (lease.address, lease.node)

    @rule(c=st.sampled_from(CONTAINERS))
    def release(self, c: str) -> None:
        owner = ephemeral_owner(c)
        got = self.run(self.ipam.release(pool=POOL, owner=owner, now=self.now))
        assert (got is not None) == (owner in self.held)
        self.held.pop(owner, None)

    @rule(k=st.sampled_from(KEYS), node=st.none() | st.sampled_from(NODES),
          explicit=st.none() | st.integers(min_value=0, max_value=66),
          retain=st.sampled_from([0.0, 30.0, -1.0]))
    def claim(self, k: ReservationKey, node: str | None, explicit: int | None,
              retain: float) -> None:
        addr = str(ipaddress.IPv4Address(int(SPEC.geometry().first) + explicit)) if (
            explicit is not None) else None
        before = self.held.get(k.owner)
        try:
            res = self.run(self.ipam.claim(k, pool=POOL, node=node, address=addr, retain=retain,
                                           holder="uid" if node else "", now=self.now))
        except (AddressTaken, InvalidAddress, PoolExhausted, ReservationConflict):
            assert self.held.get(k.owner) == before
            return
        if before is not None and before[0] is not None:
            assert res.address == before[0], "a reservation's address changed"
        if addr is not None:
            assert str(res.address) == addr
        self.held[k.owner] = (res.address, res.node)
        self.epochs[k.owner] = res.epoch
        self.retained_until.pop(k.owner, None)

    @rule(k=st.sampled_from(KEYS))
    def retain(self, k: ReservationKey) -> None:
        if k.owner not in self.held:
            return
        status, res = self.run(self.ipam.retain_reservation(k, pool=POOL, now=self.now))
        if status == "released":
            self.held.pop(k.owner)
            self.retained_until.pop(k.owner, None)
        else:
            assert res is not None and res.state is ReservationState.RETAINED
            self.retained_until[k.owner] = res.expires_at

    @rule(dt=st.sampled_from([1.0, 20.0, 50.0]))
    def advance_and_expire(self, dt: float) -> None:
        self.now += dt
        for k in KEYS:
            if k.owner not in self.held:
                continue
            freed = self.run(self.ipam.expire_reservation(k, pool=POOL, now=self.now))
            until = self.retained_until.get(k.owner)
            should = until is not None and 0 <= until <= self.now
            assert freed == should, f"expiry of {k}: freed={freed}, until={until}"
            if freed:
                self.held.pop(k.owner)
                self.retained_until.pop(k.owner)

    @precondition(lambda self: any(v[1] for v in self.held.values()))
    @rule(data=st.data(), to=st.sampled_from(NODES))
    def rehome_block(self, data: st.DataObject, to: str) -> None:
        blocks = self.run(self.ipam.blocks(POOL))
        if not blocks:
            return
        b = data.draw(st.sampled_from(blocks))
        moved = self.run(self.ipam.rehome_block(pool=POOL, block=b.index, from_node=b.node,
                                                to_node=to, now=self.now))
        for owner in moved:
            addr, _ = self.held[owner]
            self.held[owner] = (addr, to)
            self.epochs[owner] = self.epochs.get(owner, 1) + 1

    @rule(k=st.sampled_from(KEYS), to=st.sampled_from(NODES), stale=st.booleans())
    def rehome_one(self, k: ReservationKey, to: str, stale: bool) -> None:
        if k.owner not in self.held:
            return
        cur = self.epochs.get(k.owner, 1)
        try:
            res = self.run(self.ipam.rehome_reservation(
                k, pool=POOL, to_node=to, expect_epoch=cur - 1 if stale else cur, now=self.now))
        except StaleEpoch:
            assert stale and self.held[k.owner][1] != to
            return
        assert res.address == self.held[k.owner][0]
        if self.held[k.owner][1] != to:
            assert res.epoch == cur + 1
        self.held[k.owner] = (res.address, to)
        self.epochs[k.owner] = res.epoch

    def used(self) -> int:
        return int(self.run(self.ipam.redis.hlen(pool_prefix(POOL) + "owner")))

    @invariant()
    def store_matches_model_and_is_consistent(self) -> None:
        recs = self.run(self.ipam.redis.hgetall(pool_prefix(POOL) + "rec"))
        stored = {k.decode(): json.loads(v) for k, v in recs.items()}
        assert set(stored) == set(self.held), "owners differ from acknowledged ones"
        geo = SPEC.geometry()
        seen: dict[int, str] = {}
        for owner, rec in stored.items():
            addr, node = self.held[owner]
            assert (rec["node"] or None) == node, f"{owner} homed on {rec['node']}, not {node}"
            if rec["off"] >= 0:
                assert rec["off"] not in seen, f"{owner} and {seen[rec['off']]} share an address"
                seen[rec["off"]] = owner
                assert geo.address_at(rec["off"]) == addr
            else:
                assert addr is None
        findings = self.run(check_and_repair(self.ipam))
        assert findings == [], findings


@pytest.fixture
def machine_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_ipam_invariants_hold_under_random_operations(machine_server: RedisServer) -> None:
    IpamMachine.url = machine_server.url
    run_state_machine_as_test(
        IpamMachine,
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
