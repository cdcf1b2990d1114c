"""``stickyip feed``: the routing feed's sub-command (registered by ``stickyip.cli``):
one replica of the fan-out tier between the store and the node agents."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from plumbing.signals import stop_event


class FeedSettings(BaseSettings):
    """Settings of one feed replica, read from ``STICKYIP_FEED_*`` (flags override)."""

    model_config = SettingsConfigDict(env_prefix="STICKYIP_FEED_", extra="ignore")

    # listen_*: Kubernetes gives every pod STICKYIP_FEED_PORT=tcp://... for the
    # stickyip-feed Service, so no setting may be called plain 'port' or 'host'.
    listen_host: str = Field(default="0.0.0.0", description="address agents connect to")
    listen_port: int = Field(default=7470, ge=-1, le=65535,
                             description="port agents connect to (-1: no TCP, see "
                             "listen_unix)")
    listen_unix: str = Field(default="", description="also listen on this unix socket "
                             "(agents name it 'unix:PATH')")
    metrics_host: str = Field(default="0.0.0.0", description="address of /metrics, /healthz")
    metrics_port: int = Field(default=9403, ge=0, le=65535,
                              description="port of /metrics and /healthz (0: off)")
    history: int = Field(default=10_000, ge=1, description="change batches kept for agents "
                         "that reconnect (older positions get a snapshot)")
    max_backlog_bytes: int = Field(default=32 << 20, ge=1 << 16, description="bytes queued "
                                   "for one agent before it is disconnected as too slow")
    ping_interval: float = Field(default=20.0, gt=0, description="seconds between pings "
                                 "on an idle connection (agents reconnect after 90 s of "
                                 "silence)")


def add_parser(sub: Any, name: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help="run the routing feed: follows the store for many node agents")
    p.add_argument("--port", type=int, dest="listen_port",
                   help="port agents connect to ($STICKYIP_FEED_LISTEN_PORT; -1: none)")
    p.add_argument("--host", dest="listen_host", help="address agents connect to")
    p.add_argument("--unix", dest="listen_unix", metavar="PATH",
                   help="also listen on this unix socket")
    p.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz (0: off)")
    p.add_argument("--history", type=int, help="change batches kept for reconnecting agents")
    p.set_defaults(handler=run)


def settings_from(args: argparse.Namespace) -> FeedSettings:
    overrides = {k: v for k, v in vars(args).items()
                 if k in FeedSettings.model_fields and v is not None}
    return FeedSettings(**overrides)


async def run(args: argparse.Namespace) -> int:
    from datapath.feed import FeedServer
    from datapath.peers import StorePeers
    from ipam import open_ipam
    from ipam.follow import StoreSource

    settings = settings_from(args)
    # The store the stickyip command chose (never a private one unless --embedded).
    ipam = await open_ipam(args.redis_url or None, actor="feed",
                           embedded_path=args.embedded_path, settings=args.ipam_settings)
    server = FeedServer(StoreSource(ipam, own=True), peers=StorePeers(ipam.redis),
                        host=settings.listen_host, port=settings.listen_port,
                        unix_path=settings.listen_unix,
                        status_host=settings.metrics_host, status_port=settings.metrics_port,
                        history=settings.history, max_backlog=settings.max_backlog_bytes,
                        ping_interval=settings.ping_interval)
    stop = stop_event()
    await server.start()
    try:
        print(f"feed ready port={server.port}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
    return 0
