"""The sticky contract: how a workload asks stickyip for fixed addresses (the
opt-in label, the ``stickyip.io/*`` annotations and their limits), which
StatefulSet ordinal a pod is, and how owners are named in the store.

The webhook, the scheduler and the node agent all read these rules from here
and nowhere else (docs/design.md §2). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NewType, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ipam import ranges
from ipam.errors import InvalidAddress, InvalidRequest, IpamError

PoolName = NewType("PoolName", str)
#: The key an address is held by: ``sts/NS/NAME/ORDINAL`` or ``eph/CONTAINER/IFNAME``.
OwnerKey = NewType("OwnerKey", str)

#: The pool a workload gets when it names none.
DEFAULT_POOL = PoolName("default")

PREFIX = "stickyip.io/"
#: The opt-in label on a StatefulSet's pod template (and so on its pods).
LABEL_FIXED_IP = PREFIX + "fixed-ip"
ANN_POOL = PREFIX + "pool"
ANN_IPS = PREFIX + "ips"
ANN_RETAIN = PREFIX + "retain"
ANN_NODE_FAILURE = PREFIX + "node-failure"
#: Annotations a user writes on the pod template.
USER_ANNOTATIONS = (ANN_POOL, ANN_IPS, ANN_RETAIN, ANN_NODE_FAILURE)
#: Written by stickyip on pods (read-only for users).
ANN_IP = PREFIX + "ip"
ANN_NODE = PREFIX + "node"
ANN_EPOCH = PREFIX + "epoch"
WRITTEN_ANNOTATIONS = (ANN_IP, ANN_NODE, ANN_EPOCH)

#: Set by the StatefulSet controller on its pods (Kubernetes 1.28+ for pod-index).
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
LABEL_POD_NAME = "statefulset.kubernetes.io/pod-name"

#: Longest ``stickyip.io/ips`` list accepted (a StatefulSet of more replicas than
#: this in one pool is not a realistic use of fixed addresses).
MAX_ADDRESSES = 4096
#: Ordinals have at most this many digits (a Kubernetes int32 has 10).
_MAX_ORDINAL_DIGITS = 9

STICKY_OWNER_PREFIX = "sts/"
EPHEMERAL_OWNER_PREFIX = "eph/"

_T = TypeVar("_T")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")


class NodeFailurePolicy(StrEnum):
    """``stickyip.io/node-failure``: what happens when a home node is confirmed gone."""

    MIGRATE = "migrate"
    WAIT = "wait"


def check_name(kind: str, value: str) -> str:
    """Kubernetes-style DNS-1123 names (pools, nodes, namespaces, StatefulSets)."""
    if not _NAME.match(value):
        raise InvalidRequest(
            f"invalid {kind} name {value!r}: use lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


# ------------------------------------------------------------------ owners


class ReservationKey(BaseModel):
    """A StatefulSet ordinal: what a sticky reservation is keyed by."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    statefulset: str
    ordinal: int = Field(ge=0)

    @classmethod
    def parse(cls, text: str) -> ReservationKey:
        """``NAMESPACE/STATEFULSET/ORDINAL``, or the owner key ``sts/...`` form."""
        parts = text.split("/")
        if len(parts) == 4 and parts[0] + "/" == STICKY_OWNER_PREFIX:
            parts = parts[1:]
        if len(parts) != 3 or not parts[2].isdigit():
            raise InvalidRequest(
                f"invalid reservation {text!r}: expected NAMESPACE/STATEFULSET/ORDINAL, "
                "e.g. prod/redis/0"
            )
        return cls.of(parts[0], parts[1], int(parts[2]))

    @classmethod
    def of(cls, namespace: str, statefulset: str, ordinal: int) -> ReservationKey:
        check_name("namespace", namespace)
        check_name("statefulset", statefulset)
        if ordinal < 0:
            raise InvalidRequest(f"ordinal must be >= 0, got {ordinal}")
        return cls(namespace=namespace, statefulset=statefulset, ordinal=ordinal)

    @property
    def owner(self) -> OwnerKey:
        return sticky_owner(self.namespace, self.statefulset, self.ordinal)

    @property
    def pod_name(self) -> str:
        """The name of the pod that fills this ordinal."""
        return f"{self.statefulset}-{self.ordinal}"

    @property
    def pod_ref(self) -> str:
        """``namespace/name`` of the pod that fills this ordinal."""
        return f"{self.namespace}/{self.pod_name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.statefulset}/{self.ordinal}"


