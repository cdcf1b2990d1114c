"""The pure consistency check finds each kind of damage."""

from __future__ import annotations

import json

from ipam.check import PoolSnapshot, check_pool
from ipam.models import PoolName


def snap(**over: object) -> PoolSnapshot:
    base: dict[str, object] = dict(
        pool=PoolName("p"), size=32, block_size=8,
        used=bytes([0b11000000, 0, 0, 0b00000001]), excluded={0, 31},
        owners={1: "eph/c1/eth0"},
        records={"eph/c1/eth0": json.dumps({"off": 1})},
        bused={0: 1}, blocks={0: "n1"}, node_blocks={"n1": {0}}, node_free={"n1": {0}},
    )
    base.update(over)
    return PoolSnapshot(**base)  # type: ignore[arg-type]


def test_consistent_state_has_no_findings() -> None:
    assert check_pool(snap()) == []


def test_each_damage_is_found() -> None:
    kinds = lambda s: sorted(f.kind for f in check_pool(s))  # noqa: E731
    assert kinds(snap(used=bytes([0b11100000, 0, 0, 1]))) == ["leaked-address"]
    assert kinds(snap(owners={})) == ["counter-mismatch", "leaked-address",
                                      "owner-without-address"]
    assert kinds(snap(records={})) == ["orphan-address"]
    assert kinds(snap(used=bytes([0b10000000, 0, 0, 1]))) == ["bit-clear"]
    assert kinds(snap(bused={0: 3})) == ["counter-mismatch"]
    assert kinds(snap(node_blocks={"n1": {0, 1}})) == ["affinity-mismatch"]
    assert kinds(snap(node_blocks={})) == ["affinity-mismatch"]
    assert kinds(snap(node_free={})) == ["free-index-mismatch"]
    assert kinds(snap(node_free={"n1": {0}, "n2": {0}})) == ["free-index-mismatch"]
    full = snap(used=bytes([0xFF, 0, 0, 1]), owners={i: f"o{i}" for i in range(1, 8)},
                records={f"o{i}": json.dumps({"off": i}) for i in range(1, 8)}, bused={0: 7})
    assert kinds(full) == ["free-index-mismatch"]
