"""What a StatefulSet asks of stickyip, read from its pod template's label and
annotations (DESIGN.md §2), with one message per mistake that names the fix.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ipam import ranges
from ipam.errors import InvalidAddress, IpamError
from ipam.models import DEFAULT_POOL, NodeFailurePolicy, check_name

PREFIX = "stickyip.io/"
LABEL_FIXED_IP = PREFIX + "fixed-ip"
ANN_POOL = PREFIX + "pool"
ANN_IPS = PREFIX + "ips"
ANN_RETAIN = PREFIX + "retain"
ANN_NODE_FAILURE = PREFIX + "node-failure"
#: Written by stickyip on pods (read-only for users).
ANN_IP = PREFIX + "ip"
ANN_NODE = PREFIX + "node"
ANN_EPOCH = PREFIX + "epoch"
WRITTEN = (ANN_IP, ANN_NODE, ANN_EPOCH)
USER = (ANN_POOL, ANN_IPS, ANN_RETAIN, ANN_NODE_FAILURE)

#: Longest ``stickyip.io/ips`` list accepted (a StatefulSet of more replicas than
#: this in one pool is not a realistic use of fixed addresses).
MAX_ADDRESSES = 4096


@dataclass(frozen=True, slots=True)
class Intent:
    """The parsed ``stickyip.io/*`` request of an opted-in workload."""

    pool: str = DEFAULT_POOL
    addresses: tuple[ipaddress.IPv4Address, ...] | None = None
    retain: float | None = None
    policy: NodeFailurePolicy | None = None
    pool_explicit: bool = False


@dataclass(slots=True)
class Reading:
    intent: Intent | None
    errors: list[str] = field(default_factory=list)


def mapping(obj: Any, *path: str) -> dict[str, Any]:
    """``obj[path...]`` when every step is a mapping, else an empty mapping."""
    cur = obj
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur if isinstance(cur, dict) else {}


def opted_in(labels: dict[str, Any]) -> bool:
    return labels.get(LABEL_FIXED_IP) == "true"


def label_error(labels: dict[str, Any]) -> str | None:
    value = labels.get(LABEL_FIXED_IP)
    if value is None or value in ("true", "false"):
        return None
    return (f'label {LABEL_FIXED_IP}={value!r} is not understood: set it to "true" to get '
            'fixed addresses, or remove it')


def read_intent(annotations: dict[str, Any]) -> Reading:
    """Parse the user annotations; every mistake is reported, not just the first."""
    errors: list[str] = []
    pool: str = DEFAULT_POOL
    addresses: tuple[ipaddress.IPv4Address, ...] | None = None
    retain: float | None = None
    policy: NodeFailurePolicy | None = None
    for key in USER:
        if key in annotations and not isinstance(annotations[key], str):
            errors.append(f"annotation {key} must be a string")
    raw_pool = annotations.get(ANN_POOL)
    if isinstance(raw_pool, str):
        try:
            pool = check_name("pool", raw_pool.strip())
        except IpamError as e:
            errors.append(f"annotation {ANN_POOL}: {e}")
    raw_ips = annotations.get(ANN_IPS)
    if isinstance(raw_ips, str):
        try:
            parsed = ranges.parse_address_list(raw_ips, limit=MAX_ADDRESSES)
            addresses = tuple(a for a in parsed if isinstance(a, ipaddress.IPv4Address))
            if len(addresses) != len(parsed):
                raise InvalidAddress("IPv6 addresses are not accepted here yet")
        except IpamError as e:
            errors.append(f"annotation {ANN_IPS}: {e}; write addresses and ranges like "
                          "'10.20.0.10-10.20.0.12,10.20.0.20'")
    raw_retain = annotations.get(ANN_RETAIN)
    if isinstance(raw_retain, str):
        try:
            retain = ranges.parse_retain(raw_retain)
        except IpamError as e:
            errors.append(f"annotation {ANN_RETAIN}: {e}")
    raw_policy = annotations.get(ANN_NODE_FAILURE)
    if isinstance(raw_policy, str):
        try:
            policy = NodeFailurePolicy(raw_policy.strip())
        except ValueError:
            errors.append(f"annotation {ANN_NODE_FAILURE}={raw_policy!r} is not understood: "
                          "use 'migrate' (default) or 'wait'")
    if errors:
        return Reading(intent=None, errors=errors)
    return Reading(intent=Intent(pool=pool, addresses=addresses, retain=retain, policy=policy,
                                 pool_explicit=isinstance(raw_pool, str)))