def sticky_owner(namespace: str, statefulset: str, ordinal: int) -> OwnerKey:
    """The owner key of a StatefulSet ordinal's reservation (no name checks: use
    ``ReservationKey.of`` for input that may be malformed)."""
    return OwnerKey(f"{STICKY_OWNER_PREFIX}{namespace}/{statefulset}/{ordinal}")


def ephemeral_owner(container_id: str, ifname: str = "eth0") -> OwnerKey:
    """The owner key of an ordinary pod's lease: its container and interface."""
    if not _CONTAINER.match(container_id):
        raise InvalidRequest(f"invalid container id {container_id!r}")
    if not _CONTAINER.match(ifname) or len(ifname) > 15:
        raise InvalidRequest(f"invalid interface name {ifname!r}")
    return OwnerKey(f"{EPHEMERAL_OWNER_PREFIX}{container_id}/{ifname}")


def is_sticky_owner(owner: str) -> bool:
    return owner.startswith(STICKY_OWNER_PREFIX)


def format_ips(addresses: Iterable[ranges.IPAddress]) -> str:
    """The value of ``stickyip.io/ip``: the pod's address, or its IPv4 and IPv6
    addresses comma-separated, IPv4 first."""
    return ",".join(str(a) for a in sorted(addresses, key=lambda a: a.version))


def written_annotations(addresses: Iterable[ranges.IPAddress], node: str | None,
                        epoch: int) -> dict[str, str]:
    """The annotations stickyip writes on a pod whose reservation holds ``addresses``
    on home ``node`` at ``epoch``."""
    return {ANN_IP: format_ips(addresses), ANN_NODE: node or "", ANN_EPOCH: str(epoch)}


# ------------------------------------------------------------------ the ordinal


@dataclass(frozen=True, slots=True)
class Slot:
    """The StatefulSet ordinal a pod fills."""

    namespace: str
    statefulset: str
    ordinal: int
    #: The pod's name (``STATEFULSET-ORDINAL``).
    pod: str

    @property
    def key(self) -> ReservationKey:
        """The reservation key (raises InvalidRequest for names the store refuses)."""
        return ReservationKey.of(self.namespace, self.statefulset, self.ordinal)


class SlotUnclear(InvalidRequest):
    """A StatefulSet pod whose name, labels and owner do not say one ordinal."""


def _mapping(obj: Any, *path: str) -> Mapping[str, Any]:
    cur = obj
    for step in path:
        cur = cur.get(step) if isinstance(cur, Mapping) else None
    return cur if isinstance(cur, Mapping) else {}


def _ordinal(text: Any) -> int | None:
    if isinstance(text, str) and text.isdigit() and len(text) <= _MAX_ORDINAL_DIGITS:
        return int(text)
    return None


def _suffix_ordinal(name: Any, statefulset: str) -> int | None:
    if isinstance(name, str) and name.startswith(statefulset + "-"):
        return _ordinal(name[len(statefulset) + 1:])
    return None


def statefulset_owner(meta: Mapping[str, Any]) -> str | None:
    """The name of the StatefulSet controlling a pod (its ``apps/*`` ownerReference;
    the controller reference wins when there are several)."""
    refs = meta.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    found: list[tuple[bool, str]] = []
    for ref in refs:
        if (isinstance(ref, Mapping) and ref.get("kind") == "StatefulSet"
                and str(ref.get("apiVersion", "")).startswith("apps/")
                and isinstance(ref.get("name"), str) and ref["name"]):
            found.append((ref.get("controller") is True, ref["name"]))
    if not found:
        return None
    found.sort(key=lambda f: not f[0])
    return found[0][1]


