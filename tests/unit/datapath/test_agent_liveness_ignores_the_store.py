"""The agent's probes: /healthz (readiness) fails while the store is down, /livez
(liveness) does not, so a store outage never restarts every agent of a cluster;
/livez fails once a part of the agent has died."""

from __future__ import annotations

from typing import Any

import aiohttp

from datapath.metrics import AgentMetrics
from datapath.server import StatusServer


async def test_livez_follows_the_agent_not_the_store() -> None:
    store_up = False
    alive = True

    async def health() -> tuple[bool, dict[str, Any]]:
        return store_up, {"ok": store_up, "store": store_up}

    server = StatusServer("127.0.0.1", 0, metrics=AgentMetrics(dict), health=health,
                          alive=lambda: alive, before_scrape=lambda: None)
    await server.start()
    try:
        assert server._runner is not None
        port = server._runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            async def status(path: str) -> int:
                async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                    return r.status

            assert await status("/healthz") == 503  # store down: not ready
            assert await status("/livez") == 200    # ...but alive
            store_up = True
            assert await status("/healthz") == 200
            alive = False                          # a part of the agent died
            assert await status("/livez") == 503
    finally:
        await server.stop()
