"""``python -m kubestandin --port P``: serve the stand-in standalone (for the demo)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from kubestandin.standin import KubeStandIn
from plumbing.signals import stop_event


async def _serve(args: argparse.Namespace) -> None:
    api = KubeStandIn(host=args.host, port=args.port,
                      statefulset_controller=not args.no_statefulset_controller,
                      auto_ready=args.auto_ready)
    await api.start()
    print(api.url, flush=True)
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        await api.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kubestandin",
                                     description="Kubernetes API stand-in (test double)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--auto-ready", action="store_true",
                        help="mark pods Running+Ready once bound to a Ready node")
    parser.add_argument("--no-statefulset-controller", action="store_true")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
