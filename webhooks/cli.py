"""``stickyip webhook``: run the admission webhook server until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import gc
from typing import Any

from plumbing.signals import stop_event


def add_parser(sub: Any, name: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help="run the admission webhook server (HTTPS)",
        description="Serve /mutate-pods, /validate-statefulsets, /validate-pods, /healthz, "
        "/readyz and /metrics over HTTPS. Settings also come from STICKYIP_WEBHOOK_* "
        "variables; flags win.")
    p.add_argument("--cert", help="PEM certificate chain (reloaded when it changes)")
    p.add_argument("--key", help="PEM private key (reloaded when it changes)")
    p.add_argument("--port", type=int, help="HTTPS port (default 8443)")
    p.add_argument("--host", help="listen address (default 0.0.0.0)")
    p.add_argument("--scheduler-name", help="set this schedulerName on opted-in pods "
                   "(e.g. stickyip-scheduler)")
    p.add_argument("--no-kube", action="store_true",
                   help="do not read StatefulSets from the Kubernetes API (scale-ups through "
                   "statefulsets/scale are then allowed unchecked)")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from ipam import open_ipam
    from webhooks.config import WebhookSettings
    from webhooks.errors import WebhookError
    from webhooks.server import start

    overrides: dict[str, Any] = {}
    for flag, field in (("cert", "cert_file"), ("key", "key_file"), ("port", "port"),
                        ("host", "host"), ("scheduler_name", "scheduler_name")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    settings = WebhookSettings(**overrides)
    if not settings.cert_file or not settings.key_file:
        raise SystemExit("error: --cert and --key (or STICKYIP_WEBHOOK_CERT_FILE/KEY_FILE) "
                         "are required: the API server only calls webhooks over HTTPS")
    reader = None
    if not getattr(args, "no_kube", False):
        from plumbing.kube.client import KubeSettings
        from webhooks.kube import from_settings

        # before the store: a bad config fails fast; a read may take half the deadline
        reader = from_settings(KubeSettings(), timeout=settings.store_deadline / 2)
    # The store the stickyip command chose (never a private one unless --embedded).
    ipam = await open_ipam(args.redis_url or None, actor="webhook",
                           embedded_path=args.embedded_path, settings=args.ipam_settings)
    try:
        try:
            server = await start(settings, ipam, statefulsets=reader)
        except WebhookError as e:
            raise SystemExit(f"error: {e}") from e
        # Everything loaded so far lives until exit: keep it out of the collector's
        # full passes (shorter GC pauses in the request path).
        gc.freeze()
        stop = stop_event()
        try:
            await stop.wait()
        finally:
            await server.close()
    finally:
        await ipam.aclose()
    return 0
