"""IPAM data: pools, leases, reservations, audit entries and the views built from them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, NewType

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ipam import ranges

# The names of the sticky contract are defined in ipam.contract; re-exported here
# for the store's modules.
from ipam.contract import DEFAULT_POOL as DEFAULT_POOL
from ipam.contract import NodeFailurePolicy as NodeFailurePolicy
from ipam.contract import OwnerKey as OwnerKey
from ipam.contract import PoolName as PoolName
from ipam.contract import ReservationKey as ReservationKey
from ipam.contract import check_name as check_name
from ipam.contract import ephemeral_owner as ephemeral_owner
from ipam.errors import InvalidPool, InvalidRequest
from ipam.ranges import IPAddress, IPNetwork

NodeName = NewType("NodeName", str)

#: IPv4 default; IPv6 pools default to /122 (ranges.DEFAULT_BLOCK_PREFIX).
DEFAULT_BLOCK_SIZE = 26


class LeaseKind(StrEnum):
    EPHEMERAL = "ephemeral"
    STICKY = "sticky"


class ReservationState(StrEnum):
    #: Claimed; no pod currently holds it (first claim, or pod deleted).
    RESERVED = "reserved"
    #: A pod (``holder``) holds it on its home node.
    BOUND = "bound"
    #: Its ordinal is gone (scale-down, StatefulSet deleted); kept until ``expires_at``.
    RETAINED = "retained"
    #: Released by force while a pod (``holder``) still held it: the address stays
    #: taken, never handed out, until the holder is confirmed gone.
    QUARANTINED = "quarantined"


class PoolSpec(BaseModel):
    """A pool as an administrator writes it (``stickyip pool apply -f``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    cidr: str
    #: Block prefix length; 0 (not given) means the family's default (/26, /122).
    block_size: int = Field(default=0, alias="blockSize")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    exclude: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return check_name("pool", v)
        except InvalidRequest as e:
            raise ValueError(str(e)) from e

    @model_validator(mode="after")
    def _default_block(self) -> PoolSpec:
        if self.block_size == 0:
            try:
                version = ipaddress.ip_network(self.cidr.strip(), strict=False).version
            except ValueError:
                version = 4  # the CIDR error is reported by geometry()
            self.block_size = ranges.DEFAULT_BLOCK_PREFIX[version]
        return self

    @property
    def family(self) -> ranges.Family:
        return self.geometry().family

    def geometry(self) -> ranges.PoolGeometry:
        return ranges.geometry(self.cidr, self.block_size)

    def excluded_offsets(self) -> list[int]:
        geo = self.geometry()
        chosen = set(ranges.parse_excluded(self.exclude, geo))
        return sorted(set(ranges.default_excluded(geo)) | chosen)

    def canonical(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cidr": str(self.geometry().network),
            "blockSize": self.block_size,
            "nodeSelector": dict(sorted(self.node_selector.items())),
            "exclude": list(self.exclude),
        }


def pool_from_dict(data: Any) -> PoolSpec:
    """Build a PoolSpec from parsed YAML/JSON, with one clear error on bad input."""
    if not isinstance(data, dict):
        raise InvalidPool(f"a pool must be a mapping, got {type(data).__name__}")
    try:
        spec = PoolSpec.model_validate(data)
    except ValueError as e:
        first = str(e).splitlines()
        reason = "; ".join(line.strip() for line in first[1:3]) if len(first) > 1 else str(e)
        raise InvalidPool(f"invalid pool {data.get('name', '?')!r}: {reason}") from e
    spec.geometry()
    spec.excluded_offsets()
    return spec


def first_overlap(spec: PoolSpec, others: Iterable[PoolSpec]) -> PoolSpec | None:
    """The first pool of ``others`` (by another name) whose range overlaps ``spec``'s."""
    net = spec.geometry().network
    for other in others:
        if other.name != spec.name and other.geometry().network.overlaps(net):
            return other
    return None


class PoolStatus(BaseModel):
    spec: PoolSpec
    size: int
    excluded: int
    used: int
    blocks_total: int
    blocks_claimed: int
    #: Excluded addresses that an owner still holds (excluded after it got them).
    excluded_held: int = 0

    @property
    def free(self) -> int:
        """Exact: an excluded address still held is counted once."""
        return self.size - self.excluded - self.used + self.excluded_held


class LeaseAddress(BaseModel):
    """One address of a lease: its pool and block (a lease holds at most one per family)."""

    model_config = ConfigDict(frozen=True)

    pool: PoolName
    address: IPAddress
    block: int

    @property
    def family(self) -> int:
        return self.address.version


class Lease(BaseModel):
    """What the store records for every owner of addresses (ephemeral or sticky).

    A lease holds at most one address per family: ``addresses`` lists them, IPv4
    first. ``address`` and ``pool`` name the first one (or, before an address is
    assigned, the first pool asked for), which is all single-stack callers need.
    ``pools`` lists every pool the lease draws from, one per family, including a
    family still waiting for its address (a reservation not yet scheduled).
    """

    model_config = ConfigDict(extra="ignore")

    owner: OwnerKey
    pool: PoolName
    kind: LeaseKind
    address: IPAddress | None = None
    addresses: tuple[LeaseAddress, ...] = ()
    pools: tuple[PoolName, ...] = ()
    node: NodeName | None = None
    epoch: int = 0
    holder: str = ""
    pod: str = ""
    state: ReservationState = ReservationState.BOUND
    retain: float = 0.0
    policy: NodeFailurePolicy = NodeFailurePolicy.MIGRATE
    expires_at: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> ReservationKey | None:
        if self.kind is not LeaseKind.STICKY:
            return None
        return ReservationKey.parse(self.owner)

    def address_of(self, family: int) -> IPAddress | None:
        for a in self.addresses:
            if a.family == family:
                return a.address
        return None

    @property
    def address4(self) -> ipaddress.IPv4Address | None:
        a = self.address_of(4)
        return a if isinstance(a, ipaddress.IPv4Address) else None

    @property
    def address6(self) -> ipaddress.IPv6Address | None:
        a = self.address_of(6)
        return a if isinstance(a, ipaddress.IPv6Address) else None

    def summary(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "pool": self.pool,
            "pools": list(self.pools),
            "kind": self.kind.value,
            "address": str(self.address) if self.address else None,
            "addresses": [str(a.address) for a in self.addresses],
            "node": self.node,
            "epoch": self.epoch,
            "state": self.state.value,
            "holder": self.holder,
            "pod": self.pod,
            "retain": ranges.format_retain(self.retain),
            "policy": self.policy.value,
            "expires_at": self.expires_at,
        }


#: A reservation is a sticky lease.
Reservation = Lease


class AuditEntry(BaseModel):
    at: float
    op: str
    owner: str
    node: str = ""
    epoch: int = 0
    actor: str = ""
    address: str = ""


class BlockInfo(BaseModel):
    pool: PoolName
    index: int
    cidr: IPNetwork
    node: NodeName
    used: int
    #: Addresses of the block nobody holds and not excluded (exact).
    free: int = 0


class MigratedAddress(BaseModel):
    """A /32 or /128 served by a node other than its block's node (routed on its own).
    ``owner`` and ``epoch`` are the holder's, for fencing."""

    pool: PoolName
    address: IPAddress
    node: NodeName
    block_node: NodeName | None
    owner: str = ""
    epoch: int = 0


class RoutingView(BaseModel):
    """What every node needs to route: blocks per node and migrated /32s and /128s."""

    blocks: list[BlockInfo]
    migrated: list[MigratedAddress]


class Finding(BaseModel):
    """One inconsistency found by ``ipam check``. ``address`` names the address (or
    ``block``'s CIDR, or the ``key``) it is about; ``offset`` is kept for callers
    that sort by it (the address's offset in its pool, -1 when not about one)."""

    pool: PoolName
    kind: str
    detail: str
    address: str = ""
    offset: int = -1
    owner: str = ""
    block: int = -1
    key: str = ""
    repaired: bool = False


class NodeHealth(BaseModel):
    node: NodeName
    heartbeat_at: float = 0.0
    fenced_at: float = 0.0


class PoolStats(BaseModel):
    """One pool's counters (kept by the scripts: reading them costs O(1) per pool)."""

    pool: PoolName
    size: int
    used: int
    excluded: int
    excluded_held: int
    blocks_total: int
    blocks_claimed: int
    #: records drawing on the pool by class: ephemeral, reserved, bound, retained,
    #: quarantined (a dual-stack record counts in both of its pools)
    records: dict[str, int] = Field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.size - self.excluded - self.used + self.excluded_held


class IpamStats(BaseModel):
    """The whole IPAM in numbers, read in one round trip: O(pools + nodes), never a
    scan of the records."""

    pools: list[PoolStats]
    #: records by class (each record once)
    records: dict[str, int]
    #: node -> records homed there by class: ephemeral, migrate, wait (sticky by policy)
    homes: dict[NodeName, dict[str, int]]
    heartbeats: dict[NodeName, float]
    fenced: dict[NodeName, float]
