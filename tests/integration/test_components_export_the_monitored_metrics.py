"""Every metric the shipped alert rules and dashboard read is served on /metrics by
the component that docs/observability.md says exports it: the real ``stickyip
webhook`` and ``stickyip scheduler`` commands, with the manifests' arguments, run
against a real redis-server and the Kubernetes API stand-in and are scraped.
(The agent's side: tests/privileged/test_agent_exports_the_monitored_metrics.py.)"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from kubestandin import KubeStandIn
from tests.support.monitoring import monitored, served
from tests.support.redis_server import RedisServer, free_port
from tests.unit.manifests.conftest import ROOT, find, rendered
from tests.unit.manifests.test_manifest_invariants import named_container


def _manifest(kind: str, name: str, container: str) -> dict[str, Any]:
    pod = find(rendered("default"), kind, name)["spec"]["template"]["spec"]
    return named_container(pod, container)


def _env(c: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.update({e["name"]: e["value"] for e in c.get("env") or [] if "value" in e})
    env.update(extra)
    return env


def _get(url: str, ctx: ssl.SSLContext | None = None) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            body: bytes = r.read()
            return body.decode()
    except (OSError, urllib.error.URLError):
        return None


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _scrape(proc: subprocess.Popen[bytes], url: str, log: Path,
                  ctx: ssl.SSLContext | None = None, within: float = 60) -> str:
    """/metrics once the component serves it (checked until it answers or exits)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{_tail(log)}"
        text = await asyncio.to_thread(_get, url, ctx)
        if text is not None:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {within}s:\n{_tail(log)}")


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def api() -> AsyncIterator[KubeStandIn]:
    standin = KubeStandIn(statefulset_controller=False)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "stickyip.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, waited for off the event loop: the stand-in on this loop must keep
    answering (the scheduler gives up its Lease on the way out)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def test_the_webhook_serves_every_metric_the_monitoring_reads(
        redis: RedisServer, api: KubeStandIn, tmp_path: Path) -> None:
    c = _manifest("Deployment", "stickyip-webhook", "webhook")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    port = free_port()
    args = [a.replace("/etc/stickyip/tls", str(tmp_path)) for a in c["args"]]
    args[args.index("--port") + 1] = str(port)
    args += ["--host", "127.0.0.1"]
    env = _env(c, STICKYIP_REDIS_URL=redis.url, STICKYIP_KUBE_HOST=api.url)
    proc = _start(args, env, tmp_path / "webhook.log")
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        text = await _scrape(proc, f"https://127.0.0.1:{port}/metrics", tmp_path / "webhook.log",
                             ctx)
    finally:
        await _stop(proc)
    missing = monitored("webhook") - served(text)
    assert not missing, f"the monitoring reads metrics the webhook does not serve: {missing}"


async def test_the_scheduler_serves_every_metric_the_monitoring_reads(
        redis: RedisServer, api: KubeStandIn, tmp_path: Path) -> None:
    c = _manifest("Deployment", "stickyip-scheduler", "scheduler")
    port = free_port()
    env = _env(c, STICKYIP_REDIS_URL=redis.url, STICKYIP_KUBE_HOST=api.url,
               STICKYIP_SCHEDULER_METRICS_PORT=str(port),
               STICKYIP_SCHEDULER_IDENTITY="test-scheduler")
    proc = _start(c["args"], env, tmp_path / "scheduler.log")
    try:
        text = await _scrape(proc, f"http://127.0.0.1:{port}/metrics",
                             tmp_path / "scheduler.log")
    finally:
        await _stop(proc)
    missing = monitored("scheduler") - served(text)
    assert not missing, f"the monitoring reads metrics the scheduler does not serve: {missing}"
