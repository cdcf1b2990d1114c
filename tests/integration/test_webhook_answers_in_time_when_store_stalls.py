"""Bounded waits on the admission path (issue 11.4): with the store stalled (a real
redis-server stopped with SIGSTOP: connections open, nothing answers) the webhook
answers every endpoint within 2 s, well inside the API server's timeoutSeconds of 5,
with a one-line reason; /readyz says 503 as fast. A stalled Kubernetes API (a
statefulsets/scale read) is bounded the same way. It recovers once the store runs."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipam import PoolSpec, RedisIpam, open_ipam
from plumbing.kube.client import KubeSettings
from tests.support.admission import (
    live_webhook,
    review,
    scale_review,
    statefulset,
    statefulset_pod,
)
from tests.support.redis_server import RedisServer
from webhooks.kube import from_settings

WITHIN = 2.0  # seconds: the bound; the manifests give the API server 5


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def store(own_redis: RedisServer) -> AsyncIterator[RedisIpam]:
    ipam = await open_ipam(own_redis.url, actor="test")
    await ipam.apply_pool(PoolSpec(name="default", cidr="10.50.0.0/22", block_size=26))
    yield ipam
    await ipam.aclose()


class Stalled:
    """SIGSTOP the server; SIGCONT on exit, whatever happened."""

    def __init__(self, server: RedisServer) -> None:
        assert server.proc is not None
        self.pid = server.proc.pid

    def __enter__(self) -> Stalled:
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


async def timed(call: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = await call
    return time.monotonic() - started, result


async def test_a_stalled_store_is_answered_within_two_seconds(
        own_redis: RedisServer, store: RedisIpam, tmp_path: Path) -> None:
    async with live_webhook(store, str(tmp_path)) as (_, client, _):
        status, answer = await client.post("/mutate-pods", review(statefulset_pod(
            statefulset("web"), 0)))
        assert status == 200 and answer["response"]["allowed"] is True

        with Stalled(own_redis):
            took, (status, text) = await timed(client.post("/mutate-pods", review(
                statefulset_pod(statefulset("web"), 1))))
            assert took < WITHIN, f"/mutate-pods took {took:.2f}s with the store stalled"
            assert status == 500
            assert text.startswith("IPAM store unavailable: the IPAM store did not answer "
                                   "within the call's deadline")
            assert "\n" not in text.strip()

            sts = statefulset("db", annotations={"stickyip.io/ips": "10.50.0.10-10.50.0.12"})
            took, (status, _) = await timed(client.post("/validate-statefulsets", review(sts)))
            assert took < WITHIN and status == 500

            took, (status, text) = await timed(client.get("/readyz"))
            assert took < WITHIN, f"/readyz took {took:.2f}s with the store stalled"
            assert status == 503 and "did not answer a PING within 1.5s" in text
            assert (await client.get("/healthz"))[0] == 200

        # running again: answers again, and the cut-off claim is simply made again
        status, answer = await client.post("/mutate-pods", review(statefulset_pod(
            statefulset("web"), 1)))
        assert status == 200 and answer["response"]["allowed"] is True
        assert (await client.get("/readyz"))[0] == 200


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An 'API server' that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_a_stalled_api_server_is_answered_within_two_seconds(
        store: RedisIpam, tmp_path: Path, silent_api: str) -> None:
    reader = from_settings(KubeSettings(kube_host=silent_api), timeout=0.75)
    assert reader is not None
    async with live_webhook(store, str(tmp_path), statefulsets=reader) as (_, client, _):
        took, (status, text) = await timed(client.post(
            "/validate-statefulsets", scale_review("db", replicas=5, old_replicas=3)))
        assert took < WITHIN, f"a scale-up took {took:.2f}s with the API server silent"
        assert status == 500
        assert text.startswith("Kubernetes API unavailable: StatefulSet prod/db not read: "
                               "the API server did not answer within 0.75s")
