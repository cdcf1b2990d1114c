"""The Sentinel overlay's configure script, run here for three "pods" on
loopback addresses (127.0.0.1-3 standing in for their nodes) with real
redis-server and Sentinel processes: pod 0 bootstraps as master, pod 1 finds
the master through a Sentinel and replicates it, and a pod that finds no
Sentinel (and is not pod 0) refuses to guess."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.manifests.conftest import find, rendered

pytestmark = pytest.mark.skipif(
    not all(shutil.which(x) for x in ("redis-server", "redis-cli", "timeout", "sh")),
    reason="needs redis-server, redis-cli, timeout and sh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pods:
    """Runs the script per pod with /data and the ports rewritten, and the
    processes the containers would run; removes everything afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis_port = _free_port()
        self.sentinel_port = _free_port()
        script = find(rendered("sentinel"), "ConfigMap", "stickyip-redis-sentinel-scripts")[
            "data"]["configure.sh"]
        self.script = (script.replace("26379", str(self.sentinel_port))
                       .replace("6379", str(self.redis_port)))
        self.procs: list[subprocess.Popen[bytes]] = []

    def data(self, ordinal: int) -> Path:
        return self.root / f"pod-{ordinal}"

    def configure(self, ordinal: int,
                  sentinel_host: str | None) -> subprocess.CompletedProcess[str]:
        data = self.data(ordinal)
        data.mkdir(exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "POD_NAME": f"stickyip-redis-{ordinal}",
               "POD_IP": f"127.0.0.{ordinal + 1}"}
        if sentinel_host is not None:
            env["STICKYIP_STORE_SERVICE_HOST"] = sentinel_host
        return subprocess.run(["sh", "-c", self.script.replace("/data", str(data))], env=env,
                              capture_output=True, text=True, timeout=30)

    def start(self, ordinal: int, *, sentinel: bool) -> None:
        ip = f"127.0.0.{ordinal + 1}"
        conf = self.data(ordinal) / "conf"
        # redis.conf keeps Redis's default port (6379, the container port).
        args = ["redis-server", str(conf / "redis.conf"), "--port", str(self.redis_port),
                "--bind", ip, "--save", "",
                # Only to keep the test short: no 5 s wait before a full sync.
                "--repl-diskless-sync-delay", "0"]
        self._spawn(args, ip, self.redis_port)
        if sentinel:
            self._spawn(["redis-server", str(conf / "sentinel.conf"), "--sentinel",
                         "--bind", ip], ip, self.sentinel_port)

    def _spawn(self, args: list[str], ip: str, port: int) -> None:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{args} exited with {proc.returncode}"
            if self.cli(ip, port, "PING") == "PONG":
                return
            time.sleep(0.05)
        raise AssertionError(f"{args} did not answer PING")

    @staticmethod
    def cli(ip: str, port: int, *command: str) -> str:
        done = subprocess.run(["redis-cli", "-h", ip, "-p", str(port), "--raw", *command],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    def close(self) -> None:
        # Their data is thrown away: no graceful shutdown (a master would wait
        # for its replicas).
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def pods() -> Iterator[Pods]:
    root = Path(tempfile.mkdtemp(prefix="stickyip-sentinel-"))
    p = Pods(root)
    try:
        yield p
    finally:
        p.close()
        shutil.rmtree(root, ignore_errors=True)


def test_sentinel_pods_bootstrap_and_replicate(pods: Pods) -> None:
    # Not pod 0 and no Sentinel to ask: it must not make itself a master.
    lone = pods.configure(2, sentinel_host=None)
    assert lone.returncode != 0 and "no Sentinel" in lone.stderr
    assert not (pods.data(2) / "conf" / "redis.conf").exists()

    first = pods.configure(0, sentinel_host=None)
    assert first.returncode == 0, first.stderr
    conf0 = (pods.data(0) / "conf" / "redis.conf").read_text()
    assert "appendonly yes" in conf0 and "replicaof" not in conf0
    pods.start(0, sentinel=True)
    assert pods.cli("127.0.0.1", pods.sentinel_port, "sentinel", "get-master-addr-by-name",
                    "stickyip").splitlines() == ["127.0.0.1", str(pods.redis_port)]

    second = pods.configure(1, sentinel_host="127.0.0.1")
    assert second.returncode == 0, second.stderr
    conf1 = (pods.data(1) / "conf" / "redis.conf").read_text()
    assert f"replicaof 127.0.0.1 {pods.redis_port}" in conf1
    assert "replica-announce-ip 127.0.0.2" in conf1
    assert f"sentinel monitor stickyip 127.0.0.1 {pods.redis_port} 2" in (
        pods.data(1) / "conf" / "sentinel.conf").read_text()
    # The overlay's master refuses writes while no replica confirms them
    # (min-replicas-to-write), and takes them once its replica is online.
    assert pods.cli("127.0.0.1", pods.redis_port, "SET", "k", "v").startswith("NOREPLICAS")
    pods.start(1, sentinel=False)
    deadline = time.monotonic() + 15
    while (answer := pods.cli("127.0.0.1", pods.redis_port, "SET", "k", "v")) != "OK":
        assert answer.startswith("NOREPLICAS"), answer
        assert time.monotonic() < deadline, "pod 0 never took a write with its replica"
        time.sleep(0.1)
    while pods.cli("127.0.0.2", pods.redis_port, "GET", "k") != "v":
        assert time.monotonic() < deadline, "pod 1 never replicated pod 0"
        time.sleep(0.1)
    assert "role:slave" in pods.cli("127.0.0.2", pods.redis_port, "INFO", "replication")
