"""The ``stickyip`` command: operator tools for pools and reservations, and the
entry points of every component (webhook, scheduler, agent).

Conventions are kubectl's: global flags (``--redis-url``, ``--embedded``,
``--log-level``) go before or after the sub-command; listings take
``-o table|wide|json|yaml|name``; what goes wrong is one ``error:`` line on stderr
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from stickyip.poolfile import load_pool_file

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["COMPONENTS", "build_parser", "load_pool_file", "main"]

log = logging.getLogger("stickyip.cli")

#: Components register their own sub-commands; a component's module is imported only
#: when its command runs, so operator commands start fast.
COMPONENTS = (
    ("webhook", "webhooks.cli", "run the admission webhook server"),
    ("scheduler", "scheduler.cli", "run the sticky scheduler (or its extender)"),
    ("agent", "datapath.cli", "run the node agent"),
    ("feed", "datapath.feedcli", "run the routing feed (fan-out tier for the agents)"),
)
_GLOBAL_WITH_VALUE = ("--redis-url", "--log-level")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


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


def _add_globals(p: argparse.ArgumentParser, *, top: bool) -> None:
    """The global flags. On the top parser they carry the defaults; every sub-command
    accepts them too (defaults suppressed, so a flag given before the sub-command is
    not overwritten), as kubectl's global flags."""
    default: Any = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    g = p.add_argument_group("global options")
    g.add_argument("--redis-url", default=default(None), metavar="URL",
                   help="the IPAM store: redis://, rediss://, unix:// or redis+sentinel:// "
                   "(default: $STICKYIP_REDIS_URL)")
    g.add_argument("--embedded", action="store_true", default=default(False),
                   help="use an embedded Redis private to this machine (a trial store; "
                   "servers refuse to start without a store URL unless given this)")
    g.add_argument("--log-level", default=default("warning"), type=str.lower,
                   choices=LOG_LEVELS, help="log level: %(choices)s (default: warning)")


def _subparsers(p: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) not in seen:
                    seen.add(id(child))
                    yield name, child


def walk(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every sub-command parser below ``p`` (depth first)."""
    for _, child in _subparsers(p):
        yield child
        yield from walk(child)


def build_parser(argv: Sequence[str] | None = None, *,
                 all_components: bool = False) -> argparse.ArgumentParser:
    """The command line. A component's flags are registered only when ``argv`` runs it
    (or with ``all_components``, for shell completion)."""
    from stickyip import completion, pools, reservations

    p = argparse.ArgumentParser(
        prog="stickyip",
        description="Fixed IPs for Kubernetes StatefulSet pods on an L3-routed eBPF datapath.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_globals(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pools.add_parsers(sub)
    reservations.add_parsers(sub)
    completion.add_parser(sub)

    command = _command_word(sys.argv[1:] if argv is None else argv)
    for name, module, about in COMPONENTS:
        register = None
        if command == name or all_components:
            try:
                register = getattr(importlib.import_module(module), "add_parser", None)
            except ImportError as e:
                sub.add_parser(name, help=about).set_defaults(handler=_unavailable(name, e))
                continue
        if register is not None:
            register(sub, name)
        else:
            sub.add_parser(name, help=about, add_help=False)
    for child in walk(p):
        _add_globals(child, top=False)
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


def main(argv: Sequence[str] | None = None) -> None:
    from plumbing import logs

    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    sys.exit(run(args))


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; every failure becomes one ``error:`` line."""
    from pydantic import ValidationError

    from ipam import IpamError
    from plumbing.kube.errors import KubeError
    from plumbing.redact import scrub
    from stickyip.store import StoreChoiceError, choose_for_server

    handler: Handler = args.handler
    try:
        if args.command in {name for name, _, _ in COMPONENTS}:
            choose_for_server(args)
        return asyncio.run(handler(args))
    except (IpamError, KubeError, StoreChoiceError) as e:
        print(f"error: {scrub(str(e))}", file=sys.stderr)
        return 2 if isinstance(e, StoreChoiceError) else 1
    except ValidationError as e:
        print(f"error: {_invalid_setting(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # a port taken, a file that cannot be written, ...
        log.debug("failed", exc_info=True)
        print(f"error: {scrub(str(e))}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: say so in one line; --log-level debug has the trace
        log.debug("failed", exc_info=True)
        print(f"error: unexpected {type(e).__name__}: {scrub(str(e))} (run with "
              "--log-level debug for the traceback)", file=sys.stderr)
        return 1


def _invalid_setting(e: ValidationError) -> str:
    """One line for a settings ValidationError (a flag or a STICKYIP_* variable); the
    value is shown without credentials (a URL's user:password, a token=...)."""
    from plumbing.redact import one_line

    errors = e.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or e.title
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return one_line(f"invalid {where} ({e.title}): {first['msg']}, got "
                    f"{first.get('input')!r}{more}")


if __name__ == "__main__":
    main()
