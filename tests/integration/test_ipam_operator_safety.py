"""Operator safety in the store (issue 11): a live address is never handed out by a
release, pools are applied and deleted all-or-nothing, audit history lives and dies
with its pool, free counts are exact, and ``ipam check --repair`` finds orphan keys
and bitmap damage and fixes them without freeing an address a record holds."""

from __future__ import annotations

import json

import pytest

from ipam import (
    InvalidPool,
    PoolInUse,
    PoolNotFound,
    PoolSpec,
    RedisIpam,
    ReservationInUse,
    ReservationState,
    check_and_repair,
    ephemeral_owner,
    layout,
)
from tests.support.pools import K0, K1

A = PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28)


async def keys(ipam: RedisIpam) -> dict[bytes, bytes]:
    r = ipam.redis
    return {k: await r.dump(k) for k in sorted(await r.keys("*"))}


# ------------------------------------------------------------------ release


async def test_release_of_a_bound_reservation_is_refused_naming_the_pod(
        ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    res = await ipam.claim(K0, pool="pool-a", node="n1", holder="uid-1", pod="prod/db-0")
    with pytest.raises(ReservationInUse, match=r"pod prod/db-0 \(UID uid-1\)") as e:
        await ipam.release_reservation(K0)
    assert (e.value.holder, e.value.pod) == ("uid-1", "prod/db-0")
    assert (await ipam.reservation(K0)) == res
    # a missing key is not an error, and is told apart
    assert await ipam.release_reservation(K1) is None


async def test_forced_release_quarantines_until_the_holder_is_gone(ipam: RedisIpam) -> None:
    await ipam.apply_pool(PoolSpec(name="tiny", cidr="10.9.0.0/30", block_size=30))
    # 4 addresses, 2 excluded: K0 takes one, an ephemeral lease the other
    res = await ipam.claim(K0, pool="tiny", node="n1", holder="uid-1")
    other = await ipam.allocate(pool="tiny", node="n1", owner=ephemeral_owner("c"))
    await ipam.release(owner=other.owner)
    q = await ipam.release_reservation(K0, force=True)
    assert q is not None and q.state is ReservationState.QUARANTINED
    assert q.address == res.address and q.holder == "uid-1"
    # the address is never handed out while quarantined
    got = await ipam.allocate(pool="tiny", node="n2", owner=ephemeral_owner("d"))
    assert got.address == other.address
    with pytest.raises(Exception, match="no free address"):
        await ipam.allocate(pool="tiny", node="n2", owner=ephemeral_owner("e"))
    # a second forced release and a re-claim of the ordinal change nothing
    again = await ipam.release_reservation(K0, force=True)
    assert again is not None and again.state is ReservationState.QUARANTINED
    with pytest.raises(ReservationInUse, match="quarantined until pod UID 'uid-1'"):
        await ipam.claim(K0, pool="tiny")
    with pytest.raises(ReservationInUse, match="stays quarantined"):
        await ipam.release_reservation(K0)
    # another holder's word does not free it; the holder's does
    assert (await ipam.confirm_holder_gone(K0.owner, holder="uid-9")) is not None
    assert (await ipam.owner_of(str(res.address))) is not None
    freed = await ipam.confirm_holder_gone(K0.owner, holder="uid-1")
    assert freed is not None and freed.state is ReservationState.QUARANTINED
    assert await ipam.owner_of(str(res.address)) is None
    assert await ipam.reservation(K0) is None
    assert [h.op for h in await ipam.history(str(res.address))][:2] == [
        "release", "quarantine"]
    assert await check_and_repair(ipam) == []


async def test_holder_gone_unbinds_a_bound_reservation(ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    res = await ipam.claim(K0, pool="pool-a", node="n1", holder="uid-1")
    got = await ipam.confirm_holder_gone(K0.owner, holder="uid-1")
    assert got is not None and got.state is ReservationState.RESERVED and got.holder == ""
    assert got.address == res.address
    # now an operator may release it
    assert await ipam.release_reservation(K0) is not None


# ------------------------------------------------------------------ pools


async def test_pool_apply_is_all_or_nothing(ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    await ipam.claim(K0, pool="pool-a", node="n1")
    before = await keys(ipam)
    new = PoolSpec(name="pool-b", cidr="10.30.0.0/24")
    bad_change = PoolSpec(name="pool-a", cidr="10.20.0.0/23", block_size=28)
    with pytest.raises(PoolInUse, match=r"'pool-a' is in use .* nothing was applied"):
        await ipam.apply_pools([new, bad_change])
    assert await keys(ipam) == before, "a refused apply wrote something"
    with pytest.raises(InvalidPool, match="overlap"):
        await ipam.apply_pools([new, PoolSpec(name="pool-c", cidr="10.30.0.128/25")])
    with pytest.raises(InvalidPool, match="overlaps existing pool 'pool-a'"):
        await ipam.apply_pools([new, PoolSpec(name="pool-c", cidr="10.20.0.0/16")])
    assert await keys(ipam) == before
    # dry run: validated against the store, reported, not written
    plan = await ipam.apply_pools([A, new], dry_run=True)
    assert [(p.name, p.status) for p in plan] == [("pool-a", "unchanged"),
                                                  ("pool-b", "created")]
    assert await keys(ipam) == before
    done = await ipam.apply_pools([A, new])
    assert [(p.name, p.status) for p in done] == [("pool-a", "unchanged"),
                                                  ("pool-b", "created")]
    changed = PoolSpec(name="pool-b", cidr="10.30.0.0/24", node_selector={"zone": "a"})
    assert [p.status for p in await ipam.apply_pools([changed])] == ["configured"]
    assert (await ipam.pool("pool-b")).spec.node_selector == {"zone": "a"}


async def test_an_unused_pool_may_change_its_cidr_and_starts_afresh(ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    lease = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c"))
    await ipam.release(owner=lease.owner)
    # a claimed block keeps the geometry: the block must be given back first
    with pytest.raises(PoolInUse, match="1 claimed blocks"):
        await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.21.0.0/24", block_size=28))
    assert await ipam.release_block(pool="pool-a", block=0, node="n1")
    await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.21.0.0/24", block_size=28))
    got = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("d"))
    assert str(got.address) == "10.21.0.1"
    assert await check_and_repair(ipam) == []


async def test_pool_delete_names_what_blocks_it_and_takes_history_along(
        ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    res = await ipam.claim(K0, pool="pool-a", node="n1", holder="u")
    await ipam.claim(K1, pool="pool-a")  # waits for its address
    with pytest.raises(PoolInUse, match=r"in use by 2 .*sts/prod/db/0 \(10\.20\.0\.1\)") as e:
        await ipam.delete_pool("pool-a")
    assert "sts/prod/db/1 (no address yet)" in str(e.value)
    assert len(await ipam.history(str(res.address))) == 1
    await ipam.unbind(K0)
    await ipam.release_reservation(K0)
    await ipam.release_reservation(K1)
    await ipam.delete_pool("pool-a")
    with pytest.raises(PoolNotFound):
        await ipam.pool("pool-a")
    # nothing of the pool is left but the log of what happened to routing
    left = [k for k in await ipam.redis.keys("sip:{stickyip}:p:*")]
    assert left == []
    # a re-created pool of the same name shows no history of the old one
    await ipam.apply_pool(A)
    assert await ipam.history(str(res.address)) == []
    assert await check_and_repair(ipam) == []


async def test_free_counts_are_exact_when_a_held_address_is_excluded(
        ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    lease = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c"))
    st = await ipam.pool_status("pool-a")
    assert (st.used, st.excluded, st.free) == (1, 2, 253)
    held = await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28,
                                          exclude=[str(lease.address), "10.20.0.100"]))
    assert held == 1
    st = await ipam.pool_status("pool-a")
    # 256 - 4 excluded - 1 used + 1 counted twice
    assert (st.used, st.excluded, st.excluded_held, st.free) == (1, 4, 1, 252)
    view = await ipam.address_view("pool-a")
    assert view.free_in_node_blocks == {"n1": 16 - 2} and view.free_total == 252
    await ipam.release(owner=lease.owner)
    st = await ipam.pool_status("pool-a")
    assert (st.used, st.excluded_held, st.free) == (0, 0, 252)
    # released, the excluded address is never handed out again
    again = [await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner(f"x{i}"))
             for i in range(14)]
    assert lease.address not in {a.address for a in again}
    assert await check_and_repair(ipam) == []


# ------------------------------------------------------------------ check


async def test_check_finds_and_repairs_bitmap_damage_without_freeing_held_addresses(
        ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    res = await ipam.claim(K0, pool="pool-a", node="n1", holder="u")
    eph = [await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner(f"c{i}"))
           for i in range(3)]
    ref = await ipam.pool("pool-a")
    r = ipam.redis
    u0 = ref.prefix + "u:" + ref.geo.block_hex(0)
    # a held address marked free, a free address marked used, then the bitmap truncated
    await r.setbit(u0, 1, 0)
    await r.setbit(u0, 9, 1)
    found = await check_and_repair(ipam)
    assert sorted((f.kind, f.address) for f in found) == [
        ("bit-clear", "10.20.0.1"), ("leaked-address", "10.20.0.9")]
    assert all("10.20.0." in f.detail for f in found)
    await r.set(u0, b"\xff")
    found = await check_and_repair(ipam)
    assert [f.kind for f in found] == ["block-bitmap-damaged"]
    assert found[0].address == "10.20.0.0/28"
    fixed = await check_and_repair(ipam, repair=True)
    assert all(f.repaired for f in fixed)
    assert await check_and_repair(ipam) == []
    # every held address survived the repair, and the next allocation avoids them
    held = {str(res.address)} | {str(e.address) for e in eph}
    for a in held:
        assert await ipam.owner_of(a) is not None
    nxt = await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("next"))
    assert str(nxt.address) not in held


async def test_check_finds_a_lost_block_and_orphan_keys(ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    await ipam.allocate(pool="pool-a", node="n1", owner=ephemeral_owner("c"))
    ref = await ipam.pool("pool-a")
    r = ipam.redis
    # the cursor skips ahead past block 1: that block would never be handed out
    await r.hset(ref.prefix + "m", "cur", ref.geo.block_hex(2))
    # keys of a pool generation that no longer exists, and of nothing at all
    await r.set(layout.pool_prefix("pool-a", "g99") + "m", "x")
    await r.set(layout.pool_prefix("gone", "g1") + "u:0", "x")
    await r.set(layout.PREFIX + "stray", "x")
    await r.set("sip:datapath:node-address", "kept")  # not the IPAM's
    found = await check_and_repair(ipam)
    assert sorted((f.kind, f.key or f.address) for f in found) == [
        ("lost-block", "1"),
        ("orphan-key", "sip:{stickyip}:p:gone:g1:u:0"),
        ("orphan-key", "sip:{stickyip}:p:pool-a:g99:m"),
        ("orphan-key", "sip:{stickyip}:stray")]
    lost = next(f for f in found if f.kind == "lost-block")
    assert lost.address == "10.20.0.16/28"
    fixed = await check_and_repair(ipam, repair=True)
    assert all(f.repaired for f in fixed)
    assert await check_and_repair(ipam) == []
    assert await r.get("sip:datapath:node-address") == b"kept"
    # the lost block is handed out again
    got = await ipam.allocate(pool="pool-a", node="n2", owner=ephemeral_owner("d"))
    assert str(got.address) == "10.20.0.16"


async def test_repair_restores_a_records_address_before_anything_else(
        ipam: RedisIpam) -> None:
    await ipam.apply_pool(A)
    res = await ipam.claim(K0, pool="pool-a", node="n1", holder="u")
    ref = await ipam.pool("pool-a")
    r = ipam.redis
    bh = ref.geo.block_hex(0)
    # the owner index lost K0's entry and its bit: the address looks free
    await r.hdel(ref.prefix + "o:" + bh, "1")
    await r.setbit(ref.prefix + "u:" + bh, 1, 0)
    found = await check_and_repair(ipam)
    assert found[0].kind == "owner-without-address" and found[0].address == str(res.address)
    await check_and_repair(ipam, repair=True)
    holder = await ipam.owner_of(str(res.address))
    assert holder is not None and holder.owner == K0.owner
    assert await check_and_repair(ipam) == []
    # counters damaged: recomputed from the records
    await r.hincrby(layout.COUNTS, "bound", 5)
    await r.hincrby(ref.prefix + "m", "used", 3)
    kinds = sorted(f.kind for f in await check_and_repair(ipam))
    assert kinds == ["pool-counter-mismatch", "store-counter-mismatch"]
    await check_and_repair(ipam, repair=True)
    assert await check_and_repair(ipam) == []
    assert json.loads(await r.hget(layout.RECORDS, K0.owner))["state"] == "bound"
