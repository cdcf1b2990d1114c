"""Sticky reservations per StatefulSet ordinal: claim, assign, retain, expire, re-home."""

from __future__ import annotations

import ipaddress

import pytest

from ipam import (
    AddressTaken,
    InvalidAddress,
    NodeFailurePolicy,
    PoolSpec,
    RedisIpam,
    ReservationConflict,
    ReservationState,
    StaleEpoch,
    check_and_repair,
    ephemeral_owner,
)
from ipam.ranges import FOREVER
from tests.support.pools import K0, K1


async def test_first_claim_waits_for_a_node_then_takes_its_block(ipam: RedisIpam,
                                                                 pool_a: PoolSpec) -> None:
    pending = await ipam.claim(K0, pool="pool-a", retain=3600,
                               policy=NodeFailurePolicy.WAIT)
    assert pending.address is None and pending.node is None
    assert pending.state is ReservationState.RESERVED
    bound = await ipam.claim(K0, pool="pool-a", node="n2", holder="uid-1", pod="prod/db-0")
    assert bound.node == "n2" and bound.address is not None
    assert bound.state is ReservationState.BOUND and bound.holder == "uid-1"
    # the scheduler's call keeps what admission recorded
    assert bound.retain == 3600 and bound.policy is NodeFailurePolicy.WAIT
    blocks = {b.node: b.cidr for b in await ipam.blocks("pool-a")}
    assert bound.address in blocks["n2"]
    # retried: same answer
    assert (await ipam.claim(K0, pool="pool-a", node="n2", holder="uid-1")).address == (
        bound.address)


async def test_a_reservation_is_homed_and_refuses_another_node(ipam: RedisIpam,
                                                               pool_a: PoolSpec) -> None:
    await ipam.claim(K0, pool="pool-a", node="n1")
    with pytest.raises(ReservationConflict, match="homed on node 'n1'"):
        await ipam.claim(K0, pool="pool-a", node="n2")


