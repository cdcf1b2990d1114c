"""The ``stickyip`` command: operator tools for pools and reservations, and the
entry points of every component (webhook, scheduler, agent)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

#: Components register their own sub-commands; a component's module is imported only
#: when its command runs, so operator commands start fast.
COMPONENTS = (
    ("webhook", "webhooks.cli", "run the admission webhook server"),
    ("scheduler", "scheduler.cli", "run the sticky scheduler (or its extender)"),
    ("agent", "datapath.cli", "run the node agent"),
)
_GLOBAL_WITH_VALUE = ("--redis-url", "--log-level")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _command_word(argv: Sequence[str]) -> str | None:
    skip = False
    for tok in argv:
        if skip:
            skip = False
        elif tok in _GLOBAL_WITH_VALUE:
            skip = True
        elif not tok.startswith("-"):
            return tok
    return None

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stickyip",
        description="Fixed IPs for Kubernetes StatefulSet pods on an L3-routed eBPF datapath.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--redis-url", default=None,
                   help="Redis URL (default: $STICKYIP_REDIS_URL; empty: embedded Redis)")
    p.add_argument("--log-level", default="warning", type=str.lower, choices=LOG_LEVELS,
                   help="log level: %(choices)s (default: warning)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pool = sub.add_parser("pool", help="manage IP pools").add_subparsers(
        dest="pool_command", required=True, metavar="ACTION")
    a = pool.add_parser("apply", help="create or update pools from a YAML file")
    a.add_argument("-f", "--file", required=True, help="pools YAML ('-' for stdin)")
    a.set_defaults(handler=_pool_apply)
    ls = pool.add_parser("list", help="list pools and their use")
    _output(ls)
    ls.set_defaults(handler=_pool_list)
    d = pool.add_parser("delete", help="delete an empty pool")
    d.add_argument("name")
    d.set_defaults(handler=_pool_delete)

    ipam = sub.add_parser("ipam", help="inspect and repair leases and reservations"
                          ).add_subparsers(dest="ipam_command", required=True, metavar="ACTION")
    s = ipam.add_parser("show", help="list leases and reservations")
    s.add_argument("--pool", help="only this pool")
    s.add_argument("--node", help="only addresses homed on this node")
    _output(s)
    s.set_defaults(handler=_ipam_show)
    b = ipam.add_parser("blocks", help="list node blocks")
    b.add_argument("--pool", help="only this pool")
    _output(b)
    b.set_defaults(handler=_ipam_blocks)
    h = ipam.add_parser("history", help="audit trail of one address")
    h.add_argument("address")
    _output(h)
    h.set_defaults(handler=_ipam_history)
    r = ipam.add_parser("release", help="release the reservation of NS/STS/ORDINAL")
    r.add_argument("reservation", metavar="NS/STS/ORDINAL")
    r.add_argument("--pool", help="the pool (default: search every pool)")
    r.set_defaults(handler=_ipam_release)
    c = ipam.add_parser("check", help="find (and with --repair fix) inconsistencies")
    c.add_argument("--repair", action="store_true",
                   help="fix each finding atomically, without stopping allocation")
    _output(c)
    c.set_defaults(handler=_ipam_check)

    command = _command_word(sys.argv[1:] if argv is None else argv)
    for name, module, about in COMPONENTS:
        register = None
        if command == name:
            try:
                register = getattr(importlib.import_module(module), "add_parser", None)
            except ImportError as e:
                sub.add_parser(name, help=about).set_defaults(handler=_unavailable(name, e))
                continue
        if register is not None:
            register(sub, name)
        else:
            sub.add_parser(name, help=about, add_help=False)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stickyip")
    except PackageNotFoundError:
        return "(not installed)"


def _unavailable(name: str, err: Exception) -> Handler:
    async def run(args: argparse.Namespace) -> int:
        print(f"error: the {name} component cannot start here: {err}", file=sys.stderr)
        return 1

    return run


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="output format")


async def _open(args: argparse.Namespace) -> Any:
    from ipam import open_ipam
    from ipam.config import IpamSettings

    settings = IpamSettings()
    url = args.redis_url if args.redis_url is not None else settings.redis_url
    return await open_ipam(url or None, actor="cli", embedded_path=settings.embedded_path or None)


def load_pool_file(text: str) -> list[Any]:
    """Parse a pools YAML: one pool, a list of pools, ``{pools: [...]}``, several
    documents, or a ConfigMap whose ``data`` holds such a document."""
    import yaml

    from ipam import InvalidPool, pool_from_dict
    from ipam.models import first_overlap

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise InvalidPool(f"pools file is not valid YAML: {str(e).splitlines()[0]}") from e
    items: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            for value in (doc.get("data") or {}).values():
                items.extend(load_pool_file(value))
            continue
        if isinstance(doc, dict) and "pools" in doc:
            doc = doc["pools"]
        if isinstance(doc, list):
            items.extend(pool_from_dict(x) for x in doc)
        else:
            items.append(pool_from_dict(doc))
    if not items:
        raise InvalidPool("pools file holds no pool")
    names = [s.name for s in items]
    for i, spec in enumerate(items):
        if names.count(spec.name) > 1:
            raise InvalidPool(f"pool {spec.name!r} is defined twice in the file")
        other = first_overlap(spec, items[i + 1:])
        if other is not None:
            raise InvalidPool(f"pools {spec.name!r} and {other.name!r} overlap in the file")
    return items


async def _pool_apply(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else _read(args.file)
    specs = load_pool_file(text)
    ipam = await _open(args)
    try:
        existing = {s.name: s for s in await ipam.pool_specs()}
        from ipam import InvalidPool
        from ipam.models import first_overlap

        for spec in specs:  # check every pool before writing any
            other = first_overlap(spec, existing.values())
            if other is not None:
                raise InvalidPool(f"pool {spec.name!r} ({spec.cidr}) overlaps existing pool "
                                  f"{other.name!r} ({other.cidr}); choose a disjoint CIDR")
        for spec in specs:
            held = await ipam.apply_pool(spec)
            verb = "configured" if spec.name in existing else "created"
            note = f" ({held} newly excluded addresses still held)" if held else ""
            print(f"pool/{spec.name} {verb}{note}")
    finally:
        await ipam.aclose()
    return 0


def _read(path: str) -> str:
    from ipam import InvalidPool

    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InvalidPool(f"cannot read pools file {path!r}: {e.strerror}") from e


async def _pool_list(args: argparse.Namespace) -> int:
    ipam = await _open(args)
    try:
        rows = []
        for spec in await ipam.pool_specs():
            st = await ipam.pool_status(spec.name)
            rows.append({"name": spec.name, "cidr": spec.cidr, "blockSize": spec.block_size,
                         "nodeSelector": spec.node_selector, "size": st.size,
                         "used": st.used, "free": st.free, "excluded": st.excluded,
                         "blocks": f"{st.blocks_claimed}/{st.blocks_total}"})
    finally:
        await ipam.aclose()
    from plumbing.output import emit

    emit(rows, ["name", "cidr", "blockSize", "used", "free", "blocks", "nodeSelector"],
         args.output, empty="no pools; create one with 'stickyip pool apply -f pools.yaml'")
    return 0


async def _pool_delete(args: argparse.Namespace) -> int:
    ipam = await _open(args)
    try:
        await ipam.delete_pool(args.name)
    finally:
        await ipam.aclose()
    print(f"pool/{args.name} deleted")
    return 0


async def _ipam_show(args: argparse.Namespace) -> int:
    ipam = await _open(args)
    try:
        names = [args.pool] if args.pool else [s.name for s in await ipam.pool_specs()]
        rows = []
        for name in names:
            for lease in await ipam.all_records(name):
                if args.node and lease.node != args.node:
                    continue
                rows.append(lease.summary())
    finally:
        await ipam.aclose()
    rows.sort(key=lambda r: (r["pool"], r["kind"], r["owner"]))
    from plumbing.output import emit

    emit(rows, ["owner", "pool", "kind", "address", "node", "epoch", "state", "retain", "pod"],
         args.output)
    return 0


async def _ipam_blocks(args: argparse.Namespace) -> int:
    ipam = await _open(args)
    try:
        names = [args.pool] if args.pool else [s.name for s in await ipam.pool_specs()]
        rows = [b.model_dump(mode="json") for n in names for b in await ipam.blocks(n)]
    finally:
        await ipam.aclose()
    from plumbing.output import emit

    emit(rows, ["pool", "index", "cidr", "node", "used"], args.output)
    return 0


async def _ipam_history(args: argparse.Namespace) -> int:
    ipam = await _open(args)
    try:
        entries = await ipam.history(args.address)
    finally:
        await ipam.aclose()
    import time

    rows = [e.model_dump() | {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at))}
            for e in entries]
    from plumbing.output import emit

    emit(rows, ["when", "op", "owner", "node", "epoch", "actor"], args.output,
         empty=f"no history for {args.address}")
    return 0


async def _ipam_release(args: argparse.Namespace) -> int:
    from ipam import ReservationKey, ReservationNotFound

    key = ReservationKey.parse(args.reservation)
    ipam = await _open(args)
    try:
        res = await ipam.release_reservation(key, pool=args.pool)
    except ReservationNotFound:
        res = None
    finally:
        await ipam.aclose()
    if res is None:
        print(f"reservation {key} not found (nothing to release)")
    else:
        print(f"reservation {key} released ({res.address or 'no address'})")
    return 0


async def _ipam_check(args: argparse.Namespace) -> int:
    from ipam import check_and_repair

    ipam = await _open(args)
    try:
        findings = await check_and_repair(ipam, repair=args.repair)
    finally:
        await ipam.aclose()
    from plumbing.output import emit

    rows = [f.model_dump() for f in findings]
    emit(rows, ["pool", "kind", "detail", "repaired"], args.output,
         empty="no inconsistencies found")
    return 1 if any(not f.repaired for f in findings) else 0


def main(argv: Sequence[str] | None = None) -> None:
    from plumbing import logs

    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    handler: Handler = args.handler
    from pydantic import ValidationError

    from ipam import IpamError
    from plumbing.kube.errors import KubeError

    try:
        code: int = asyncio.run(handler(args))
    except (IpamError, KubeError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except ValidationError as e:
        print(f"error: {_invalid_setting(e)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _invalid_setting(e: ValidationError) -> str:
    """One line for a settings ValidationError (a flag or a STICKYIP_* variable); the
    value is shown without credentials (a URL's user:password, a token=...)."""
    from plumbing.kube.errors import redact

    errors = e.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or e.title
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return redact(f"invalid {where} ({e.title}): {first['msg']}, got "
                  f"{first.get('input')!r}{more}")


if __name__ == "__main__":
    main()
