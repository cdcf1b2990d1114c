"""No silent private store (issue 11.2): the webhook, the scheduler and the agent refuse
to start without a store URL (two webhook replicas on private stores would hand out
the same addresses), unless ``--embedded`` asks for one; operator commands use the
machine's embedded store and say so on stderr, with its path."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.admission import Certs, Client
from tests.support.cli import start_stickyip, stickyip, stickyip_env
from tests.support.redis_server import free_port, processes_in


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return stickyip_env(tmp_path / "home", STICKYIP_EMBEDDED_PATH=str(
        tmp_path / "embedded" / "ipam.rdb"), **extra)


def run(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return stickyip(*args, env=env(tmp_path, **extra))


@pytest.mark.parametrize("args", [
    ["webhook", "--cert", "c.pem", "--key", "k.pem", "--no-kube"],
    ["scheduler"],
    ["agent", "--node", "n1"],
    ["--log-level", "info", "webhook", "--cert", "c.pem", "--key", "k.pem"],
])
def test_servers_without_a_store_url_do_not_start(tmp_path: Path, args: list[str]) -> None:
    proc = run(args, tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: no IPAM store given: set STICKYIP_REDIS_URL or --redis-url")
    assert "--embedded" in line
    assert not (tmp_path / "embedded").exists(), "no embedded store was started"


def test_embedded_and_a_url_together_are_refused(tmp_path: Path) -> None:
    proc = run(["--embedded", "--redis-url", "redis://127.0.0.1:1/0", "pool", "list"],
               tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --embedded and --redis-url name two different "
                                   "stores: give one of them")


def test_the_webhook_runs_on_an_embedded_store_only_when_asked(tmp_path: Path) -> None:
    certs = Certs(str(tmp_path))
    port = free_port()
    proc = start_stickyip("webhook", "--embedded", "--cert", certs.cert_file, "--key",
                          certs.key_file, "--host", "127.0.0.1", "--port", str(port),
                          "--no-kube", env=env(tmp_path))

    async def ready() -> int:
        client = Client(f"https://127.0.0.1:{port}", certs.client_context())
        try:
            for _ in range(600):
                try:
                    return (await client.get("/readyz"))[0]
                except OSError:
                    await asyncio.sleep(0.05)
            raise AssertionError("the webhook never answered")
        finally:
            await client.aclose()

    try:
        assert asyncio.run(ready()) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    warnings = [json.loads(x) for x in err.splitlines() if "embedded Redis private" in x]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert warnings[0]["store"] == f"embedded Redis at {tmp_path}/embedded/ipam.rdb"
    assert processes_in(tmp_path) == [], "the embedded server outlived the webhook"


def test_operator_commands_say_they_use_the_embedded_store(tmp_path: Path) -> None:
    path = tmp_path / "embedded" / "ipam.rdb"
    listed = run(["pool", "list", "-o", "json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert listed.stderr.strip() == (f"stickyip: using the embedded store at {path} (no "
                                     "--redis-url or STICKYIP_REDIS_URL)")
    url = run(["pool", "list"], tmp_path, STICKYIP_REDIS_URL="redis://127.0.0.1:1/0")
    assert "embedded" not in url.stderr
    assert processes_in(tmp_path) == [], "the embedded server outlived its command"
