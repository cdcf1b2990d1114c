"""When Redis cannot be reached the webhook answers HTTP 500 with a reason (so the
webhook's failurePolicy decides), stays alive, reports not-ready, and recovers;
a Redis killed in the middle of claims leaves no half-written claim. Also: the
``stickyip webhook`` command serves and stops cleanly on SIGTERM.

Bounded waits (issue 11.4): with the store stalled (a real redis-server stopped with
SIGSTOP: connections open, nothing answers) every endpoint answers within 2 s, well
inside the API server's timeoutSeconds of 5, with a one-line reason; /readyz says 503
as fast. A stalled Kubernetes API (a statefulsets/scale read) is bounded the same way."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipam import PoolSpec, RedisIpam, ReservationKey, check_and_repair, open_ipam
from plumbing.kube.client import KubeSettings
from tests.support.admission import (
    Certs,
    Client,
    decoded_patch,
    live_webhook,
    review,
    scale_review,
    statefulset,
    statefulset_pod,
)
from tests.support.redis_server import RedisServer, free_port
from webhooks.kube import from_settings

WITHIN = 2.0  # seconds: the bound; the manifests give the API server 5


@pytest.fixture
async def store(own_redis: RedisServer) -> AsyncIterator[RedisIpam]:
    ipam = await open_ipam(own_redis.url, actor="test")
    await ipam.apply_pool(PoolSpec(name="default", cidr="10.50.0.0/22", block_size=26))
    yield ipam
    await ipam.aclose()


def pod_review(name: str, ordinal: int, **annotations: str) -> dict[str, Any]:
    return review(statefulset_pod(statefulset(name, annotations=annotations), ordinal))


async def test_store_down_gives_500_and_recovers(
        own_redis: RedisServer, store: RedisIpam, tmp_path: Path) -> None:
    async with live_webhook(store, str(tmp_path)) as (_, client, _):
        status, answer = await client.post("/mutate-pods", pod_review("web", 0))
        assert status == 200 and answer["response"]["allowed"] is True
        own_redis.stop()

        status, text = await client.post("/mutate-pods", pod_review("web", 1))
        assert status == 500 and text.startswith("IPAM store unavailable:")
        assert "\n" not in text.strip()
        sts = statefulset("db", annotations={"stickyip.io/ips": "10.50.0.10-10.50.0.12"})
        status, text = await client.post("/validate-statefulsets", review(sts))
        assert status == 500
        pod = statefulset_pod(sts, 0)
        pod["metadata"]["annotations"]["stickyip.io/ip"] = "10.50.0.10"
        status, text = await client.post("/validate-pods", review(pod))
        assert status == 500
        # Bad input is still bad input, store or not.
        assert (await client.post("/mutate-pods", b"{}"))[0] == 400
        assert (await client.get("/readyz"))[0] == 503
        assert (await client.get("/healthz"))[0] == 200
        _, metrics = await client.get("/metrics")
        assert 'stickyip_webhook_requests_total{endpoint="mutate-pods",verdict="error"} 1.0' \
            in metrics
        assert 'stickyip_webhook_ipam_errors_total{error="StoreUnavailable"}' in metrics

        own_redis.start()  # same port and directory: replays its AOF
        await client.wait_ready(within=10)
        status, answer = await client.post("/mutate-pods", pod_review("web", 1))
        assert status == 200 and answer["response"]["allowed"] is True
        assert await store.reservation(ReservationKey.of("prod", "web", 0)) is not None


async def test_kill_during_claims_leaves_no_half_claim(
        own_redis: RedisServer, store: RedisIpam, tmp_path: Path) -> None:
    async with live_webhook(store, str(tmp_path)) as (_, client, _):
        ips = "10.50.1.0-10.50.1.119"
        sts = statefulset("big", replicas=120, annotations={"stickyip.io/ips": ips})

        answered: list[int] = []
        twenty = asyncio.Event()

        async def one(i: int, c: Client) -> tuple[int, int, Any]:
            status, answer = await c.post("/mutate-pods", review(statefulset_pod(sts, i)))
            answered.append(i)
            if len(answered) >= 20:
                twenty.set()
            return i, status, answer

        tasks = [asyncio.create_task(one(i, client)) for i in range(120)]
        await twenty.wait()
        own_redis.kill9()
        results = await asyncio.gather(*tasks)
        own_redis.start()
        for _ in range(200):
            if await store.ping():
                break
            await asyncio.sleep(0.05)

    statuses = {s for _, s, _ in results}
    assert statuses <= {200, 500} and 500 in statuses and 200 in statuses
    for i, status, answer in results:
        if status != 200:
            continue
        assert answer["response"]["allowed"] is True
        ops = {op["path"]: op.get("value") for op in decoded_patch(answer)}
        res = await store.reservation(ReservationKey.of("prod", "big", i), pool="default")
        assert res is not None and str(res.address) == f"10.50.1.{i}"
        assert ops.get("/metadata/annotations/stickyip.io~1ip") == f"10.50.1.{i}"
    assert await check_and_repair(store) == []


def test_webhook_command_serves_and_stops_on_sigterm(
        own_redis: RedisServer, tmp_path: Path) -> None:
    certs = Certs(str(tmp_path))
    port = free_port()
    env = {**os.environ, "STICKYIP_REDIS_URL": own_redis.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stickyip.cli", "--log-level", "info", "webhook",
         "--cert", certs.cert_file, "--key", certs.key_file, "--host", "127.0.0.1",
         "--port", str(port), "--scheduler-name", "stickyip-scheduler"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async def probe() -> tuple[int, Any]:
            client = Client(f"https://127.0.0.1:{port}", certs.client_context())
            try:
                await client.wait_ready()
                return await client.post("/mutate-pods", pod_review("web", 0))
            finally:
                await client.aclose()

        status, answer = asyncio.run(probe())
        assert status == 200
        # No pool "default" exists in this Redis: refused, naming the fix.
        assert answer["response"]["allowed"] is False
        assert "stickyip pool apply" in answer["response"]["status"]["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, proc.stderr.read().decode() if proc.stderr else ""


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
        status, answer = await client.post("/mutate-pods", pod_review("web", 0))
        assert status == 200 and answer["response"]["allowed"] is True

        with Stalled(own_redis):
            took, (status, text) = await timed(client.post("/mutate-pods",
                                                           pod_review("web", 1)))
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
        status, answer = await client.post("/mutate-pods", pod_review("web", 1))
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
