"""Command line of the demo: ``python -m demo [--no-datapath] [--fast]`` (``make demo``;
the demo is not product code, so the installed ``stickyip`` command does not carry it).
Exit status 0 when every step kept its promises, 1 otherwise."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from demo.config import DemoSettings
from demo.errors import DemoError
from demo.report import StepResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-datapath", action="store_true",
                   help="control plane only (no network namespaces, agents or eBPF)")
    p.add_argument("--datapath", action="store_true",
                   help="require the datapath (fail instead of skipping it without root)")
    p.add_argument("--no-service-policy", action="store_true",
                   help="run the agents without the eBPF service and policy programs (the "
                   "Service VIP and NetworkPolicy probes are then skipped)")
    p.add_argument("--fast", action="store_true",
                   help="short controller timers and no pauses (for tests)")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the temporary directory with every component's log")
    p.add_argument("--step-timeout", type=float, default=None,
                   help="seconds each step may take to converge (default 60)")


def settings_from(args: argparse.Namespace) -> DemoSettings:
    overrides: dict[str, Any] = {}
    if args.no_datapath:
        overrides["datapath"] = "off"
    elif args.datapath:
        overrides["datapath"] = "on"
    if args.fast:
        overrides["fast"] = True
    if args.no_service_policy:
        overrides["service_policy"] = False
    if args.keep_logs:
        overrides["keep_logs"] = True
    if args.step_timeout is not None:
        overrides["step_timeout"] = args.step_timeout
    return DemoSettings(**overrides)


def datapath_unavailable() -> str:
    """Why the datapath cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return ("not running as root: network namespaces, veths and eBPF programs need "
                "CAP_NET_ADMIN and CAP_BPF (run 'sudo make demo' for the full demo)")
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install iproute2 util-linux)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not installed (apt-get install python3-bpfcc; run 'make setup')"
    if not os.path.isdir("/sys/fs/bpf"):
        return "bpffs is not mounted at /sys/fs/bpf"
    return ""


async def run(settings: DemoSettings) -> int:
    from demo.story import NoProbes, Prober, Story
    from demo.system import System

    t0 = time.monotonic()
    print("stickyip demo: fixed IPs for StatefulSet pods, end to end on this machine", flush=True)
    why = datapath_unavailable() if settings.datapath != "off" else "--no-datapath given"
    if settings.datapath == "on" and why:
        print(f"error: the datapath cannot run: {why}", file=sys.stderr)
        return 2
    datapath: Any = None
    prober: Prober = NoProbes(f"control plane only ({why})")
    if not why:
        from demo.datapath import Datapath
        from demo.probes import LiveProbes

        datapath = Datapath(fast=settings.fast, service_policy=settings.service_policy)
        prober = LiveProbes(datapath)
    if why:
        print(f"datapath skipped: {why}", flush=True)
    print("setting up:", flush=True)
    results: list[StepResult] = []
    try:
        async with System(settings, datapath=datapath) as system:
            story = Story(system, settings, prober)
            try:
                await story.run()
            finally:
                results = story.results
                print("\ntearing down ...", flush=True)
    except DemoError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        _summary(results, time.monotonic() - t0, failed=True)
        return 1
    ok = _summary(results, time.monotonic() - t0, failed=False)
    return 0 if ok else 1


def _summary(results: list[StepResult], seconds: float, *, failed: bool) -> bool:
    checks = [c for r in results for c in r.checks]
    probes = [p for r in results for p in r.probes]
    bad = [c for c in checks if not c.ok] + [p for p in probes if not p.passed]
    skipped = sorted({f"{p.text}: {p.detail}" for p in probes if p.outcome == "skipped"})
    print(f"\n{len(results)} steps in {seconds:.0f} s: {len(checks)} checks, "
          f"{sum(1 for p in probes if p.outcome != 'skipped')} probes run, "
          f"{len(bad)} failed" + (" (stopped early)" if failed else ""), flush=True)
    for s in skipped:
        print(f"  skipped: {s}", flush=True)
    return not bad and not failed


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    add_arguments(p)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    sys.exit(asyncio.run(_main(settings_from(args))))


async def _main(settings: DemoSettings) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    me = os.getpid()

    def on_signal(signum: int, frame: Any) -> None:
        # Plain handlers, not loop.add_signal_handler: pyroute2 forks helpers to reach
        # node namespaces, and a child sharing asyncio's signal wakeup fd would deliver
        # its own SIGTERM to this loop as ours (datapath/cli.py does the same).
        if os.getpid() == me and task is not None:
            loop.call_soon_threadsafe(task.cancel)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return await run(settings)
    except asyncio.CancelledError:
        print("\ninterrupted; everything was cleaned up", file=sys.stderr)
        return 130
