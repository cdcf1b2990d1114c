"""The fan-out tier's wire format (pure: no I/O).

One TCP connection per follower, one JSON object per line (UTF-8, ``\\n``-terminated).
The follower's first line asks either for a snapshot or for the changes after a
revision of one store::

    {"v": 1, "snapshot": true, "node": "n1"}
    {"v": 1, "after": 41, "identity": "g1/RUNID/REPLID", "node": "n1"}

The tier answers with frames (``t``):

- ``snap``: the routing state at ``rev`` of the store ``id`` (pools, blocks,
  migrated addresses, fenced nodes) and the node addresses (``peers``);
- ``ch``: the changes of revision ``rev`` (one store script), in order;
- ``peers``: node addresses set (``set``: node -> family -> address) or gone (``del``);
- ``ping``: nothing changed for a while (``rev``: the tier's revision);
- ``gap``: the changes after the follower's revision cannot be sent (``reason``);
  the tier closes the connection and the follower asks for a fresh snapshot.

The identity and revisions are the store's own (``RoutingSnapshot.identity``), so a
follower may resume on any replica of the tier that follows the same store.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ipam.changes import Change, ChangeBatch, ChangeOp, Migration, RoutingSnapshot
from ipam.models import PoolSpec
from ipam.ranges import IPAddress, IPNetwork

VERSION = 1
#: node -> IP family (4, 6) -> that node's address
Peers = dict[str, Mapping[int, str]]


class NodeAddresses(Mapping[int, str]):
    """One node's address per family, in 48 bytes rather than a dict's 184 (a view of
    5,000 nodes holds 5,000 of them)."""

    __slots__ = ("v4", "v6")

    def __init__(self, v4: str = "", v6: str = "") -> None:
        self.v4 = v4
        self.v6 = v6

    @classmethod
    def of(cls, fam: Mapping[int, str]) -> NodeAddresses:
        return cls(fam.get(4, ""), fam.get(6, ""))

    def __getitem__(self, family: int) -> str:
        a = self.v4 if family == 4 else self.v6 if family == 6 else ""
        if not a:
            raise KeyError(family)
        return a

    def __iter__(self) -> Iterator[int]:
        return iter([f for f, a in ((4, self.v4), (6, self.v6)) if a])

    def __len__(self) -> int:
        return bool(self.v4) + bool(self.v6)

    def __repr__(self) -> str:
        return f"NodeAddresses({dict(self)!r})"


class WireError(ValueError):
    """A line that is not a frame of this protocol."""


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def parse_address(address: str) -> tuple[str, int] | str:
    """``HOST:PORT`` (``[V6]:PORT`` too) as (host, port), ``unix:PATH`` as the path."""
    a = address.strip()
    if a.startswith("unix:"):
        if len(a) <= len("unix:"):
            raise ValueError(f"feed address {address!r}: no socket path")
        return a[len("unix:"):]
    host, sep, port = a.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"feed address {address!r} is not HOST:PORT or unix:PATH")
    return host.strip("[]"), int(port)


# ----------------------------------------------------------------- requests

@dataclass(frozen=True, slots=True)
class Request:
    """What a follower asks for: a snapshot, or the changes after ``after``."""

    snapshot: bool
    after: int = 0
    identity: str = ""
    node: str = ""

    def encode(self) -> bytes:
        d: dict[str, Any] = {"v": VERSION, "node": self.node}
        if self.snapshot:
            d["snapshot"] = True
        else:
            d["after"] = self.after
            d["identity"] = self.identity
        return _line(d)


def decode_request(line: bytes) -> Request:
    try:
        d = json.loads(line)
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise WireError(f"unsupported request (protocol version {VERSION} expected)")
        if d.get("snapshot"):
            return Request(snapshot=True, node=str(d.get("node", "")))
        return Request(snapshot=False, after=int(d["after"]), identity=str(d["identity"]),
                       node=str(d.get("node", "")))
    except (ValueError, KeyError, TypeError) as e:
        raise WireError(f"malformed request: {e}") from e


# ------------------------------------------------------------------ changes

def encode_address(a: IPAddress) -> int | str:
    """An IPv4 address as its integer, an IPv6 address as ``6:HEX`` (parsing an integer
    costs a third of parsing dotted text, and most of a batch is addresses)."""
    return int(a) if a.version == 4 else f"6:{int(a):x}"


def decode_address(v: int | str) -> IPAddress:
    if isinstance(v, int):
        return ipaddress.IPv4Address(v)
    if v.startswith("6:"):
        return ipaddress.IPv6Address(int(v[2:], 16))
    return ipaddress.ip_address(v)


def encode_network(n: IPNetwork) -> list[int | str]:
    return [encode_address(n.network_address), n.prefixlen]


def decode_network(v: list[Any]) -> IPNetwork:
    a = decode_address(v[0])
    if a.version == 4:
        return ipaddress.IPv4Network((int(a), int(v[1])))
    return ipaddress.IPv6Network((int(a), int(v[1])))


# A change on the wire is a JSON array, its fields by position after the op (parsing
# arrays of numbers is several times cheaper than objects of text, and every
# follower decodes every change):
#   block.claim|block.move|block.release  [op, pool, block, net, node, from]
#   mig.set|mig.clear                     [op, pool, block, net, address, node, owner, epoch]
#   res.home                              [op, owner, node, epoch, [address...]]
#   pool.put                              [op, pool, spec]        pool.delete  [op, pool]
#   node.fence|node.unfence               [op, node, at]
_BLOCK = (ChangeOp.BLOCK_CLAIM, ChangeOp.BLOCK_MOVE, ChangeOp.BLOCK_RELEASE)
_MIG = (ChangeOp.MIG_SET, ChangeOp.MIG_CLEAR)


def encode_change(c: Change) -> list[Any]:
    op = c.op
    net = encode_network(c.cidr) if c.cidr is not None else None
    if op in _BLOCK:
        return [op.value, c.pool, c.block, net, c.node, c.from_node]
    if op in _MIG:
        addr = encode_address(c.address) if c.address is not None else None
        return [op.value, c.pool, c.block, net, addr, c.node, c.owner, c.epoch]
    if op is ChangeOp.RES_HOME:
        return [op.value, c.owner, c.node, c.epoch, [encode_address(a) for a in c.addresses]]
    if op is ChangeOp.POOL_PUT:
        spec = c.spec.model_dump(mode="json", by_alias=True) if c.spec is not None else None
        return [op.value, c.pool, spec]
    if op is ChangeOp.POOL_DELETE:
        return [op.value, c.pool]
    return [op.value, c.node, c.at]


def _addresses(v: list[Any]) -> tuple[IPAddress, ...]:
    return tuple(ipaddress.IPv4Address(a) if type(a) is int else decode_address(a) for a in v)


def _block(op: ChangeOp) -> Callable[[list[Any]], Change]:
    def decode(v: list[Any]) -> Change:
        return Change(op=op, pool=_name(v[1]), block=v[2], cidr=decode_network(v[3]),
                      node=_name(v[4]), from_node=_name(v[5]))
    return decode


def _mig(op: ChangeOp) -> Callable[[list[Any]], Change]:
    def decode(v: list[Any]) -> Change:
        return Change(op=op, pool=_name(v[1]), block=v[2], cidr=decode_network(v[3]),
                      address=decode_address(v[4]), node=_name(v[5]), owner=v[6],
                      epoch=v[7])
    return decode


def _fence(op: ChangeOp) -> Callable[[list[Any]], Change]:
    def decode(v: list[Any]) -> Change:
        return Change(op=op, node=_name(v[1]), at=float(v[2]))
    return decode


def _home(v: list[Any]) -> Change:
    return Change(op=ChangeOp.RES_HOME, owner=v[1], node=_name(v[2]), epoch=v[3],
                  addresses=_addresses(v[4]))


def _pool_put(v: list[Any]) -> Change:
    return Change(op=ChangeOp.POOL_PUT, pool=_name(v[1]),
                  spec=PoolSpec.model_validate(v[2]) if v[2] is not None else None)


def _pool_delete(v: list[Any]) -> Change:
    return Change(op=ChangeOp.POOL_DELETE, pool=_name(v[1]))


_DECODE: dict[str, Callable[[list[Any]], Change]] = {
    **{op.value: _block(op) for op in _BLOCK}, **{op.value: _mig(op) for op in _MIG},
    **{op.value: _fence(op) for op in (ChangeOp.NODE_FENCE, ChangeOp.NODE_UNFENCE)},
    ChangeOp.RES_HOME.value: _home, ChangeOp.POOL_PUT.value: _pool_put,
    ChangeOp.POOL_DELETE.value: _pool_delete,
}


def decode_change(v: list[Any]) -> Change:
    try:
        return _DECODE[v[0]](v)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise WireError(f"malformed change {v!r}: {e}") from e


def encode_batch(batch: ChangeBatch) -> bytes:
    return _line({"t": "ch", "rev": batch.revision,
                  "c": [encode_change(c) for c in batch.changes]})


def decode_batch(d: Mapping[str, Any],
                 owners: Callable[[str], bool] | None = None) -> ChangeBatch:
    """A batch frame as a ChangeBatch. ``owners``: keep only the re-homes
    (``res.home``) of the reservations it accepts — the follower serves no others, and
    a view never applies them (a node serves a handful of the cluster's reservations;
    decoding every re-home was most of a follower's work on a block re-home)."""
    home = ChangeOp.RES_HOME.value
    return ChangeBatch(revision=int(d["rev"]), changes=tuple(
        decode_change(c) for c in d.get("c", ())
        if owners is None or c[0] != home or owners(c[1])))


# ---------------------------------------------------------------- snapshots

def encode_snapshot(snap: RoutingSnapshot, peers: Mapping[str, Mapping[int, str]]) -> bytes:
    return _line({
        "t": "snap", "rev": snap.revision, "id": snap.identity,
        "pools": {name: spec.model_dump(mode="json", by_alias=True)
                  for name, spec in snap.pools.items()},
        "blocks": [[pool, b, node] for (pool, b), node in snap.blocks.items()],
        "mig": [[pool, encode_address(addr), m.node, m.owner, m.epoch]
                for (pool, addr), m in snap.migrated.items()],
        "fenced": snap.fenced,
        "peers": encode_peers(peers),
    })


def decode_snapshot(d: Mapping[str, Any]) -> tuple[RoutingSnapshot, Peers]:
    snap = RoutingSnapshot(revision=int(d["rev"]), identity=str(d["id"]))
    snap.pools = {_name(name): PoolSpec.model_validate(spec)
                  for name, spec in d["pools"].items()}
    snap.blocks = {(_name(pool), int(b)): _name(node) for pool, b, node in d["blocks"]}
    snap.migrated = {(_name(pool), decode_address(addr)):
                     Migration(_name(node), owner, int(epoch))
                     for pool, addr, node, owner, epoch in d["mig"]}
    snap.fenced = {_name(n): float(at) for n, at in d.get("fenced", {}).items()}
    return snap, decode_peers(d.get("peers", {}))


def _name(s: Any) -> str:
    """Pool and node names repeat in every view (10,000 blocks name 5,000 nodes): one
    copy each (interned), not one per occurrence."""
    return sys.intern(str(s))


# -------------------------------------------------------------------- peers

def encode_peers(peers: Mapping[str, Mapping[int, str]]) -> dict[str, dict[str, str]]:
    return {node: {str(f): a for f, a in fam.items()} for node, fam in peers.items()}


def decode_peers(d: Mapping[str, Any]) -> Peers:
    return {_name(node): NodeAddresses(str(fam.get("4", "")), str(fam.get("6", "")))
            for node, fam in d.items()}


def encode_peer_update(set_: Mapping[str, Mapping[int, str]], deleted: list[str]) -> bytes:
    return _line({"t": "peers", "set": encode_peers(set_), "del": sorted(deleted)})


# ------------------------------------------------------------- other frames

def encode_ping(revision: int) -> bytes:
    return _line({"t": "ping", "rev": revision})


def encode_gap(reason: str) -> bytes:
    return _line({"t": "gap", "reason": reason})


def decode_frame(line: bytes) -> dict[str, Any]:
    try:
        d = json.loads(line)
    except ValueError as e:
        raise WireError(f"malformed frame: {e}") from e
    if not isinstance(d, dict) or not isinstance(d.get("t"), str):
        raise WireError("malformed frame: no type")
    return d
