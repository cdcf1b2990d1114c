"""Re-asserting the endpoints a node serves (issue 16.2, the store's side): a record the
store lost is restored for its owner with its addresses, never handed to anyone else;
an address now held by another owner is a conflict and nothing is written; a record
re-homed elsewhere with a newer epoch is 'moved'; the check is clean afterwards."""

from __future__ import annotations

import ipaddress

from ipam import (
    Lease,
    OwnerKey,
    RedisIpam,
    check_and_repair,
    ephemeral_owner,
    layout,
)
from ipam.reassert import Asserted, reassert
from tests.support.pools import K0, V4, V6


async def lose(ipam: RedisIpam, owner: OwnerKey) -> None:
    """What a failover to a replica that never got the write looks like for one record:
    the record and its bits are gone (dropped with the store's own release)."""
    lease = await ipam.lease(owner=owner)
    assert lease is not None
    await ipam.release(owner=owner, holder=lease.holder)
    assert await ipam.lease(owner=owner) is None


def asserted(lease: Lease, kind: str) -> Asserted:
    return Asserted(owner=lease.owner, kind=kind,
                    addresses=tuple(a.address for a in lease.addresses),
                    pools=tuple(a.pool for a in lease.addresses), holder=lease.holder,
                    pod=lease.pod, epoch=lease.epoch)


async def test_a_lost_record_is_restored_for_its_owner(ipam: RedisIpam) -> None:
    await ipam.apply_pools([V4, V6])
    eph = ephemeral_owner("c1")
    e = await ipam.allocate(pools=["v4"], node="n1", owner=eph)
    s = await ipam.claim(K0, pools=["v4", "v6"], node="n1", holder="uid-0", pod="db-0")
    mine = [asserted(e, "ephemeral"), asserted(s, "sticky")]
    await lose(ipam, eph)
    await lose(ipam, OwnerKey(K0.owner))
    rev = int(await ipam.redis.hget(layout.LAYOUT, "rev") or 0)
    got = await reassert(ipam, "n1", mine)
    assert [r.status for r in got] == ["restored", "restored"]
    back = await ipam.lease(owner=K0.owner)
    assert back is not None and back.node == "n1" and back.epoch == s.epoch
    assert [a.address for a in back.addresses] == [a.address for a in s.addresses]
    assert back.holder == "uid-0"
    eback = await ipam.lease(owner=eph)
    assert eback is not None and eback.address == e.address and eback.kind == "ephemeral"
    assert await check_and_repair(ipam) == []
    # the restored addresses are taken: a new pod on n1 gets another one
    other = await ipam.allocate(pool="v4", node="n1", owner=ephemeral_owner("c2"))
    assert other.address not in {e.address, s.address4}
    # idempotent: asserting again finds the records
    assert [r.status for r in await reassert(ipam, "n1", mine)] == ["ok", "ok"]
    # restoring wrote the change log (its block claim or migration is routing)
    assert int(await ipam.redis.hget(layout.LAYOUT, "rev") or 0) >= rev


async def test_an_address_taken_meanwhile_is_a_conflict_and_nothing_is_written(
        ipam: RedisIpam) -> None:
    await ipam.apply_pools([V4])
    eph = ephemeral_owner("c1")
    e = await ipam.allocate(pool="v4", node="n1", owner=eph)
    mine = asserted(e, "ephemeral")
    await lose(ipam, eph)
    thief = await ipam.allocate(pool="v4", node="n1", owner=ephemeral_owner("new"))
    assert thief.address == e.address  # the store handed the lost address out again
    rev = int(await ipam.redis.hget(layout.LAYOUT, "rev") or 0)
    [got] = await reassert(ipam, "n1", [mine])
    assert (got.status, got.other) == ("conflict", "eph/new/eth0")
    assert await ipam.lease(owner=eph) is None
    assert e.address is not None
    held = await ipam.owner_of(e.address)
    assert held is not None and held.owner == "eph/new/eth0"
    assert int(await ipam.redis.hget(layout.LAYOUT, "rev") or 0) == rev
    assert await check_and_repair(ipam) == []


async def test_a_reservation_rehomed_elsewhere_is_moved_not_restored(
        ipam: RedisIpam) -> None:
    await ipam.apply_pools([V4])
    s = await ipam.claim(K0, pool="v4", node="n1", holder="uid-0")
    await ipam.rehome_reservation(K0, to_node="n2")
    [got] = await reassert(ipam, "n1", [asserted(s, "sticky")])
    assert (got.status, got.other) == ("moved", "n2")


async def test_a_record_naming_other_addresses_is_a_conflict(ipam: RedisIpam) -> None:
    await ipam.apply_pools([V4])
    s = await ipam.claim(K0, pool="v4", node="n1", holder="uid-0")
    wrong = Asserted(owner=K0.owner, kind="sticky",
                     addresses=(ipaddress.ip_address("10.20.0.9"),), pools=("v4",),
                     epoch=s.epoch)
    assert s.address != wrong.addresses[0]
    [got] = await reassert(ipam, "n1", [wrong])
    assert got.status == "conflict" and "other addresses" in got.other
    after = await ipam.lease(owner=K0.owner)
    assert after is not None and after.address == s.address
