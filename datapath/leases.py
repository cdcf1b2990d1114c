"""The agent's one conversation with IPAM about pod addresses: which pools a request
names (one per family, ``"v4pool,v6pool"`` as in ``stickyip.io/pool``), the ephemeral
allocation or the sticky claim of one or two addresses, their release, and what a
lease says about where its addresses live. Every other agent module gets addresses
from here, so the store's API is met in one place."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from datapath.errors import InvalidConfig
from datapath.routing import IPAddress, Placement
from ipam import Lease, OwnerKey, RedisIpam, ReservationKey


def pool_names(text: str, *, what: str = "pool") -> list[str]:
    """``"a"`` or ``"a,b"`` (one pool per address family) as a list of names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(names) > 2 or len(set(names)) != len(names):
        raise InvalidConfig(f"{what} {text!r}: name one pool, or one IPv4 and one IPv6 pool "
                            "separated by a comma")
    return names


def addresses_of(lease: Lease) -> tuple[IPAddress, ...]:
    """The lease's addresses, IPv4 first (empty before any is assigned)."""
    found = [a.address for a in lease.addresses]
    if not found and lease.address is not None:
        found = [lease.address]
    return tuple(sorted((ipaddress.ip_address(a) for a in found), key=lambda a: a.version))


def placement_of(lease: Lease) -> Placement:
    return Placement(addresses_of(lease), lease.node, lease.epoch)


async def allocate(ipam: RedisIpam, *, owner: OwnerKey, pools: Sequence[str], node: str,
                   pod: str, holder: str) -> Lease:
    """An ephemeral address of each pool's family from this node's blocks (atomic,
    idempotent on the owner)."""
    return await ipam.allocate(pools=list(pools), node=node, owner=owner, pod=pod,
                               holder=holder)


async def claim(ipam: RedisIpam, key: ReservationKey, *, pools: Sequence[str], node: str,
                holder: str, pod: str) -> Lease:
    """The ordinal's reservation bound to pod ``holder`` on ``node``; families it already
    holds keep their addresses, missing ones come from ``node``'s blocks."""
    return await ipam.claim(key, pools=list(pools), node=node, holder=holder, pod=pod)


async def release(ipam: RedisIpam, owner: OwnerKey) -> None:
    """Free an ephemeral lease (every family). Idempotent."""
    await ipam.release(owner=owner)


async def unbind(ipam: RedisIpam, key: ReservationKey, *, holder: str) -> None:
    """The pod ``holder`` left; the ordinal keeps its addresses."""
    await ipam.unbind(key, holder=holder)
