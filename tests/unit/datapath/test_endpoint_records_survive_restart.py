"""The agent's endpoint records on disk survive a restart (a new store on the same
directory reads back exactly what was saved, deletes included), written atomically."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from datapath.models import EndpointRecord
from datapath.store import EndpointStore


def _rec(cid: str, address: str) -> EndpointRecord:
    return EndpointRecord(container_id=cid, ifname="eth0", host_ifname=f"sip{cid}",
                          netns=f"/run/netns/{cid}", address=ipaddress.IPv4Address(address),
                          pool="p", owner=f"eph/{cid}/eth0", kind="ephemeral")


def test_records_survive_a_restart(tmp_path: Path) -> None:
    store = EndpointStore(str(tmp_path))
    assert store.load() == []
    a, b = _rec("a", "10.0.0.1"), _rec("b", "10.0.0.2")
    store.put(a)
    store.put(b)
    a.fenced = True
    store.put(a)
    store.delete(b)
    assert store.get("a", "eth0") == a and store.get("b", "eth0") is None

    again = EndpointStore(str(tmp_path))
    assert again.all() == []  # nothing until loaded
    assert again.load() == [a]
    assert again.get("a", "eth0") is not None and again.get("a", "eth0").fenced  # type: ignore[union-attr]
    assert sorted(p.name for p in (tmp_path / "endpoints").iterdir()) == ["a@eth0.json"]


def test_dual_stack_records_round_trip_and_old_single_address_records_still_load(
        tmp_path: Path) -> None:
    store = EndpointStore(str(tmp_path))
    dual = EndpointRecord(container_id="d", ifname="eth0", host_ifname="sipd",
                          netns="/run/netns/d", pool="p4",
                          addresses=[ipaddress.IPv6Address("fd00::7"),
                                     ipaddress.IPv4Address("10.0.0.7")],
                          owner="eph/d/eth0", kind="ephemeral")
    assert dual.addresses == [ipaddress.IPv4Address("10.0.0.7"), ipaddress.IPv6Address("fd00::7")]
    assert dual.address == ipaddress.IPv4Address("10.0.0.7")
    assert dual.address_of(6) == ipaddress.IPv6Address("fd00::7")
    store.put(dual)
    # a record written by an agent before dual-stack: one "address"
    (tmp_path / "endpoints" / "old@eth0.json").write_text(
        '{"container_id": "old", "ifname": "eth0", "host_ifname": "sipold", '
        '"netns": "/run/netns/old", "address": "10.0.0.9", "pool": "p4", '
        '"owner": "eph/old/eth0", "kind": "ephemeral"}')
    again = EndpointStore(str(tmp_path))
    loaded = {r.container_id: r for r in again.load()}
    assert loaded["d"] == dual
    assert loaded["old"].addresses == [ipaddress.IPv4Address("10.0.0.9")]


def test_two_addresses_of_one_family_are_refused() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="one address per family"):
        EndpointRecord(container_id="x", ifname="eth0", host_ifname="sipx", netns="/x",
                       pool="p", owner="eph/x/eth0", kind="ephemeral",
                       addresses=[ipaddress.IPv4Address("10.0.0.1"),
                                  ipaddress.IPv4Address("10.0.0.2")])
