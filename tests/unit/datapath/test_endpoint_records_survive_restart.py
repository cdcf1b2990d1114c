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
