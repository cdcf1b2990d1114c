"""``stickyip agent``: the node agent's sub-command (registered by ``stickyip.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
from typing import Any

from datapath.config import AgentSettings

log = logging.getLogger("stickyip.datapath")


def add_parser(sub: Any, name: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help="run the node agent (CNI backend, routes, eBPF datapath)")
    p.add_argument("--node", help="this node's name ($STICKYIP_AGENT_NODE)")
    p.add_argument("--node-address", help="IPv4 address other nodes route to")
    p.add_argument("--node-address6", help="IPv6 address other nodes route to")
    p.add_argument("--routing", choices=("direct", "bgp"), help="inter-node routing mode")
    p.add_argument("--socket", help="CNI unix socket path")
    p.add_argument("--pin-root", help="bpffs directory of pinned maps")
    p.add_argument("--state-dir", help="directory of endpoint records")
    p.add_argument("--delete-queue-dir", help="the CNI deletion queue replayed at start")
    p.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz (0: off)")
    p.add_argument("--default-pool",
                   help="pool of ephemeral addresses ('V4POOL,V6POOL': dual-stack)")
    p.add_argument("--bird-config", help="generated BIRD config path (bgp)")
    p.add_argument("--bird-socket", help="BIRD control socket (bgp)")
    p.add_argument("--sync-interval", type=float,
                   help="at most one route update per this many seconds")
    p.add_argument("--feed", help="routing feed to follow (HOST:PORT or unix:PATH; "
                   "default: the store itself)")
    p.add_argument("--cni-bin-dir", help="install the CNI plugin into this directory")
    p.add_argument("--hook", action="append", dest="hooks", metavar="MODULE:FACTORY",
                   help="endpoint hook factory (repeatable)")
    p.set_defaults(handler=run)


def settings_from(args: argparse.Namespace) -> AgentSettings:
    overrides = {k: v for k, v in vars(args).items()
                 if k in AgentSettings.model_fields and v is not None}
    return AgentSettings(**overrides)


def load_hooks(settings: AgentSettings) -> list[Any]:
    hooks = []
    for spec in settings.hooks:
        module, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module), attr or "hook")
        hooks.append(factory(settings))
    return hooks


async def run(args: argparse.Namespace) -> int:
    from datapath.agent import Agent
    from ipam import open_ipam

    settings = settings_from(args)
    # The store the stickyip command chose (never a private one unless --embedded).
    ipam = await open_ipam(args.redis_url or None, actor=f"agent/{settings.node}",
                           embedded_path=args.embedded_path, settings=args.ipam_settings)
    kube_pods = None
    events = None
    if settings.kube:
        from datapath.events import KubeEvents
        from datapath.podinfo import kube_pod_lookup
        from plumbing.kube.client import api_client
        from plumbing.kube.rest import RestClient

        kube_pods = kube_pod_lookup(ipam)
        events = KubeEvents(RestClient(api_client()), node=settings.node)
    agent = Agent(settings, ipam, hooks=load_hooks(settings), kube_pods=kube_pods,
                  events=events)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(stop.set)

    # Plain handlers, not loop.add_signal_handler: pyroute2 forks helper processes to
    # open sockets in pod netns, and a child inheriting asyncio's signal wakeup fd
    # would report its own SIGTERM to this loop as ours.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        await agent.start()
        print(f"agent ready node={settings.node} socket={settings.socket}", flush=True)
        await stop.wait()
    finally:
        await agent.stop()
        await ipam.aclose()
    return 0
