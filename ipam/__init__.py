"""The stickyip IPAM: pools cut into per-node blocks, ephemeral leases and sticky
per-ordinal reservations, held in Redis and changed only by atomic scripts.

Names are loaded on first use (PEP 562), so importing a pure module such as
``ipam.contract`` or ``ipam.ranges`` never loads the Redis client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipam.changes import Change, ChangeBatch, ChangeOp, Gap, RoutingSnapshot
    from ipam.contract import (
        DEFAULT_POOL,
        NodeFailurePolicy,
        OwnerKey,
        PoolName,
        ReservationKey,
        ephemeral_owner,
    )
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
        AuditEntry,
        BlockInfo,
        Finding,
        IpamStats,
        Lease,
        LeaseAddress,
        LeaseKind,
        MigratedAddress,
        NodeHealth,
        NodeName,
        PoolSpec,
        PoolStats,
        PoolStatus,
        Reservation,
        ReservationState,
        RoutingView,
        pool_from_dict,
    )
    from ipam.redis_store import (
        AddressView,
        PoolApplied,
        RedisIpam,
        check_and_repair,
        open_ipam,
        pool_prefix,
    )

#: public name -> the module defining it
_WHERE = {
    **dict.fromkeys(("Change", "ChangeBatch", "ChangeOp", "Gap", "RoutingSnapshot"),
                    "ipam.changes"),
    **dict.fromkeys(
        ("DEFAULT_POOL", "NodeFailurePolicy", "OwnerKey", "PoolName", "ReservationKey",
         "ephemeral_owner"), "ipam.contract"),
    **dict.fromkeys(
        ("AddressTaken", "InvalidAddress", "InvalidPool", "InvalidRequest", "IpamError",
         "PoolExhausted", "PoolInUse", "PoolNotFound", "ReservationConflict",
         "ReservationInUse", "ReservationNotFound", "StaleEpoch", "StoreLayoutError",
         "StoreUnavailable"), "ipam.errors"),
    **dict.fromkeys(
        ("AuditEntry", "BlockInfo", "Finding", "IpamStats", "Lease", "LeaseAddress",
         "LeaseKind", "MigratedAddress", "PoolStats",
         "NodeHealth", "NodeName", "PoolSpec", "PoolStatus", "Reservation",
         "ReservationState", "RoutingView", "pool_from_dict"), "ipam.models"),
    **dict.fromkeys(
        ("AddressView", "PoolApplied", "RedisIpam", "check_and_repair", "open_ipam",
         "pool_prefix"), "ipam.redis_store"),
}

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
    "IpamStats",
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
    "PoolStats",
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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ipam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
