"""Errors of the IPAM: one root, leaves that say what happened and what to do."""

from __future__ import annotations


class IpamError(Exception):
    """Root of every IPAM error."""


class InvalidPool(IpamError):
    """A pool definition is malformed or conflicts with the pools already applied."""


class PoolNotFound(IpamError):
    """The named pool does not exist."""


class PoolExhausted(IpamError):
    """No free address is left in the pool."""


class PoolInUse(IpamError):
    """The pool still holds allocations, so it cannot be changed that way or deleted."""


class InvalidAddress(IpamError):
    """An address or address list is malformed or outside the pool."""


class AddressTaken(IpamError):
    """The address is held by another owner (``owner``: its owner key)."""

    def __init__(self, message: str, *, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


class ReservationNotFound(IpamError):
    """No reservation exists for that StatefulSet ordinal."""


class ReservationConflict(IpamError):
    """The request contradicts the reservation already recorded."""


class ReservationInUse(ReservationConflict):
    """A pod still holds the reservation (state ``bound``, or ``quarantined`` after a
    forced release): releasing it would hand a live address to someone else."""

    def __init__(self, message: str, *, holder: str, pod: str = "") -> None:
        super().__init__(message)
        self.holder = holder
        self.pod = pod


class StaleEpoch(IpamError):
    """A fenced operation used an epoch older than the one recorded."""


class InvalidRequest(IpamError):
    """A request argument is malformed (bad owner key, duration, node name...)."""


class StoreUnavailable(IpamError):
    """The Redis store cannot be reached, answered with an error, did not answer within
    the call's deadline, or could not confirm a write on enough replicas. A write may
    or may not have happened: every mutation is idempotent, so retrying is safe."""


class AllocationPaused(StoreUnavailable):
    """The store restarted or failed over since the running pods were last reconciled
    with it: no new address is handed out until the scheduler's reconciliation has put
    back any reservation the store lost (seconds). Retrying is safe."""


class StoreLayoutError(IpamError):
    """The store holds a key layout this version does not read (refused, never mixed)."""
