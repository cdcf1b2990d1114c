"""Secrets stay secret (issue 11.5): a Redis password given in the store URL
(``redis://:PASSWORD@``, ``rediss://user:PASSWORD@``, a Sentinel URL's password and
``sentinel_password``) appears in no error message, no log line (debug level, start-up
included) and no metric, whatever goes wrong. The real ``stickyip`` command against a
real redis-server that requires the password; every captured byte is searched."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.admission import Certs, Client, review, statefulset, statefulset_pod
from tests.support.cli import ROOT, start_stickyip, stickyip_env
from tests.support.cli import stickyip as run_stickyip
from tests.support.redis_server import RedisServer, free_port

SECRET = "Pa55-w0rd-9f3c"
SECRET2 = "sentinel-pw-77ab"


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    with RedisServer(password=SECRET) as server:
        yield server


def stickyip(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``stickyip --log-level debug ARGS`` (every log line it has)."""
    return run_stickyip("--log-level", "debug", *args,
                        env=stickyip_env(tmp_path / "home", **extra))


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and SECRET2 not in text, text


def bad_urls(server: RedisServer) -> list[str]:
    port = server.port
    return [
        f"redis://:wrong-{SECRET}@127.0.0.1:{port}/0",           # AUTH refused
        f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",          # nothing listens
        f"rediss://app:{SECRET}@127.0.0.1:{port}/0",             # TLS to a plain server
        f"redis://:{SECRET}@127.0.0.1:notaport/0",               # malformed
        f"redis://:{SECRET}@@127.0.0.1:{port}/0",                # '@' in the password
        f"unix:///nonexistent/redis.sock?db=0&password={SECRET}",
        f"redis+sentinel://:{SECRET}@127.0.0.1:{free_port()}/mymaster"
        f"?sentinel_password={SECRET2}",
    ]


@pytest.mark.parametrize("index", range(7))
def test_store_errors_of_the_cli_carry_no_password(locked_redis: RedisServer, tmp_path: Path,
                                                   index: int) -> None:
    url = bad_urls(locked_redis)[index]
    for how in (["--redis-url", url], []):
        proc = stickyip([*how, "pool", "list"], tmp_path, STICKYIP_REDIS_URL=url)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.rstrip().splitlines()[-1].startswith("error: ")
        assert_no_secret(proc.stdout, proc.stderr)


def test_a_working_password_url_is_never_shown(locked_redis: RedisServer,
                                               tmp_path: Path) -> None:
    applied = stickyip(["--redis-url", locked_redis.url, "pool", "apply", "-f", "-"], tmp_path)
    assert applied.returncode != 0  # no file on stdin: an error, still no secret
    assert_no_secret(applied.stdout, applied.stderr)
    f = tmp_path / "pools.yaml"
    f.write_text("name: default\ncidr: 10.60.0.0/24\n")
    for args in (["pool", "apply", "-f", str(f)], ["pool", "list", "-o", "yaml"],
                 ["ipam", "show"], ["ipam", "check"]):
        proc = stickyip(["--redis-url", locked_redis.url, *args], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert_no_secret(proc.stdout, proc.stderr)


def _serve(args: list[str], tmp_path: Path, ready: str, **extra: str) -> tuple[str, str]:
    """Run a server command until its stderr shows ``ready``, then SIGTERM it; its
    output. Fails if it exits first (with that output in the message)."""
    proc = start_stickyip("--log-level", "debug", *args,
                          env=stickyip_env(tmp_path / "home", **extra))
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if ready in line:
                break
        else:
            raise AssertionError("exited before it was ready:\n" + "".join(lines))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    return out, "".join(lines) + err


def test_the_webhook_logs_and_serves_no_password(locked_redis: RedisServer,
                                                 tmp_path: Path) -> None:
    certs = Certs(str(tmp_path))
    port = free_port()
    url = locked_redis.url
    proc = start_stickyip("--log-level", "debug", "webhook", "--cert", certs.cert_file,
                          "--key", certs.key_file, "--host", "127.0.0.1", "--port", str(port),
                          "--no-kube", env=stickyip_env(tmp_path / "home",
                                                       STICKYIP_REDIS_URL=url))

    async def use() -> list[str]:
        client = Client(f"https://127.0.0.1:{port}", certs.client_context())
        try:
            await client.wait_ready()
            answers = [str(await client.post("/mutate-pods", review(statefulset_pod(
                statefulset("web"), 0))))]
            answers.append((await client.get("/metrics"))[1])
            return answers
        finally:
            await client.aclose()

    try:
        answers = asyncio.run(use())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert_no_secret(out, err, *answers)
    started = [json.loads(line) for line in err.splitlines() if '"IPAM store"' in line]
    assert [s["store"] for s in started] == [url.replace(f":{SECRET}", "***")], \
        "the start-up log names the store, without its password"


def test_the_scheduler_and_agent_log_no_password(locked_redis: RedisServer,
                                                 tmp_path: Path) -> None:
    api = subprocess.Popen([sys.executable, "-m", "kubestandin", "--port", "0", "--auto-ready"],
                           cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert api.stdout is not None
        kube = api.stdout.readline().strip()
        out, err = _serve(["scheduler"], tmp_path, "scheduler started",
                          STICKYIP_REDIS_URL=locked_redis.url, STICKYIP_KUBE_HOST=kube)
        assert_no_secret(out, err)
        assert f'"store": "redis://***@127.0.0.1:{locked_redis.port}/0"' in err
        wrong = stickyip(["scheduler"], tmp_path, STICKYIP_KUBE_HOST=kube,
                         STICKYIP_REDIS_URL=bad_urls(locked_redis)[0])
        assert wrong.returncode == 1 and "error: " in wrong.stderr
        assert_no_secret(wrong.stdout, wrong.stderr)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=10)
    agent = stickyip(["agent", "--node", "n1", "--socket", str(tmp_path / "a.sock")], tmp_path,
                     STICKYIP_REDIS_URL=bad_urls(locked_redis)[0])
    assert agent.returncode == 1 and "Traceback" not in agent.stderr, agent.stderr
    assert_no_secret(agent.stdout, agent.stderr)
