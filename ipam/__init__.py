"""The stickyip IPAM: pools cut into per-node blocks, ephemeral leases and sticky
per-ordinal reservations, held in Redis and changed only by atomic scripts."""

from ipam.changes import Change, ChangeBatch, ChangeOp, Gap, RoutingSnapshot
from ipam.errors import (
    AddressTaken,
    InvalidAddress,
    InvalidPool,
    InvalidRequest,
    IpamError,
    PoolExhausted,
    PoolInUse,
    PoolNotFound,
    ReservationConflict,
    ReservationInUse,
    ReservationNotFound,
    StaleEpoch,
    StoreLayoutError,
    StoreUnavailable,
)
from ipam.models import (
    DEFAULT_POOL,
    AuditEntry,
    BlockInfo,
    Finding,
    Lease,
    LeaseAddress,
    LeaseKind,
    MigratedAddress,
    NodeFailurePolicy,
    NodeHealth,
    NodeName,
    OwnerKey,
    PoolName,
    PoolSpec,
    PoolStatus,
    Reservation,
    ReservationKey,
    ReservationState,
    RoutingView,
    ephemeral_owner,
    pool_from_dict,
)
from ipam.redis_store import AddressView, PoolApplied, RedisIpam, check_and_repair, pool_prefix

__all__ = [
    "DEFAULT_POOL",
    "AddressTaken",
    "AddressView",
    "AuditEntry",
    "BlockInfo",
    "Change",
    "ChangeBatch",
    "ChangeOp",
    "Finding",
    "Gap",
    "InvalidAddress",
    "InvalidPool",
    "InvalidRequest",
    "IpamError",
    "Lease",
    "LeaseAddress",
    "LeaseKind",
    "MigratedAddress",
    "NodeFailurePolicy",
    "NodeHealth",
    "NodeName",
    "OwnerKey",
    "PoolApplied",
    "PoolExhausted",
    "PoolInUse",
    "PoolName",
    "PoolNotFound",
    "PoolSpec",
    "PoolStatus",
    "RedisIpam",
    "Reservation",
    "ReservationConflict",
    "ReservationInUse",
    "ReservationKey",
    "ReservationNotFound",
    "ReservationState",
    "RoutingSnapshot",
    "RoutingView",
    "StaleEpoch",
    "StoreLayoutError",
    "StoreUnavailable",
    "check_and_repair",
    "ephemeral_owner",
    "open_ipam",
    "pool_from_dict",
    "pool_prefix",
]


async def open_ipam(url: str | None, *, actor: str = "stickyip",
                    embedded_path: str | None = None) -> RedisIpam:
    """Connect to the store at ``url`` (or the embedded one) and return the IPAM."""
    from ipam.connection import open_redis

    client, embedded = await open_redis(url, embedded_path=embedded_path)
    ipam = RedisIpam(client, actor=actor)
    ipam.embedded = embedded
    return ipam
