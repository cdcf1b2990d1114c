"""The plain-HTTP status endpoints the agent and the feed both serve: ``/metrics``
(Prometheus text), ``/healthz`` (readiness, may consult the store) and ``/livez``
(liveness, never does)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_status(host: str, port: int, *, metrics: Handler, healthz: Handler,
                       livez: Handler) -> web.AppRunner:
    """Serve the three endpoints on ``host:port``; the caller cleans the runner up."""
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
