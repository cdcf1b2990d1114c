"""The cluster against the IPAM (issue 16): the cluster holds the truth about which
addresses are in use (a sticky pod's ``stickyip.io/ip`` annotation, any pod's
``status.podIPs``); this compares running pods with what the IPAM records for
those addresses. Pure: the caller reads pods and the IPAM, this only compares.

Verdicts, per address a running pod uses:

- ``missing``: a sticky pod's own reservation is gone and the address is free in the
  IPAM (a store restart or failover lost it, or someone deleted it). It must be
  restored for that pod, never handed to anyone else.
- ``unknown``: a pod that is not sticky uses an address the IPAM does not hold.
- ``mismatch``: the sticky pod's reservation exists but holds other addresses.
- ``conflict``: another owner holds the address in the IPAM.
- ``duplicate``: two running pods use the same address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ipam.contract import ANN_EPOCH, ANN_IP, OwnerKey, opted_in, pod_request, sticky_owner
from ipam.errors import IpamError
from ipam.models import Lease, LeaseKind
from ipam.ranges import IPAddress, parse_address


class Verdict(StrEnum):
    MISSING = "missing"
    UNKNOWN = "unknown"
    MISMATCH = "mismatch"
    CONFLICT = "conflict"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class LivePod:
    """A pod bound to a node and not finished, with the addresses it uses."""

    ref: str
    uid: str
    node: str
    #: The sticky reservation it holds (an opted-in StatefulSet pod), else None.
    owner: OwnerKey | None
    addresses: tuple[IPAddress, ...]
    #: ``stickyip.io/epoch`` (0 when absent).
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    pod: LivePod
    address: IPAddress
    #: CONFLICT: the record holding the address; MISMATCH: the pod's own record.
    record: Lease | None
    message: str


def parse_ips(text: str) -> tuple[IPAddress, ...]:
    """``stickyip.io/ip`` ("A" or "A,B"); malformed entries are skipped."""
    out: list[IPAddress] = []
    for part in text.split(","):
        try:
            out.append(parse_address(part))
        except IpamError:
            continue
    return tuple(out)


def _epoch(annotations: Mapping[str, Any]) -> int:
    try:
        return int(str(annotations.get(ANN_EPOCH) or 0))
    except ValueError:
        return 0


def live_pod(obj: Mapping[str, Any]) -> LivePod | None:
    """A pod as the API serves it -> LivePod (None unless bound and not finished, or
    when it names no address). A sticky pod's addresses are its ``stickyip.io/ip``;
    any other pod's are ``status.podIPs``."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    node = spec.get("nodeName") or ""
    if not node or status.get("phase") in ("Succeeded", "Failed"):
        return None
    annotations = meta.get("annotations") or {}
    owner: OwnerKey | None = None
    try:
        req = pod_request(obj)
    except IpamError:
        req = None
    if req is not None:
        owner = req.key.owner
    addresses = parse_ips(str(annotations.get(ANN_IP) or "")) if owner else ()
    if not addresses:
        ips = [p.get("ip", "") for p in status.get("podIPs") or [] if isinstance(p, dict)]
        addresses = parse_ips(",".join(ips or [status.get("podIP") or ""]))
    if not addresses:
        return None
    return LivePod(ref=f"{meta.get('namespace', 'default')}/{meta.get('name', '')}",
                   uid=str(meta.get("uid") or ""), node=node, owner=owner,
                   addresses=addresses, epoch=_epoch(annotations))


def live_sticky_pod(*, namespace: str, name: str, uid: str, node: str, phase: str,
                    labels: Mapping[str, str], annotations: Mapping[str, str],
                    statefulset: str, ordinal: int) -> LivePod | None:
    """The scheduler's cached pod facts -> LivePod, for an opted-in StatefulSet pod
    that runs with a written ``stickyip.io/ip`` (None otherwise)."""
    if not node or phase in ("Succeeded", "Failed") or ordinal < 0 or not statefulset \
            or not opted_in(labels):
        return None
    addresses = parse_ips(annotations.get(ANN_IP) or "")
    if not addresses:
        return None
    return LivePod(ref=f"{namespace}/{name}", uid=uid, node=node,
                   owner=sticky_owner(namespace, statefulset, ordinal), addresses=addresses,
                   epoch=_epoch(annotations))


def belongs(record: Lease, pod: LivePod) -> bool:
    """Is ``record`` the pod's own (its reservation, or its ephemeral lease)?"""
    if pod.owner is not None:
        return record.owner == pod.owner
    if record.kind is not LeaseKind.EPHEMERAL:
        return False
    if record.holder:
        return record.holder == pod.uid
    return bool(record.pod) and record.pod == pod.ref


def _who(record: Lease) -> str:
    pod = record.pod or (f"pod UID {record.holder}" if record.holder else "no pod")
    return f"{record.owner} ({record.kind.value}, {record.state.value}, {pod})"


def compare(pods: Iterable[LivePod], holders: Mapping[IPAddress, Lease | None],
            own: Mapping[OwnerKey, Lease | None]) -> list[Finding]:
    """Findings for the running ``pods``. ``holders``: the IPAM's record holding each
    address (None when free; an address absent from it is in no pool and skipped).
    ``own``: the record of each sticky pod whose address is free (None when absent)."""
    pods = list(pods)
    users: dict[IPAddress, list[LivePod]] = {}
    for pod in pods:
        for a in pod.addresses:
            users.setdefault(a, []).append(pod)
    out: list[Finding] = []
    for pod in pods:
        for a in pod.addresses:
            others = [p.ref for p in users[a] if p is not pod]
            if others:
                out.append(Finding(Verdict.DUPLICATE, pod, a, None,
                                   f"{a} is used by {pod.ref} and also by "
                                   f"{', '.join(sorted(others))}"))
            if a not in holders:
                continue
            held = holders[a]
            if held is None:
                if pod.owner is None:
                    out.append(Finding(Verdict.UNKNOWN, pod, a, None,
                                       f"{a} is used by pod {pod.ref} on {pod.node}, but the "
                                       "IPAM does not hold it"))
                    continue
                mine = own.get(pod.owner)
                if mine is None:
                    out.append(Finding(Verdict.MISSING, pod, a, None,
                                       f"{a} is used by pod {pod.ref} on {pod.node}, but the "
                                       f"IPAM has no reservation {pod.owner}"))
                else:
                    has = ", ".join(str(x.address) for x in mine.addresses) or "no address"
                    out.append(Finding(Verdict.MISMATCH, pod, a, mine,
                                       f"{a} is used by pod {pod.ref} on {pod.node}, but its "
                                       f"reservation {pod.owner} holds {has}"))
            elif not belongs(held, pod):
                out.append(Finding(Verdict.CONFLICT, pod, a, held,
                                   f"{a} is used by pod {pod.ref} on {pod.node}, but the IPAM "
                                   f"gives it to {_who(held)}"))
    return out


def restorable(findings: Sequence[Finding]) -> dict[OwnerKey, LivePod]:
    """Sticky pods whose every address is MISSING (and none duplicated): their
    reservation can be restored as the pod uses it."""
    by_pod: dict[str, list[Finding]] = {}
    for f in findings:
        by_pod.setdefault(f.pod.ref, []).append(f)
    out: dict[OwnerKey, LivePod] = {}
    for fs in by_pod.values():
        pod = fs[0].pod
        missing = {f.address for f in fs if f.verdict is Verdict.MISSING}
        if pod.owner is not None and missing == set(pod.addresses) and all(
                f.verdict is Verdict.MISSING for f in fs):
            out[pod.owner] = pod
    return out
