"""The stickyip IPAM: pools cut into per-node blocks, ephemeral leases and sticky
per-ordinal reservations, held in Redis and changed only by atomic scripts.

Names are loaded on first use (PEP 562), so importing a pure module such as
``ipam.contract`` or ``ipam.ranges`` never loads the Redis client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        ReservationNotFound,
        StaleEpoch,
        StoreUnavailable,
    )
    from ipam.models import (
        AuditEntry,
        BlockInfo,
        Finding,
        Lease,
        LeaseKind,
        MigratedAddress,
        NodeHealth,
        NodeName,
        PoolSpec,
        PoolStatus,
        Reservation,
        ReservationState,
        RoutingView,
        pool_from_dict,
    )
    from ipam.redis_store import RedisIpam, check_and_repair, open_ipam, pool_prefix

#: public name -> the module defining it
_WHERE = {
    **dict.fromkeys(
        ("DEFAULT_POOL", "NodeFailurePolicy", "OwnerKey", "PoolName", "ReservationKey",
         "ephemeral_owner"), "ipam.contract"),
    **dict.fromkeys(
        ("AddressTaken", "InvalidAddress", "InvalidPool", "InvalidRequest", "IpamError",
         "PoolExhausted", "PoolInUse", "PoolNotFound", "ReservationConflict",
         "ReservationNotFound", "StaleEpoch", "StoreUnavailable"), "ipam.errors"),
    **dict.fromkeys(
        ("AuditEntry", "BlockInfo", "Finding", "Lease", "LeaseKind", "MigratedAddress",
         "NodeHealth", "NodeName", "PoolSpec", "PoolStatus", "Reservation",
         "ReservationState", "RoutingView", "pool_from_dict"), "ipam.models"),
    **dict.fromkeys(
        ("RedisIpam", "check_and_repair", "open_ipam", "pool_prefix"), "ipam.redis_store"),
}

__all__ = [
    "DEFAULT_POOL",
    "AddressTaken",
    "AuditEntry",
    "BlockInfo",
    "Finding",
    "InvalidAddress",
    "InvalidPool",
    "InvalidRequest",
    "IpamError",
    "Lease",
    "LeaseKind",
    "MigratedAddress",
    "NodeFailurePolicy",
    "NodeHealth",
    "NodeName",
    "OwnerKey",
    "PoolExhausted",
    "PoolInUse",
    "PoolName",
    "PoolNotFound",
    "PoolSpec",
    "PoolStatus",
    "RedisIpam",
    "Reservation",
    "ReservationConflict",
    "ReservationKey",
    "ReservationNotFound",
    "ReservationState",
    "RoutingView",
    "StaleEpoch",
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
