"""``stickyip scheduler``: run the sticky scheduler (or its extender endpoints)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from plumbing.signals import stop_event

log = logging.getLogger("stickyip.scheduler")


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="run the sticky scheduler, its failover and GC controllers, "
                       "or (--extender-port) the kube-scheduler extender endpoints")
    p.add_argument("--name", default=None,
                   help="spec.schedulerName to serve (default: stickyip-scheduler)")
    p.add_argument("--extender-port", type=int, default=None,
                   help="serve POST /filter, /prioritize and /bind on this port instead of "
                   "scheduling (for clusters that keep kube-scheduler)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this port")
    p.set_defaults(handler=run)


def settings_from(args: argparse.Namespace) -> Any:
    from scheduler.config import SchedulerSettings

    overrides: dict[str, Any] = {}
    if args.name:
        overrides["name"] = args.name
    if args.extender_port is not None:
        overrides["extender_port"] = args.extender_port
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    return SchedulerSettings(**overrides)


async def run(args: argparse.Namespace) -> int:
    from ipam import open_ipam
    from plumbing.kube.client import KubeSettings, api_client
    from scheduler.app import SchedulerApp
    from scheduler.kubeapi import KubeApi

    settings = settings_from(args)
    # The API first: missing credentials or an API server that does not answer end the
    # start with one line (plumbing.kube.errors, printed by the stickyip command).
    kube_settings = KubeSettings()
    kube = KubeApi(api_client(kube_settings), timeout=kube_settings.kube_qps_timeout)
    version = await asyncio.to_thread(kube.rest.wait_ready, kube_settings.kube_startup_timeout)
    log.info("Kubernetes API server answers", extra={"kube_host": kube.rest.host,
                                                     "git_version": version.get("gitVersion")})
    # The store the stickyip command chose (never a private one unless --embedded).
    ipam = await open_ipam(args.redis_url or None, actor=f"scheduler/{settings.identity}",
                           embedded_path=args.embedded_path, settings=args.ipam_settings)
    app = SchedulerApp(settings, kube, ipam)
    # Bindings, events and Lease renewals are blocking client calls run in threads.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=32, thread_name_prefix="kube"))
    stop = stop_event()
    await app.start()
    with contextlib.suppress(TimeoutError):
        await app.wait_synced(timeout=120)
    # The caches now hold every node and pod: keep them out of the cyclic collector's
    # sight so its full passes stay short (they showed as 50 ms p99 spikes).
    gc.freeze()
    log.info("scheduler started", extra={"scheduler_name": settings.name,
                                         "extender": app.extender_url or None})
    try:
        await stop.wait()
    finally:
        await app.stop()
        await ipam.aclose()
    return 0