def slot_of(pod: Mapping[str, Any], *, namespace: str = "", name: str = "") -> Slot | None:
    """Which StatefulSet ordinal ``pod`` (Kubernetes JSON) is; None when no
    StatefulSet owns it.

    The one rule: a pod belongs to a StatefulSet only through an ``apps/*``
    ownerReference of kind StatefulSet. Its ordinal is read from every source the
    StatefulSet controller writes — the ``apps.kubernetes.io/pod-index`` label, the
    name ``STATEFULSET-N`` and the ``statefulset.kubernetes.io/pod-name`` label —
    and all of those present must agree; at least one must be present.
    ``namespace``/``name`` stand in for metadata the object lacks (an admission
    request carries them beside the object).

    Raises SlotUnclear with a message the user can act on.
    """
    meta = _mapping(pod, "metadata")
    sts = statefulset_owner(meta)
    if sts is None:
        return None
    labels = _mapping(pod, "metadata", "labels")
    own_name = meta.get("name")
    pod_name = own_name if isinstance(own_name, str) and own_name else name
    candidates: dict[str, int] = {}
    if (o := _ordinal(labels.get(LABEL_POD_INDEX))) is not None:
        candidates[f"label {LABEL_POD_INDEX}"] = o
    if (o := _suffix_ordinal(pod_name, sts)) is not None:
        candidates["pod name"] = o
    if (o := _suffix_ordinal(labels.get(LABEL_POD_NAME), sts)) is not None:
        candidates[f"label {LABEL_POD_NAME}"] = o
    if not candidates:
        raise SlotUnclear(
            f"cannot tell which ordinal of StatefulSet {sts!r} pod "
            f"{pod_name or '(unnamed)'!r} is: expected a name '{sts}-N' or label "
            f"{LABEL_POD_INDEX}")
    if len(set(candidates.values())) > 1:
        seen = ", ".join(f"{k} says {v}" for k, v in candidates.items())
        raise SlotUnclear(f"pod of StatefulSet {sts!r} has inconsistent ordinals ({seen})")
    own_ns = meta.get("namespace")
    ns = namespace or (own_ns if isinstance(own_ns, str) else "")
    if not ns:
        raise SlotUnclear(f"pod {pod_name or '(unnamed)'!r} of StatefulSet {sts!r} names "
                          "no namespace")
    ordinal = next(iter(candidates.values()))
    return Slot(namespace=ns, statefulset=sts, ordinal=ordinal,
                pod=pod_name or f"{sts}-{ordinal}")


def opted_in(labels: Mapping[str, Any]) -> bool:
    """Whether a pod (or pod template) asks for fixed addresses."""
    return labels.get(LABEL_FIXED_IP) == "true"


def label_problem(labels: Mapping[str, Any]) -> str | None:
    """A message when the opt-in label has a value stickyip does not understand."""
    value = labels.get(LABEL_FIXED_IP)
    if value is None or value in ("true", "false"):
        return None
    return (f'label {LABEL_FIXED_IP}={value!r} is not understood: set it to "true" to get '
            'fixed addresses, or remove it')


# ------------------------------------------------------------------ the request


#: The addresses one ordinal is given: one address, or one of each family (IPv4 first).
OrdinalAddresses = tuple[ranges.IPAddress, ...]


@dataclass(frozen=True, slots=True)
class StickyRequest:
    """What an opted-in workload asks for in its ``stickyip.io/*`` annotations."""

    #: ``stickyip.io/pool``: one pool, or one pool per address family (dual-stack).
    pools: tuple[PoolName, ...] = (DEFAULT_POOL,)
    #: ``stickyip.io/ips`` per ordinal, in ordinal order; None when not given.
    addresses: tuple[OrdinalAddresses, ...] | None = None
    #: Seconds (``ranges.FOREVER`` for forever); None when not given.
    retain: float | None = None
    #: None when not given (a new reservation then defaults to migrate).
    policy: NodeFailurePolicy | None = None
    #: Whether ``stickyip.io/pool`` was given.
    pool_explicit: bool = False

    @property
    def pool(self) -> PoolName:
        """The first pool named (the only one of a single-stack request)."""
        return self.pools[0]

    def addresses_for(self, ordinal: int, *, statefulset: str) -> OrdinalAddresses:
        """The listed addresses of ``ordinal`` (empty when no list is given).

        Raises NotEnoughAddresses when the list is too short."""
        if self.addresses is None:
            return ()
        if ordinal >= len(self.addresses):
            n = len(self.addresses)
            raise NotEnoughAddresses(
                f"StatefulSet {statefulset!r} lists {n} address(es) in {ANN_IPS}; ordinal "
                f"{ordinal} has none: add addresses to the list or scale to {n} replicas")
        return self.addresses[ordinal]

    def listed(self, replicas: int) -> list[ranges.IPAddress]:
        """Every listed address of the first ``replicas`` ordinals."""
        return [a for per in (self.addresses or ())[:replicas] for a in per]


