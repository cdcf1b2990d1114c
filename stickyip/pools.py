"""``stickyip pool``: apply, list and delete pools."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from plumbing.output import FORMATS, Column, emit
from stickyip.poolfile import load_pool_file
from stickyip.store import open_store


def add_parsers(sub: Any) -> None:
    pool = sub.add_parser("pool", help="manage IP pools").add_subparsers(
        dest="pool_command", required=True, metavar="ACTION")
    a = pool.add_parser("apply", help="create or update pools from a YAML file (all of it "
                        "or nothing)")
    a.add_argument("-f", "--file", required=True, help="pools YAML ('-' for stdin)")
    a.add_argument("--dry-run", action="store_true",
                   help="check the file against the store and say what would change; "
                   "write nothing")
    a.set_defaults(handler=apply)
    ls = pool.add_parser("list", help="list pools and their use")
    output_flag(ls)
    ls.set_defaults(handler=list_pools)
    d = pool.add_parser("delete", help="delete a pool nothing draws on (else say what does)")
    d.add_argument("name")
    d.add_argument("--dry-run", action="store_true", help="check only; delete nothing")
    d.set_defaults(handler=delete)


def output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, default="table",
                   help="output format: %(choices)s (default: table)")


def read_file(path: str) -> tuple[str, str]:
    """The text of a pools file and the name errors call it by."""
    from ipam import InvalidPool

    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as e:
        raise InvalidPool(f"cannot read pools file {path!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InvalidPool(f"pools file {path!r} is not UTF-8 text: {e.reason} at byte "
                          f"{e.start}") from e


async def apply(args: argparse.Namespace) -> int:
    """The whole file is checked, then written in one atomic step (or, with
    ``--dry-run``, checked against the store and reported)."""
    text, source = read_file(args.file)
    specs = load_pool_file(text, source=source)
    ipam = await open_store(args)
    try:
        applied = await ipam.apply_pools(specs, dry_run=args.dry_run)
    finally:
        await ipam.aclose()
    suffix = " (dry run)" if args.dry_run else ""
    for a in applied:
        note = f" ({a.held} newly excluded addresses still held)" if a.held else ""
        print(f"pool/{a.name} {a.status}{note}{suffix}")
    return 0


POOL_COLUMNS = (
    Column("name"), Column("cidr"), Column("blockSize"), Column("used"), Column("free"),
    Column("blocks", of=lambda r: f"{r['blocksClaimed']}/{r['blocksTotal']}"),
    Column("nodeSelector"),
    Column("size", wide=True), Column("excluded", wide=True), Column("exclude", wide=True),
)


async def list_pools(args: argparse.Namespace) -> int:
    ipam = await open_store(args)
    try:
        rows = []
        for spec in await ipam.pool_specs():
            st = await ipam.pool_status(spec.name)
            rows.append({"name": spec.name, "cidr": spec.cidr, "blockSize": spec.block_size,
                         "nodeSelector": spec.node_selector, "exclude": list(spec.exclude),
                         "size": st.size, "used": st.used, "free": st.free,
                         "excluded": st.excluded, "blocksClaimed": st.blocks_claimed,
                         "blocksTotal": st.blocks_total})
    finally:
        await ipam.aclose()
    emit(rows, POOL_COLUMNS, args.output,
         name=lambda r: f"pool/{r['name']}",
         empty="no pools; create one with 'stickyip pool apply -f pools.yaml'")
    return 0


async def delete(args: argparse.Namespace) -> int:
    """Refused, naming the leases and reservations that draw on the pool, while any do
    (PoolInUse, printed as the error)."""
    ipam = await open_store(args)
    try:
        await ipam.delete_pool(args.name, dry_run=args.dry_run)
    finally:
        await ipam.aclose()
    print(f"pool/{args.name} deleted" + (" (dry run)" if args.dry_run else ""))
    return 0
