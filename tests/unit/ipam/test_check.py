"""The pure consistency check finds each kind of damage, and names addresses."""

from __future__ import annotations

import json

from ipam.check import BlockState, PoolSnapshot, StoreSnapshot, check_store
from ipam.models import PoolName
from ipam.ranges import geometry

REC = {"owner": "eph/c1/eth0", "kind": "ephemeral", "node": "n1", "epoch": 1,
       "state": "bound", "ip4": {"p": "p", "g": "g1", "b": "0", "o": 1}}


def snap(records: dict[str, dict[str, object]] | None = None, **over: object) -> StoreSnapshot:
    block = BlockState(bitmap=bytes([0b11000000]), free=6, used=1, owners={1: "eph/c1/eth0"},
                       node="n1")
    pool: dict[str, object] = dict(
        pool=PoolName("p"), gen="g1", geo=geometry("10.0.0.0/29", 29), cursor="end",
        blocks={"0": block}, excluded={"0:0", "0:7"}, node_free={"n1": {"0"}}, free={"0"},
        owners_index={"eph/c1/eth0"},
        counters={"used": 1, "exheld": 0, "n:ephemeral": 1})
    pool.update(over)
    ps = PoolSnapshot(**pool)  # type: ignore[arg-type]
    # the excluded last address of the /29: bit 7
    if ps.blocks.get("0") is block and "bitmap" not in over:
        block.bitmap = bytes([0b11000001])
        block.free = 5
    recs = records if records is not None else {"eph/c1/eth0": REC}
    return StoreSnapshot(pools={"p": ps}, records={k: json.dumps(v) for k, v in recs.items()},
                         counts={"ephemeral": len(recs)}, homes={"n1|e": len(recs)},
                         registry={"p": "g1"}, keys=[])


def kinds(s: StoreSnapshot) -> list[str]:
    return sorted(f.kind for f in check_store(s))


def test_consistent_state_has_no_findings() -> None:
    assert check_store(snap()) == []


def test_each_damage_is_found() -> None:
    def block(**kw: object) -> dict[str, BlockState]:
        base: dict[str, object] = dict(bitmap=bytes([0b11000001]), free=5, used=1,
                                       owners={1: "eph/c1/eth0"}, node="n1")
        base.update(kw)
        return {"0": BlockState(**base)}  # type: ignore[arg-type]

    assert kinds(snap(blocks=block(bitmap=bytes([0b11100001]), free=4))) == ["leaked-address"]
    assert kinds(snap(blocks=block(bitmap=bytes([0b10000001]), free=6))) == ["bit-clear"]
    assert kinds(snap(blocks=block(owners={}, used=0), counters={
        "used": 0, "exheld": 0, "n:ephemeral": 1})) == ["leaked-address", "owner-without-address"]
    assert "orphan-address" in kinds(snap(records={}))
    assert kinds(snap(blocks=block(used=3))) == ["counter-mismatch"]
    assert kinds(snap(blocks=block(free=2))) == ["counter-mismatch"]
    assert kinds(snap(blocks=block(bitmap=None))) == ["block-bitmap-missing"]
    assert kinds(snap(blocks=block(bitmap=bytes([0b11000001, 0])))) == ["block-bitmap-damaged"]
    assert kinds(snap(node_free={"n1": {"0"}, "n2": {"0"}})) == ["affinity-mismatch"]
    assert kinds(snap(node_free={})) == ["free-index-mismatch"]
    assert kinds(snap(returned={"0"})) == ["returned-block-claimed"]
    assert kinds(snap(blocks={}, excluded=set(), node_free={}, free=set(), counters={
        "used": 0, "exheld": 0, "n:ephemeral": 1}, cursor="end")) == [
        "lost-block", "owner-without-address"]
    assert kinds(snap(mig={"0:1": "n2"})) == ["migration-mismatch"]
    assert kinds(snap(owners_index=set())) == ["index-mismatch"]
    assert kinds(snap(counters={"used": 2, "exheld": 0, "n:ephemeral": 1})) == [
        "pool-counter-mismatch"]


def test_findings_name_addresses_not_offsets() -> None:
    found = check_store(snap(blocks={"0": BlockState(
        bitmap=bytes([0b11100001]), free=4, used=1, owners={1: "eph/c1/eth0"}, node="n1")}))
    assert [(f.kind, f.address) for f in found] == [("leaked-address", "10.0.0.2")]
    assert "10.0.0.2" in found[0].detail


def test_orphan_and_old_layout_keys() -> None:
    s = snap()
    s.keys = ["sip:{stickyip}:p:p:g1:blk", "sip:{stickyip}:p:p:g0:blk",
              "sip:{stickyip}:p:gone:g3:m", "sip:{stickyip}:p:p:g1:junk", "sip:{stickyip}:x",
              "sip:pools", "sip:{old}:meta", "sip:node:n1", "sip:datapath:node-address"]
    got = sorted((f.kind, f.key) for f in check_store(s))
    assert got == [
        ("old-layout-key", "sip:node:n1"), ("old-layout-key", "sip:pools"),
        ("old-layout-key", "sip:{old}:meta"),
        ("orphan-key", "sip:{stickyip}:p:gone:g3:m"), ("orphan-key", "sip:{stickyip}:p:p:g0:blk"),
        ("orphan-key", "sip:{stickyip}:p:p:g1:junk"), ("orphan-key", "sip:{stickyip}:x")]
