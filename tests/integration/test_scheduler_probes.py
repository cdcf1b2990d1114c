"""The scheduler answers its Deployment's probes (issue 11.4): /healthz while it
serves, /readyz only with its watch caches synced and the store answering — a
stopped (SIGSTOP) redis-server makes it 503 within 2 s (it waits 1 s) — on the metrics port, in
scheduling and in extender mode."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.integration.test_scheduler_cache import replica, standin
from tests.support.redis_server import RedisServer, free_port


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.parametrize("extender", [False, True])
async def test_probes_follow_the_store(own_redis: RedisServer, extender: bool) -> None:
    port = free_port()
    extra = {"extender_port": free_port()} if extender else {}
    async with standin(1) as api, replica(api, own_redis.url, metrics_port=port,
                                          **extra) as app:
        assert app.status_url == f"http://127.0.0.1:{port}"
        assert bool(app.extender_url) is extender
        async with aiohttp.ClientSession(app.status_url) as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(path) as r:
                    assert r.status == 200, path
            async with http.get("/metrics") as r:
                assert "stickyip_scheduler" in await r.text()
            assert own_redis.proc is not None
            os.kill(own_redis.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                async with http.get("/readyz") as r:
                    assert r.status == 503
                    assert "IPAM store" in await r.text()
                assert time.monotonic() - started < 2.0
                async with http.get("/healthz") as r:
                    assert r.status == 200
            finally:
                os.kill(own_redis.proc.pid, signal.SIGCONT)
            async with http.get("/readyz") as r:
                assert r.status == 200
