"""What a claim of a StatefulSet ordinal would give, read without writing: the one
answer to "where would this reservation live" for the webhook's dryRun, the
scheduler and the kube-scheduler extender."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ipam.contract import ReservationKey
from ipam.errors import AddressTaken, InvalidAddress, ReservationConflict
from ipam.models import NodeName, Reservation

if TYPE_CHECKING:
    from ipam.redis_store import RedisIpam


@dataclass(frozen=True, slots=True)
class ClaimPreview:
    """The address and home a claim would give (nothing is written)."""

    #: The recorded address, else the listed one (None: chosen at scheduling).
    address: ipaddress.IPv4Address | None
    #: The recorded home, else the node whose block holds the listed address.
    node: NodeName | None
    #: The reservation as recorded (None: a claim would create it).
    recorded: Reservation | None

    @property
    def epoch(self) -> int | None:
        return self.recorded.epoch if self.recorded is not None and self.address else None


async def preview_claim(ipam: RedisIpam, key: ReservationKey, *, pool: str,
                        address: ipaddress.IPv4Address | None = None) -> ClaimPreview:
    """What ``ipam.claim(key, pool=pool, address=address)`` would give.

    Raises what the claim would: ReservationConflict (the ordinal already holds
    another address), InvalidAddress (outside the pool or excluded), AddressTaken
    (another owner holds the listed address), PoolNotFound."""
    found = await ipam.lease(pool=pool, owner=key.owner)
    if found is not None and isinstance(found.address, ipaddress.IPv4Address):
        if address is not None and found.address != address:
            raise ReservationConflict(
                f"reservation {key} already holds {found.address}; release it first with "
                "'stickyip ipam release' to give it another address")
        return ClaimPreview(address=found.address, node=found.node or None, recorded=found)
    if address is None:
        return ClaimPreview(address=None, node=found.node if found is not None else None,
                            recorded=found)
    pc = await ipam.pool(pool)
    if not pc.geo.contains(address):
        raise InvalidAddress(f"{address} is outside pool {pool!r} ({pc.geo.network})")
    offset = pc.geo.offset_of(address)
    if offset in set(pc.spec.excluded_offsets()):
        raise InvalidAddress(f"{address} is excluded from pool {pool!r}")
    held = await ipam.owner_of(address)
    if held is not None and held.owner != key.owner:
        raise AddressTaken(f"{address} is held by {held.owner}", owner=held.owner)
    block = pc.geo.block_of(offset)
    node = next((b.node for b in await ipam.blocks(pool) if b.index == block), None)
    return ClaimPreview(address=address, node=node, recorded=found)