class InvalidAnnotations(InvalidRequest):
    """One or more ``stickyip.io/*`` annotations are malformed; ``problems`` lists
    every one of them (the message joins them)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class NotEnoughAddresses(InvalidRequest):
    """``stickyip.io/ips`` lists fewer addresses than the ordinal needs."""


_IPS_EXAMPLE = ("write addresses and ranges like '10.20.0.10-10.20.0.12,10.20.0.20', or "
                "for dual-stack one IPv4+IPv6 pair per ordinal like "
                "'10.20.0.10+fd00:20::10,10.20.0.11-10.20.0.12+fd00:20::11-fd00:20::12'")


def _parse_pools(text: str) -> tuple[PoolName, ...]:
    names = [n.strip() for n in text.split(",")]
    if len(names) > 2:
        raise InvalidRequest(f"names {len(names)} pools; name one pool, or two for "
                             "dual-stack (one IPv4 and one IPv6 pool)")
    pools = tuple(PoolName(check_name("pool", n)) for n in names)
    if len(pools) == 2 and pools[0] == pools[1]:
        raise InvalidRequest(f"names pool {pools[0]!r} twice")
    return pools


def _parse_ips(text: str) -> tuple[OrdinalAddresses, ...]:
    """``stickyip.io/ips``: comma-separated items in ordinal order. An item is an
    address, an ``a-b`` range, or a dual-stack pair ``X+Y`` of an IPv4 and an IPv6
    address (or two ranges of equal length), giving each ordinal one of each."""
    items = [i.strip() for i in text.split(",")]
    pairs = ["+" in i for i in items]
    if any(pairs) and not all(pairs):
        raise InvalidAddress("mixes dual-stack pairs (A+B) with single addresses; give "
                             "every ordinal a pair, or none")
    out: list[OrdinalAddresses] = []
    for item in items:
        if not item:
            raise InvalidAddress(f"empty entry in address list {text!r}")
        if "+" in item:
            left, _, right = item.partition("+")
            a = ranges.parse_address_list(left, limit=MAX_ADDRESSES)
            b = ranges.parse_address_list(right, limit=MAX_ADDRESSES)
            if a[0].version == b[0].version:
                raise InvalidAddress(f"pair {item!r} names two IPv{a[0].version} "
                                     "addresses; a pair is one IPv4 and one IPv6")
            if len(a) != len(b):
                raise InvalidAddress(f"pair {item!r} joins ranges of {len(a)} and {len(b)} "
                                     "addresses; both sides must be as long")
            v4, v6 = (a, b) if a[0].version == 4 else (b, a)
            out.extend(zip(v4, v6, strict=True))
        else:
            out.extend((addr,) for addr in ranges.parse_address_list(item,
                                                                     limit=MAX_ADDRESSES))
        if len(out) > MAX_ADDRESSES:
            raise InvalidAddress(f"address list {text!r} is longer than {MAX_ADDRESSES}")
    families = {a.version for per in out for a in per}
    if not any(pairs) and len(families) > 1:
        raise InvalidAddress("mixes IPv4 and IPv6 addresses; for dual-stack give each "
                             "ordinal a pair A+B")
    seen: set[ranges.IPAddress] = set()
    for per in out:
        for addr in per:
            if addr in seen:
                raise InvalidAddress(f"address {addr} appears twice in {text!r}")
            seen.add(addr)
    return tuple(out)


def read_request(annotations: Mapping[str, Any]) -> StickyRequest:
    """Parse the user annotations of an opted-in pod or pod template.

    Every mistake is reported, not just the first: raises InvalidAnnotations."""
    problems: list[str] = []
    for key in USER_ANNOTATIONS:
        if key in annotations and not isinstance(annotations[key], str):
            problems.append(f"annotation {key} must be a string")
    pools = _parsed(annotations, ANN_POOL, _parse_pools, problems) or (DEFAULT_POOL,)
    addresses = _parsed(annotations, ANN_IPS, _parse_ips, problems, f"; {_IPS_EXAMPLE}")
    if addresses and len(addresses[0]) == 2 and len(pools) != 2:
        problems.append(f"annotation {ANN_IPS} gives each ordinal an IPv4 and an IPv6 "
                        f"address: name one pool per family in {ANN_POOL}, like "
                        "'prod-a,prod-a-v6'")
    retain = _parsed(annotations, ANN_RETAIN, ranges.parse_retain, problems)
    policy = None
    raw_policy = annotations.get(ANN_NODE_FAILURE)
    if isinstance(raw_policy, str):
        try:
            policy = NodeFailurePolicy(raw_policy.strip())
        except ValueError:
            problems.append(f"annotation {ANN_NODE_FAILURE}={raw_policy!r} is not understood: "
                            "use 'migrate' (default) or 'wait'")
    if problems:
        raise InvalidAnnotations(problems)
    return StickyRequest(pools=pools, addresses=addresses, retain=retain, policy=policy,
                         pool_explicit=isinstance(annotations.get(ANN_POOL), str))


def _parsed(annotations: Mapping[str, Any], key: str, parse: Callable[[str], _T],
            problems: list[str], hint: str = "") -> _T | None:
    """``parse`` of the annotation ``key``; None when it is absent or no string (that is
    reported apart), or when it does not parse: then the problem joins ``problems``."""
    raw = annotations.get(key)
    if not isinstance(raw, str):
        return None
    try:
        return parse(raw)
    except IpamError as e:
        problems.append(f"annotation {key}: {e}{hint}")
        return None


def pool_of(annotations: Mapping[str, Any]) -> PoolName:
    """The (first) pool a pod's annotations name (the default pool when none or malformed);
    for decisions that only need a pool, such as an ordinary pod's address view."""
    raw = annotations.get(ANN_POOL)
    first = raw.split(",")[0].strip() if isinstance(raw, str) else ""
    if _NAME.match(first):
        return PoolName(first)
    return DEFAULT_POOL