async def test_explicit_address_is_reserved_and_homed_when_scheduled(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    res = await ipam.claim(K0, pool="pool-a", address="10.20.0.40")
    assert res.address == ipaddress.IPv4Address("10.20.0.40") and res.node is None
    assert (await ipam.owner_of("10.20.0.40")) is not None
    res = await ipam.claim(K0, pool="pool-a", node="n3", holder="u")
    assert res.node == "n3"
    # its block (10.20.0.32/28) was unclaimed: it became n3's, routes stay aggregated
    assert [(b.cidr, b.node) for b in await ipam.blocks("pool-a")] == [
        (ipaddress.IPv4Network("10.20.0.32/28"), "n3")]


async def test_explicit_address_in_another_nodes_block_becomes_a_migrated_32(
        ipam: RedisIpam, pool_a: PoolSpec) -> None:
    eph = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c"))
    await ipam.claim(K0, pool="pool-a", address="10.20.0.5")
    res = await ipam.claim(K0, pool="pool-a", node="n1")
    assert res.node == "n1"  # block 0 is n1's: home is n1, no /32
    # an explicit address's block node is its home: another node is refused ...
    res1 = await ipam.claim(K1, pool="pool-a", address="10.20.0.6")
    assert res1.node == "n1"
    with pytest.raises(ReservationConflict, match="homed on node 'n1'"):
        await ipam.claim(K1, pool="pool-a", node="n2")
    # ... until it is re-homed as a single /32
    await ipam.rehome_reservation(K1, pool="pool-a", to_node="n2")
    view = await ipam.routing_view()
    assert [(str(m.address), m.node, m.block_node) for m in view.migrated] == [
        ("10.20.0.6", "n2", "n1")]
    assert eph.address != res.address
    assert await check_and_repair(ipam) == []


async def test_explicit_address_conflicts(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    await ipam.claim(K0, pool="pool-a", address="10.20.0.40")
    with pytest.raises(AddressTaken, match="sts/prod/db/0") as e:
        await ipam.claim(K1, pool="pool-a", address="10.20.0.40")
    assert e.value.owner == "sts/prod/db/0"
    with pytest.raises(ReservationConflict, match=r"already holds 10\.20\.0\.40"):
        await ipam.claim(K0, pool="pool-a", address="10.20.0.41")
    with pytest.raises(InvalidAddress, match="excluded"):
        await ipam.claim(K1, pool="pool-a", address="10.20.0.0")
    with pytest.raises(InvalidAddress, match="outside pool"):
        await ipam.claim(K1, pool="pool-a", address="10.99.0.1")
    assert await ipam.reservation(K1) is None


async def test_retained_reservation_comes_back_within_retain(ipam: RedisIpam,
                                                             pool_a: PoolSpec) -> None:
    first = await ipam.claim(K0, pool="pool-a", node="n1", holder="u1", retain=60, now=100)
    status, kept = await ipam.retain_reservation(K0, pool="pool-a", now=200)
    assert status == "ok" and kept is not None
    assert kept.state is ReservationState.RETAINED and kept.expires_at == 260
    assert not await ipam.expire_reservation(K0, pool="pool-a", now=259)
    back = await ipam.claim(K0, pool="pool-a", now=250)
    assert back.state is ReservationState.RESERVED and back.address == first.address
    assert back.expires_at == 0


async def test_retained_reservation_expires_after_retain(ipam: RedisIpam,
                                                         pool_a: PoolSpec) -> None:
    first = await ipam.claim(K0, pool="pool-a", node="n1", retain=60, now=100)
    await ipam.retain_reservation(K0, pool="pool-a", now=200)
    assert await ipam.expire_reservation(K0, pool="pool-a", now=261)
    assert await ipam.reservation(K0) is None
    assert await ipam.owner_of(str(first.address)) is None


async def test_retain_zero_releases_and_forever_never_expires(ipam: RedisIpam,
                                                              pool_a: PoolSpec) -> None:
    await ipam.claim(K0, pool="pool-a", node="n1")
    status, _ = await ipam.retain_reservation(K0, pool="pool-a")
    assert status == "released" and await ipam.reservation(K0) is None
    await ipam.claim(K1, pool="pool-a", node="n1", retain=FOREVER)
    await ipam.retain_reservation(K1, pool="pool-a", now=1)
    assert not await ipam.expire_reservation(K1, pool="pool-a", now=10**12)


async def test_block_move_rehomes_reservations_and_bumps_epoch(ipam: RedisIpam,
                                                                pool_a: PoolSpec) -> None:
    r0 = await ipam.claim(K0, pool="pool-a", node="n1", holder="u0")
    r1 = await ipam.claim(K1, pool="pool-a", node="n1", holder="u1")
    eph = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c"))
    moved = await ipam.rehome_block(pool="pool-a", block=0, from_node="n1", to_node="n2")
    assert sorted(moved) == sorted([K0.owner, K1.owner])
    a0 = await ipam.reservation(K0)
    assert a0 is not None and a0.node == "n2" and a0.epoch == r0.epoch + 1
    assert a0.address == r0.address
    a1 = await ipam.reservation(K1)
    assert a1 is not None and a1.epoch == r1.epoch + 1
    assert [(b.index, b.node) for b in await ipam.blocks("pool-a")] == [(0, "n2")]
    # retry after success is a no-op, and the ephemeral lease was left for GC
    assert await ipam.rehome_block(pool="pool-a", block=0, from_node="n1", to_node="n2") == []
    assert (await ipam.lease(pool="pool-a", owner=eph.owner)) is not None
    assert await check_and_repair(ipam) == []


async def test_single_address_rehome_is_fenced_by_epoch(ipam: RedisIpam,
                                                        pool_a: PoolSpec) -> None:
    r0 = await ipam.claim(K0, pool="pool-a", node="n1", holder="u0")
    moved = await ipam.rehome_reservation(K0, pool="pool-a", to_node="n3",
                                          expect_epoch=r0.epoch)
    assert moved.node == "n3" and moved.epoch == r0.epoch + 1 and moved.holder == ""
    # a retry of the same call returns the same result without a second bump
    again = await ipam.rehome_reservation(K0, pool="pool-a", to_node="n3",
                                          expect_epoch=r0.epoch)
    assert again.epoch == moved.epoch
    with pytest.raises(StaleEpoch):
        await ipam.rehome_reservation(K0, pool="pool-a", to_node="n4", expect_epoch=r0.epoch)
    view = await ipam.routing_view()
    assert [(m.address, m.node) for m in view.migrated] == [(r0.address, "n3")]
    # moving the whole block to n3 makes the /32 native again
    await ipam.rehome_block(pool="pool-a", block=0, from_node="n1", to_node="n3")
    assert (await ipam.routing_view()).migrated == []
    hist = await ipam.history(str(r0.address))
    assert [h.op for h in hist][:2] == ["rehome", "reserve"]


async def test_unbind_keeps_the_address(ipam: RedisIpam, pool_a: PoolSpec) -> None:
    r0 = await ipam.claim(K0, pool="pool-a", node="n1", holder="u0")
    # a stale holder does not unbind the new one
    await ipam.unbind(K0, pool="pool-a", holder="other")
    assert (await ipam.reservation(K0)).state is ReservationState.BOUND  # type: ignore[union-attr]
    res = await ipam.unbind(K0, pool="pool-a", holder="u0")
    assert res is not None and res.state is ReservationState.RESERVED
    assert res.address == r0.address and res.holder == ""
