"""``stickyip ipam``: list leases, reservations and blocks, read an address's history,
release a reservation, and check (or repair) the store."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from plumbing.output import Column, duration, emit, relative, timestamp
from stickyip.pools import output_flag
from stickyip.store import open_store

if TYPE_CHECKING:
    from ipam import Lease, RedisIpam


def add_parsers(sub: Any) -> None:
    ipam = sub.add_parser("ipam", help="inspect and repair leases and reservations"
                          ).add_subparsers(dest="ipam_command", required=True, metavar="ACTION")
    s = ipam.add_parser("show", help="list leases and reservations")
    s.add_argument("--pool", help="only this pool")
    s.add_argument("--node", help="only addresses homed on this node")
    s.add_argument("-n", "--namespace", help="only this namespace's reservations and pods")
    s.add_argument("--statefulset", help="only this StatefulSet's reservations (with -n: "
                   "in that namespace)")
    output_flag(s)
    s.set_defaults(handler=show)
    b = ipam.add_parser("blocks", help="list node blocks")
    b.add_argument("--pool", help="only this pool")
    output_flag(b)
    b.set_defaults(handler=blocks)
    h = ipam.add_parser("history", help="audit trail of one address")
    h.add_argument("address")
    output_flag(h)
    h.set_defaults(handler=history)
    r = ipam.add_parser("release", help="release the reservation of NS/STS/ORDINAL")
    r.add_argument("reservation", metavar="NS/STS/ORDINAL")
    r.add_argument("--pool", help="the pool (default: search every pool)")
    r.add_argument("--ignore-not-found", action="store_true",
                   help="exit 0 when there is no such reservation (as kubectl delete)")
    r.add_argument("--force", action="store_true",
                   help="release even while a pod holds it: the address is quarantined "
                   "(never handed out) until that pod is gone")
    r.set_defaults(handler=release)
    c = ipam.add_parser("check", help="find (and with --repair fix) inconsistencies")
    c.add_argument("--repair", action="store_true",
                   help="fix each finding atomically, without stopping allocation")
    c.add_argument("--against-cluster", action="store_true",
                   help="also compare the running pods (Kubernetes API) with the IPAM: "
                   "addresses in use that it does not know, or knows under another owner")
    output_flag(c)
    c.set_defaults(handler=check)


def _retain(seconds: float | None) -> str:
    if seconds is None:
        return "forever"
    return duration(seconds)


def lease_row(lease: Lease) -> dict[str, Any]:
    """A lease or reservation as listings show it (typed: numbers stay numbers)."""
    from ipam import LeaseKind
    from ipam.ranges import FOREVER

    sticky = lease.kind is LeaseKind.STICKY
    key = lease.key if sticky else None
    retained = sticky and lease.state.value == "retained" and lease.expires_at > 0
    namespace = key.namespace if key else (lease.pod.partition("/")[0] if "/" in lease.pod
                                           else None)
    return {
        "owner": lease.owner, "kind": lease.kind.value, "pool": lease.pool,
        "address": str(lease.address) if lease.address else None,
        "addresses": [str(a.address) for a in lease.addresses],
        "node": lease.node or None, "epoch": lease.epoch,
        "state": lease.state.value if sticky else None,
        "namespace": namespace, "statefulset": key.statefulset if key else None,
        "ordinal": key.ordinal if key else None,
        "pod": lease.pod or None, "holder": lease.holder or None,
        "retainSeconds": (None if lease.retain == FOREVER else lease.retain) if sticky
        else None,
        "retain": _retain(None if lease.retain == FOREVER else lease.retain) if sticky
        else None,
        "nodeFailure": lease.policy.value if sticky else None,
        "expiresAt": timestamp(lease.expires_at) if retained else None,
        "expiresIn": round(lease.expires_at - time.time(), 3) if retained else None,
    }


SHOW_COLUMNS = (
    Column("owner"), Column("pool"), Column("kind"),
    Column("address", of=lambda r: r["addresses"] or r["address"]), Column("node"),
    Column("epoch"), Column("state"), Column("retain"),
    Column("expires", of=lambda r: r["expiresIn"], show=lambda left: _expiry(left)),
    Column("pod"),
    Column("holder", wide=True), Column("nodeFailure", title="node-failure", wide=True),
    Column("expiresAt", title="expires-at", wide=True),
)


def _expiry(left: float | None) -> str:
    if left is None:
        return "-"
    return f"in {duration(left)}" if left >= 0 else f"{duration(-left)} ago"


def _wanted(row: dict[str, Any], args: argparse.Namespace) -> bool:
    if args.node and row["node"] != args.node:
        return False
    if args.namespace and row["namespace"] != args.namespace:
        return False
    return not (args.statefulset and row["statefulset"] != args.statefulset)


async def show(args: argparse.Namespace) -> int:
    ipam = await open_store(args)
    try:
        names = [args.pool] if args.pool else [s.name for s in await ipam.pool_specs()]
        rows = [row for name in names for row in map(lease_row, await ipam.all_records(name))
                if _wanted(row, args)]
    finally:
        await ipam.aclose()
    rows.sort(key=lambda r: (r["pool"], r["kind"], r["owner"]))
    emit(rows, SHOW_COLUMNS, args.output, name=lambda r: str(r["owner"]),
         empty="no leases or reservations" + (" match" if _filtered(args) else ""))
    return 0


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.pool or args.node or args.namespace or args.statefulset)


BLOCK_COLUMNS = (Column("pool"), Column("index"), Column("cidr"), Column("node"),
                 Column("used"))


async def blocks(args: argparse.Namespace) -> int:
    ipam = await open_store(args)
    try:
        names = [args.pool] if args.pool else [s.name for s in await ipam.pool_specs()]
        rows = [b.model_dump(mode="json") for n in names for b in await ipam.blocks(n)]
    finally:
        await ipam.aclose()
    emit(rows, BLOCK_COLUMNS, args.output, name=lambda r: f"block/{r['pool']}/{r['cidr']}",
         empty="no blocks claimed")
    return 0


HISTORY_COLUMNS = (Column("when"), Column("op"), Column("owner"), Column("node"),
                   Column("epoch"), Column("actor"),
                   Column("ago", of=lambda r: r["at"], show=lambda at: relative(at),
                          wide=True))


async def history(args: argparse.Namespace) -> int:
    ipam = await open_store(args)
    try:
        entries = await ipam.history(args.address)
    finally:
        await ipam.aclose()
    rows = [e.model_dump() | {"when": timestamp(e.at)} for e in entries]
    emit(rows, HISTORY_COLUMNS, args.output, name=lambda r: f"{r['op']}/{r['owner']}",
         empty=f"no history for {args.address}")
    return 0


async def release(args: argparse.Namespace) -> int:
    """A reservation no pod holds is released. One a pod holds is refused, naming the
    pod; ``--force`` quarantines it instead: the address stays taken until the pod is
    gone (the scheduler's GC then frees it), so no second pod can get it meanwhile."""
    from ipam import ReservationInUse, ReservationKey, ReservationNotFound

    key = ReservationKey.parse(args.reservation)
    ipam = await open_store(args)
    try:
        try:
            res = await ipam.release_reservation(key, pool=args.pool, force=args.force)
        except ReservationNotFound:
            res = None
        except ReservationInUse as e:
            # bound: say how to force it; already quarantined: nothing more to do
            held = await ipam.reservation(key)
            hint = "" if held is not None and held.state.value == "quarantined" else (
                f" (to quarantine it: stickyip ipam release {key} --force)")
            print(f"error: {e}{hint}", file=sys.stderr)
            return 1
    finally:
        await ipam.aclose()
    if res is None:
        where = f" in pool {args.pool!r}" if args.pool else ""
        if args.ignore_not_found:
            print(f"reservation {key} not found{where} (nothing to release)")
            return 0
        print(f"error: reservation {key} not found{where} (--ignore-not-found makes this "
              "exit 0)", file=sys.stderr)
        return 1
    if res.state.value == "quarantined":
        who = f"pod {res.pod} (UID {res.holder})" if res.pod else f"pod UID {res.holder}"
        print(f"reservation {key} quarantined ({_addresses(res)}): {who} still holds it; the "
              "address is handed to no one until that pod is gone")
        return 0
    print(f"reservation {key} released ({_addresses(res)})")
    return 0


def _addresses(lease: Lease) -> str:
    found = [str(a.address) for a in lease.addresses] or (
        [str(lease.address)] if lease.address else [])
    return ", ".join(found) or "no address"


CHECK_COLUMNS = (Column("pool"), Column("kind"), Column("address"), Column("detail"),
                 Column("repaired"), Column("owner", wide=True), Column("key", wide=True))


async def check(args: argparse.Namespace) -> int:
    from ipam import check_and_repair

    ipam = await open_store(args)
    try:
        findings = await check_and_repair(ipam, repair=args.repair)
        cluster = await _against_cluster(ipam) if args.against_cluster else None
    finally:
        await ipam.aclose()
    # addresses (or block CIDRs, or store keys), never offsets into a bitmap
    rows = [f.model_dump(exclude={"offset", "block"}) for f in findings]
    failed = any(not f.repaired for f in findings) or bool(cluster)
    if cluster is not None and args.output in ("json", "yaml", "name"):
        # one document: the store's findings (``kind``), then the cluster's (``verdict``)
        emit([*rows, *cluster], (), args.output, name=lambda r: (
            f"{r['verdict']}/{r['address']}" if "verdict" in r else _check_name(r)))
        return 1 if failed else 0
    emit(rows, CHECK_COLUMNS, args.output, name=_check_name, empty="no inconsistencies found")
    if cluster is not None:
        emit(cluster, CLUSTER_COLUMNS, args.output,
             empty="every address the running pods use is known to the IPAM")
    return 1 if failed else 0


def _check_name(row: dict[str, Any]) -> str:
    return f"{row['kind']}/{row['address'] or row['key'] or row['pool']}"


#: ``ipam check --against-cluster``: the running pods compared with the IPAM.
CLUSTER_COLUMNS = (Column("verdict"), Column("address"), Column("pod"), Column("node"),
                   Column("owner"), Column("detail", wide=True))


async def _against_cluster(ipam: RedisIpam) -> list[dict[str, Any]]:
    """Addresses running pods use that the IPAM does not know ("unknown", "missing") or
    gives to another owner ("conflict"); read-only (the scheduler's reconciliation
    restores and quarantines)."""
    from plumbing.kube.client import KubeSettings, api_client
    from plumbing.kube.rest import RestClient
    from scheduler.cluster_check import check_cluster, finding_row

    found = await check_cluster(ipam, RestClient(api_client(KubeSettings())))
    return [finding_row(f) for f in found]
