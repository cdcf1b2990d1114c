"""Which IPAM store a command uses, said out loud.

A server (webhook, scheduler, agent) needs the store every replica and node shares:
without ``--redis-url`` or ``STICKYIP_REDIS_URL`` it refuses to start, unless
``--embedded`` asks for a private embedded Redis (two webhook replicas on private
stores would hand out the same addresses). Operator commands fall back to the
embedded store of this machine and say so on stderr, with its path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plumbing.redact import redact_url

if TYPE_CHECKING:
    from ipam import RedisIpam
    from ipam.config import IpamSettings

log = logging.getLogger("stickyip.store")

NO_STORE = ("no IPAM store given: set STICKYIP_REDIS_URL or --redis-url to the Redis that "
            "every stickyip component shares; --embedded runs a private embedded Redis for "
            "this process alone (a trial only: replicas on private stores hand out the same "
            "addresses twice)")


class StoreChoiceError(Exception):
    """The flags and settings do not name a store this command may use."""


@dataclass(frozen=True, slots=True)
class StoreChoice:
    #: Redis URL; empty for the embedded store.
    url: str
    #: The STICKYIP_* store settings (replicas to confirm writes, call deadline).
    settings: IpamSettings
    #: Data file of the embedded store (only when ``url`` is empty).
    embedded_path: str = ""

    @property
    def shown(self) -> str:
        """Where the store is, as it may be printed or logged (no password)."""
        return redact_url(self.url) if self.url else f"embedded Redis at {self.embedded_path}"


def choose(args: argparse.Namespace, *, server: bool) -> StoreChoice:
    from ipam.config import IpamSettings

    settings = IpamSettings()
    if args.embedded and args.redis_url:
        raise StoreChoiceError("--embedded and --redis-url name two different stores: "
                               "give one of them")
    url = "" if args.embedded else (
        args.redis_url if args.redis_url is not None else settings.redis_url)
    if url:
        return StoreChoice(url=url, settings=settings)
    if server and not args.embedded:
        raise StoreChoiceError(NO_STORE)
    from ipam.connection import default_embedded_path

    return StoreChoice(url="", settings=settings,
                       embedded_path=settings.embedded_path or default_embedded_path())


def choose_for_server(args: argparse.Namespace) -> StoreChoice:
    """The store of a server command, put back into ``args`` (``redis_url``,
    ``embedded_path``, ``ipam_settings``) for the component's entry point, and logged."""
    choice = choose(args, server=True)
    args.redis_url, args.embedded_path = choice.url, choice.embedded_path or None
    args.ipam_settings = choice.settings
    if choice.url:
        log.info("IPAM store", extra={"store": choice.shown})
    else:
        log.warning("IPAM store is an embedded Redis private to this process (--embedded): "
                    "never run more than one replica on it", extra={"store": choice.shown})
    return choice


async def open_store(args: argparse.Namespace, *, actor: str = "cli") -> RedisIpam:
    """The store of an operator command (the embedded one is announced on stderr)."""
    from ipam import open_ipam

    choice = choose(args, server=False)
    if not choice.url:
        why = "--embedded" if args.embedded else "no --redis-url or STICKYIP_REDIS_URL"
        print(f"stickyip: using the embedded store at {choice.embedded_path} ({why})",
              file=sys.stderr)
    return await open_ipam(choice.url or None, actor=actor,
                           embedded_path=choice.embedded_path or None, settings=choice.settings)