# ------------------------------------------------------------------ one pod


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one opted-in StatefulSet pod asks for: its ordinal, the workload's
    request, and the listed addresses of its ordinal (empty when none are listed)."""

    slot: Slot
    request: StickyRequest
    addresses: OrdinalAddresses

    @property
    def key(self) -> ReservationKey:
        return self.slot.key

    @property
    def pool(self) -> PoolName:
        return self.request.pool

    @property
    def pools(self) -> tuple[PoolName, ...]:
        return self.request.pools


def request_for(slot: Slot, annotations: Mapping[str, Any]) -> PodRequest:
    """The request of the pod filling ``slot``, from its annotations.

    Raises InvalidAnnotations, NotEnoughAddresses, or InvalidRequest (a name the
    store refuses)."""
    request = read_request(annotations)
    addresses = request.addresses_for(slot.ordinal, statefulset=slot.statefulset)
    slot.key  # noqa: B018 - validates the names before anything is claimed
    return PodRequest(slot=slot, request=request, addresses=addresses)


def pod_request(pod: Mapping[str, Any], *, namespace: str = "", name: str = ""
                ) -> PodRequest | None:
    """The request of ``pod`` (Kubernetes JSON); None unless it is an opted-in
    StatefulSet pod. Raises SlotUnclear, InvalidAnnotations, NotEnoughAddresses or
    InvalidRequest with a message the user can act on."""
    if not opted_in(_mapping(pod, "metadata", "labels")):
        return None
    slot = slot_of(pod, namespace=namespace, name=name)
    if slot is None:
        return None
    return request_for(slot, _mapping(pod, "metadata", "annotations"))
