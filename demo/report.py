"""Pure: the rows the demo prints after each step (one per ordinal: pod, node, addresses,
epoch, reservation state) and the checks of what each step promises. No I/O. A
dual-stack ordinal's IPv6 address is checked everywhere its IPv4 address is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    ordinal: int
    pod: str  # "" when no pod exists for the ordinal
    node: str  # the pod's node, or the reservation's home when there is no pod
    address: str  # the pod's podIP, or the reserved address when there is no pod
    epoch: int
    state: str  # reservation state (bound, reserved, retained) or "-" without one
    ready: bool
    reserved: str = ""  # the reservation's address, to compare with the pod's
    address6: str = ""  # the pod's IPv6 address (or the reserved one without a pod)
    reserved6: str = ""

    @property
    def addresses(self) -> str:
        """Both addresses as one text ("10.0.0.5, fd00::5")."""
        return ", ".join(a for a in (self.address, self.address6) if a)

    @property
    def place(self) -> tuple[str, str, str]:
        return (self.node, self.address, self.address6)


@dataclass(frozen=True)
class Check:
    text: str
    ok: bool


@dataclass(frozen=True)
class Probe:
    text: str
    #: "ok", "denied" (expected refusal), "failed" or "skipped".
    outcome: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome in ("ok", "denied", "skipped")


@dataclass
class StepResult:
    title: str
    rows: list[Row]
    checks: list[Check] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks) and all(p.passed for p in self.probes)


def rows_of(pods: Sequence[Mapping[str, Any]], reservations: Mapping[int, Mapping[str, Any]],
            statefulset: str) -> list[Row]:
    """Join the StatefulSet's pods with their reservations (dicts of Lease fields:
    address, addresses, node, epoch, state), one row per ordinal known to either."""
    by_ordinal: dict[int, Mapping[str, Any]] = {}
    for p in pods:
        name = str(p["metadata"]["name"])
        suffix = name.removeprefix(f"{statefulset}-")
        if suffix.isdigit():
            by_ordinal[int(suffix)] = p
    rows = []
    for o in sorted(set(by_ordinal) | set(reservations)):
        pod = by_ordinal.get(o)
        res = reservations.get(o) or {}
        status = (pod or {}).get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or ())
        reserved = str(res.get("address") or "")
        reserved6 = next((str(a["address"]) for a in res.get("addresses") or ()
                          if ":" in str(a.get("address", ""))), "")
        if ":" in reserved:  # an IPv6-only reservation
            reserved, reserved6 = "", reserved
        pod_ips = [str(x.get("ip", "")) for x in status.get("podIPs") or ()] or \
            ([str(status["podIP"])] if status.get("podIP") else [])
        pod6 = next((a for a in pod_ips if ":" in a), "")
        pod4 = next((a for a in pod_ips if a and ":" not in a), "")
        rows.append(Row(
            ordinal=o,
            pod=str(pod["metadata"]["name"]) if pod else "",
            node=str(((pod or {}).get("spec") or {}).get("nodeName") or res.get("node") or ""),
            address=pod4 if pod else reserved,
            epoch=int(res.get("epoch") or 0),
            state=str(res.get("state") or "-"),
            ready=ready,
            reserved=reserved,
            address6=pod6 if pod else reserved6,
            reserved6=reserved6,
        ))
    return rows


def table(rows: Sequence[Row]) -> list[str]:
    dual = any(r.address6 for r in rows)
    head: tuple[str, ...] = ("POD", "NODE", "ADDRESS", *(("IPV6 ADDRESS",) if dual else ()),
                             "EPOCH", "RESERVATION", "READY")
    cells = [(r.pod or f"(ordinal {r.ordinal})", r.node or "-", r.address or "-",
              *((r.address6 or "-",) if dual else ()),
              str(r.epoch) if r.epoch else "-", r.state, "yes" if r.ready else "no")
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return lines


def by_ordinal(rows: Sequence[Row]) -> dict[int, Row]:
    return {r.ordinal: r for r in rows}


def converged(rows: Sequence[Row], replicas: int) -> bool:
    """Every ordinal below ``replicas`` has a Ready pod whose podIP is its reserved
    address, and no pod exists beyond."""
    live = [r for r in rows if r.pod]
    if sorted(r.ordinal for r in live) != list(range(replicas)):
        return False
    return all(r.ready and (r.address or r.address6) and r.address == r.reserved
               and r.address6 == r.reserved6 and r.state == "bound" for r in live)


def check_same_place(before: Sequence[Row], after: Sequence[Row], ordinal: int) -> list[Check]:
    b, a = by_ordinal(before)[ordinal], by_ordinal(after).get(ordinal)
    if a is None:
        return [Check(f"ordinal {ordinal} came back", False)]
    return [Check(f"{a.pod} came back with the same address {b.addresses} "
                  f"(now {a.addresses or 'none'})",
                  (a.address, a.address6) == (b.address, b.address6)),
            Check(f"{a.pod} came back on the same node {b.node} (now {a.node or 'none'})",
                  a.node == b.node),
            Check(f"{a.pod} kept epoch {b.epoch} (now {a.epoch})", a.epoch == b.epoch)]


def check_failover(before: Sequence[Row], after: Sequence[Row], lost: str) -> list[Check]:
    checks = []
    now = by_ordinal(after)
    moved = [r for r in before if r.node == lost]
    if not moved:
        checks.append(Check(f"some replica ran on {lost}", False))
    for b in moved:
        a = now.get(b.ordinal)
        if a is None:
            checks.append(Check(f"ordinal {b.ordinal} came back", False))
            continue
        checks.append(Check(f"{a.pod} re-homed from {lost} to {a.node or 'nowhere'}",
                            bool(a.node) and a.node != lost))
        checks.append(Check(f"{a.pod} kept its address {b.addresses} "
                            f"(now {a.addresses or 'none'})",
                            (a.address, a.address6) == (b.address, b.address6)))
        checks.append(Check(f"{a.pod} got a new epoch ({b.epoch} -> {a.epoch})",
                            a.epoch > b.epoch))
    for b in before:
        if b.node == lost:
            continue
        a = now.get(b.ordinal)
        checks.append(Check(f"{b.pod} on {b.node} untouched",
                            a is not None and (a.place, a.epoch) == (b.place, b.epoch)))
    return checks


def check_scaled_down(before: Sequence[Row], after: Sequence[Row], replicas: int
                      ) -> list[Check]:
    now = by_ordinal(after)
    checks = []
    for b in before:
        a = now.get(b.ordinal)
        if b.ordinal < replicas:
            checks.append(Check(f"{b.pod} still runs at {b.addresses}",
                                a is not None and a.pod != "" and a.place == b.place))
        else:
            checks.append(Check(
                f"ordinal {b.ordinal}'s address {b.addresses} is retained (no pod)",
                a is not None and not a.pod and a.state == "retained"
                and (a.address, a.address6) == (b.address, b.address6)))
    return checks


def check_same_addresses(before: Sequence[Row], after: Sequence[Row]) -> list[Check]:
    now = by_ordinal(after)
    return [Check(f"{b.pod} is back at {b.addresses} on {b.node} "
                  f"(now {now[b.ordinal].addresses if b.ordinal in now else 'none'})",
                  b.ordinal in now and now[b.ordinal].place == b.place)
            for b in before]
