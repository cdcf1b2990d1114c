"""IPv6 pools and dual-stack leases on a real redis-server: addresses near the edges of
a /64 round-trip exactly (Lua never does arithmetic on a block index), fresh blocks
come from a hex cursor that carries and ends correctly, and a dual-stack reservation
keeps one home and one epoch through re-homing."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipam import (
    InvalidAddress,
    InvalidRequest,
    PoolExhausted,
    PoolSpec,
    RedisIpam,
    StoreLayoutError,
    check_and_repair,
    ephemeral_owner,
    layout,
    scripts,
)
from ipam.connection import open_redis
from tests.support.pools import K0, V6
from tests.support.redis_server import RedisServer


@given(width=st.integers(min_value=1, max_value=28), data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_lua_hex_increment_matches_python(redis_server: RedisServer, width: int,
                                          data: st.DataObject) -> None:
    top = 16 ** width - 1
    value = data.draw(st.one_of(st.integers(min_value=0, max_value=top),
                                st.integers(min_value=max(0, top - 20), max_value=top),
                                st.sampled_from([0xF, 0xFF, 0xFFF, 0x0FFF_FFFF]).filter(
                                    lambda v: v <= top)))
    r = __import__("redis").Redis.from_url(redis_server.url)
    try:
        got = r.eval(scripts.HEX_INCREMENT, 1, layout.LAYOUT, format(value, f"0{width}x"))
    finally:
        r.close()
    want = format(value + 1, f"0{width}x") if value < top else "overflow"
    assert got.decode() == want


@pytest.fixture(scope="module")
def edge_server() -> AsyncIterator[RedisServer]:  # type: ignore[misc]
    with RedisServer() as server:
        yield server


EDGE = st.integers(min_value=0, max_value=(1 << 16) - 1)


@given(prefix=st.sampled_from([112, 120, 122, 127, 128]),
       offset=st.one_of(EDGE, EDGE.map(lambda x: 2**64 - 1 - x)),
       node=st.sampled_from(["n1", "n2"]))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
async def test_addresses_near_the_edges_of_a_64_round_trip(
        edge_server: RedisServer, prefix: int, offset: int, node: str) -> None:
    client, _ = await open_redis(edge_server.url)
    await client.flushall()
    ipam = RedisIpam(client, actor="edge")
    try:
        spec = PoolSpec(name="edge", cidr="fd00:0:0:7::/64", block_size=prefix)
        await ipam.apply_pool(spec)
        geo = spec.geometry()
        addr = ipaddress.IPv6Address(geo.first + offset)
        if offset in (0, 2**64 - 1):  # the pool's own first and last address
            with pytest.raises(InvalidAddress, match="excluded"):
                await ipam.claim(K0, pool="edge", address=addr)
            return
        res = await ipam.claim(K0, pool="edge", address=addr)
        assert res.address == addr and res.addresses[0].block == offset >> (128 - prefix)
        held = await ipam.owner_of(str(addr))
        assert held is not None and held.owner == K0.owner
        # scheduling claims the address's block for the node: routes stay aggregated
        res = await ipam.claim(K0, pool="edge", node=node, holder="u")
        assert res.address == addr and res.node == node
        view = await ipam.routing_view()
        assert [(b.node, addr in b.cidr) for b in view.blocks] == [(node, True)]
        assert [h.op for h in await ipam.history(str(addr))] == ["home", "reserve"]
        # a neighbour in the same block comes from the node's block
        if geo.block_size > 2:
            eph = await ipam.allocate(pool="edge", node=node, owner=ephemeral_owner("c"))
            assert eph.address is not None and eph.address in view.blocks[0].cidr
        assert await check_and_repair(ipam) == []
        await ipam.unbind(K0, holder="u")
        assert (await ipam.release_reservation(K0)) is not None
        assert await ipam.owner_of(str(addr)) is None
    finally:
        await ipam.aclose()


async def test_fresh_blocks_of_a_pool_with_2_58_blocks(ipam: RedisIpam) -> None:
    await ipam.apply_pool(V6)
    ref = await ipam.pool("v6")
    assert ref.geo.block_count == 2**58
    got = [await ipam.allocate(pool="v6", node=f"n{i}", owner=ephemeral_owner(f"c{i}"))
           for i in range(3)]
    assert [g.addresses[0].block for g in got] == [0, 1, 2]
    # move the cursor to the pool's last blocks: the increment stays exact above 2^53
    last = 2**58 - 1
    await ipam.redis.hset(ref.prefix + "m", "cur", ref.geo.block_hex(last - 1))
    tail = [await ipam.allocate(pool="v6", node=f"m{i}", owner=ephemeral_owner(f"t{i}"))
            for i in range(2)]
    assert [t.addresses[0].block for t in tail] == [last - 1, last]
    assert str(tail[1].address) == "fd00:20::ffff:ffff:ffff:ffc0"
    assert await ipam.redis.hget(ref.prefix + "m", "cur") == b"end"
    # no fresh block is left: the next node borrows an address of another node's block
    borrowed = await ipam.allocate(pool="v6", node="late", owner=ephemeral_owner("late"))
    view = await ipam.routing_view()
    assert [(m.address, m.node) for m in view.migrated] == [(borrowed.address, "late")]
    assert await check_and_repair(ipam) == []


async def test_a_small_v6_pool_of_single_address_blocks_exhausts_cleanly(
        ipam: RedisIpam) -> None:
    # 16 blocks of one address each (/128), first and last excluded: 14 usable. The
    # cursor skips the all-excluded first block and carries from f to 10 in hex.
    await ipam.apply_pool(PoolSpec(name="tiny6", cidr="fd00:9::/124", block_size=128))
    got = [await ipam.allocate(pool="tiny6", node="n1", owner=ephemeral_owner(f"c{i}"))
           for i in range(14)]
    assert [int(g.address) & 0xF for g in got if g.address] == list(range(1, 15))
    with pytest.raises(PoolExhausted, match="no free address left"):
        await ipam.allocate(pool="tiny6", node="n1", owner=ephemeral_owner("x"))
    await ipam.release(owner=got[3].owner)
    again = await ipam.allocate(pool="tiny6", node="n2", owner=ephemeral_owner("y"))
    assert again.address == got[3].address
    assert await check_and_repair(ipam) == []


async def test_dual_stack_lease_takes_one_address_per_family(dual: RedisIpam) -> None:
    lease = await dual.allocate(pools=["v4", "v6"], node="n1", owner=ephemeral_owner("c"))
    assert [str(a.address) for a in lease.addresses] == ["10.20.0.1", "fd00:20::1"]
    assert lease.address4 == ipaddress.IPv4Address("10.20.0.1")
    assert lease.address6 == ipaddress.IPv6Address("fd00:20::1")
    assert (lease.pool, lease.pools) == ("v4", ("v4", "v6"))
    again = await dual.allocate(pools=["v4", "v6"], node="n1", owner=ephemeral_owner("c"))
    assert again.addresses == lease.addresses
    await dual.apply_pool(PoolSpec(name="v4b", cidr="10.21.0.0/24"))
    with pytest.raises(InvalidRequest, match="both IPv4"):
        await dual.allocate(pools=["v4", "v4b"], node="n1", owner=ephemeral_owner("d"))
    assert (await dual.release(owner=lease.owner)) is not None
    assert await dual.owner_of("fd00:20::1") is None


async def test_dual_stack_claim_is_all_or_nothing(dual: RedisIpam) -> None:
    await dual.apply_pool(PoolSpec(name="full6", cidr="fd00:30::/126", block_size=126))
    # 4 addresses, 2 excluded: take both usable ones
    for i in range(2):
        await dual.allocate(pool="full6", node="n1", owner=ephemeral_owner(f"f{i}"))
    before = await dual.pool_status("v4")
    with pytest.raises(PoolExhausted, match="full6"):
        await dual.claim(K0, pools=["v4", "full6"], node="n2", holder="u")
    assert await dual.reservation(K0) is None
    assert (await dual.pool_status("v4")).used == before.used
    assert [b.node for b in await dual.blocks("v4")] == [], "a block was claimed anyway"
    assert await check_and_repair(dual) == []


async def test_dual_stack_reservation_has_one_home_and_one_epoch(dual: RedisIpam) -> None:
    # explicit IPv4 in a block n1 will own; IPv6 from the scheduled node's block
    await dual.allocate(pool="v4", node="n1", owner=ephemeral_owner("warm"))
    res = await dual.claim(K0, pools=["v4", "v6"], addresses=["10.20.0.9"])
    assert res.node == "n1" and res.address6 is None and res.pools == ("v4", "v6")
    res = await dual.claim(K0, pools=["v4", "v6"], node="n1", holder="u1")
    assert res.node == "n1" and res.address6 is not None and res.epoch == 1
    # re-homing the IPv4 block carries the IPv6 address along as a migrated /128
    moved = await dual.rehome_block(pool="v4", block=0, from_node="n1", to_node="n2")
    assert moved == [K0.owner]
    after = await dual.reservation(K0)
    assert after is not None and (after.node, after.epoch) == ("n2", 2)
    assert after.addresses == res.addresses
    view = await dual.routing_view()
    assert [(m.address, m.node, m.block_node, m.epoch) for m in view.migrated] == [
        (res.address6, "n2", "n1", 2)]
    # moving the IPv6 block too makes the /128 native again, without another epoch
    v6_block = after.addresses[1].block
    assert await dual.rehome_block(pool="v6", block=v6_block, from_node="n1",
                                   to_node="n2") == []
    assert (await dual.routing_view()).migrated == []
    assert (await dual.reservation(K0)).epoch == 2  # type: ignore[union-attr]
    # a single-address re-home moves both families with one epoch
    one = await dual.rehome_reservation(K0, to_node="n3", expect_epoch=2)
    assert one.epoch == 3
    view = await dual.routing_view()
    assert sorted((str(m.address), m.node, m.epoch) for m in view.migrated) == sorted(
        [(str(res.address), "n3", 3), (str(res.address6), "n3", 3)])
    hist = await dual.history(str(res.address6))
    assert [(h.op, h.node, h.epoch) for h in hist][:2] == [("rehome", "n3", 3),
                                                          ("rehome", "n2", 2)]
    assert await check_and_repair(dual) == []
    # retain, expire: both families freed together
    await dual.unbind(K0)
    await dual.claim(K0, pools=["v4", "v6"], retain=30, now=100)
    await dual.retain_reservation(K0, now=100)
    assert await dual.expire_reservation(K0, now=131)
    assert await dual.owner_of(str(res.address)) is None
    assert await dual.owner_of(str(res.address6)) is None
    assert await check_and_repair(dual) == []


async def test_a_single_stack_reservation_gains_its_second_family(dual: RedisIpam) -> None:
    res = await dual.claim(K0, pool="v4", node="n1", holder="u")
    assert res.address6 is None
    both = await dual.claim(K0, pools=["v4", "v6"], node="n1", holder="u")
    assert both.address == res.address and both.address6 is not None
    assert both.node == "n1" and both.epoch == res.epoch
    assert await check_and_repair(dual) == []


async def test_store_of_the_old_layout_is_refused(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.hset("sip:pools", "default", "{}")
    ipam = RedisIpam(client)
    try:
        with pytest.raises(StoreLayoutError, match=r"stickyip 0\.1's key layout") as e:
            await ipam.pool_specs()
        assert "FLUSHDB" in str(e.value)
        # ipam check names those keys; --repair removes them and the store works again
        findings = await check_and_repair(ipam)
        assert [(f.kind, f.key) for f in findings] == [("old-layout-key", "sip:pools")]
        await check_and_repair(ipam, repair=True)
        assert await ipam.pool_specs() == []
    finally:
        await ipam.aclose()


async def test_a_second_family_listed_later_claims_its_block_for_the_home(
        dual: RedisIpam) -> None:
    """Found by the state machine: a reservation already homed on n1 that later takes an
    explicit IPv6 address in an unclaimed block got a migration to n1 instead of the
    block; when n1 then claimed that block for its own use, the migration pointed at
    the block's own node (check: migration-mismatch). The home claims the block."""
    first = await dual.claim(K0, pools=["v4"], node="n1", holder="uid-1")
    assert first.node == "n1"
    listed = ipaddress.IPv6Address("fd00:20::8:0:0:40")  # far from any block handed out
    res = await dual.claim(K0, pools=["v4", "v6"], addresses=[listed], node="n1")
    assert res.address6 == listed and res.node == "n1" and res.epoch == 1
    blocks = {b.cidr: b.node for b in await dual.blocks("v6")}
    home_block = next(c for c in blocks if listed in c)
    assert blocks[home_block] == "n1"
    view = await dual.routing_view()
    assert not [m for m in view.migrated if m.address == listed], "routed on its own"
    for i in range(3):  # n1 takes more addresses: nothing may disagree
        await dual.allocate(node="n1", owner=ephemeral_owner(f"c{i}"), pools=["v6"])
    assert await check_and_repair(dual) == []


async def test_rehoming_an_unhomed_reservation_claims_its_block(dual: RedisIpam) -> None:
    """Also found by the state machine: a reservation with an explicit address and no
    home yet, re-homed to n2, was routed as a migration to n2; n2 then claimed that
    very block for its own pods (check: migration-mismatch). Homing claims it."""
    listed = ipaddress.IPv4Address("10.20.0.200")
    res = await dual.claim(K0, pools=["v4"], addresses=[listed])
    assert res.node in ("", None) and not await dual.blocks("v4")
    moved = await dual.rehome_reservation(K0, to_node="n2")
    assert moved.node == "n2" and moved.epoch == res.epoch + 1
    blocks = {b.cidr: b.node for b in await dual.blocks("v4")}
    assert [n for c, n in blocks.items() if listed in c] == ["n2"]
    for i in range(3):
        await dual.allocate(node="n2", owner=ephemeral_owner(f"e{i}"), pools=["v4"])
    view = await dual.routing_view()
    assert not [m for m in view.migrated if m.address == listed]
    assert await check_and_repair(dual) == []
