"""The routing feed as it ships (``stickyip feed`` with the manifest's settings, real
Redis): agents' followers get a snapshot from the feed's memory and then every change
and node address; one that loses its replica resumes on another from its revision
(no snapshot, the store not read); a store restart reaches them as a new identity;
/healthz follows the store, /livez does not; /metrics serves what the monitoring
reads."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from datapath.feed import FeedSource
from datapath.peers import publish
from ipam import PoolSpec, RedisIpam, ephemeral_owner
from ipam.connection import open_redis
from ipam.follow import Follower, Update, cancel
from netbed.testbed import eventually
from tests.support.monitoring import monitored, served
from tests.support.redis_server import RedisServer, free_port
from tests.unit.manifests.conftest import ROOT, find, rendered
from tests.unit.manifests.test_manifest_invariants import named_container

POOL = PoolSpec(name="pods", cidr="10.50.0.0/24", block_size=28)


def manifest_env() -> dict[str, str]:
    pod = find(rendered("default"), "Deployment", "stickyip-feed")["spec"]["template"]["spec"]
    c = named_container(pod, "feed")
    return {e["name"]: e["value"] for e in c.get("env") or [] if "value" in e}


class Replica:
    def __init__(self, url: str, tmp: Path) -> None:
        self.port, self.metrics = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), **manifest_env(),
               "STICKYIP_REDIS_URL": url, "STICKYIP_FEED_LISTEN_PORT": str(self.port),
               "STICKYIP_FEED_LISTEN_HOST": "127.0.0.1",
               "STICKYIP_FEED_METRICS_PORT": str(self.metrics),
               "STICKYIP_FEED_METRICS_HOST": "127.0.0.1"}
        pod = find(rendered("default"), "Deployment", "stickyip-feed")["spec"]["template"]
        args = named_container(pod["spec"], "feed")["args"]
        self.log = tmp / f"feed-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from stickyip.cli import main; sys.exit(main())",
             *args], env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while b"feed ready" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}{path}",
                                        timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def store() -> Iterator[RedisServer]:
    with RedisServer(port=free_port(), appendfsync="always") as server:
        yield server


@pytest.fixture
async def ipam(store: RedisServer) -> AsyncIterator[RedisIpam]:
    client, _ = await open_redis(store.url)
    store_ipam = RedisIpam(client, actor="test")
    await store_ipam.apply_pool(POOL)
    await publish(client, "n1", "192.0.2.1")
    yield store_ipam
    await store_ipam.aclose()


@pytest.fixture
def replicas(store: RedisServer, tmp_path: Path) -> Iterator[list[Replica]]:
    started = [Replica(store.url, tmp_path) for _ in range(2)]
    yield started
    for r in started:
        r.stop()


class Agent:
    """What an agent's follower sees through the feed."""

    def __init__(self, addresses: list[str]) -> None:
        self.updates: list[Update] = []
        self.peer_updates: list[tuple[dict[str, Any], list[str]]] = []
        self.changed = asyncio.Event()
        self.source = FeedSource(addresses, node="n1",
                                 on_peers=lambda s, d: self._peers(dict(s), d))
        self.follower = Follower(self.source, on_update=self._update, resnapshot_spread=0,
                                 retry_max=0.2)
        self.task = asyncio.create_task(self.follower.run())

    def _update(self, u: Update) -> None:
        self.updates.append(u)
        self.changed.set()

    def _peers(self, set_: dict[str, Any], deleted: list[str]) -> None:
        self.peer_updates.append((set_, deleted))
        self.changed.set()

    async def until(self, done: Any, within: float = 30) -> None:
        async with asyncio.timeout(within):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        await cancel(self.task)
        await self.source.aclose()


async def test_agents_follow_the_feed_and_resume_on_another_replica(
        ipam: RedisIpam, store: RedisServer, replicas: list[Replica]) -> None:
    first, second = replicas
    agent = Agent([first.address])
    try:
        await agent.until(lambda: agent.follower.ready.is_set())
        assert agent.source.peers["n1"][4] == "192.0.2.1"
        await ipam.allocate(pool=POOL.name, node="n2", owner=ephemeral_owner("a"))
        fresh = await ipam.routing_snapshot()
        await agent.until(lambda: agent.follower.revision == fresh.revision)
        assert agent.follower.view is not None
        assert agent.follower.view.state() == fresh.state()
        await publish(ipam.redis, "n2", "192.0.2.2")
        await agent.until(lambda: "n2" in agent.source.peers)
        # the replica dies (the Service leads to the other one now): the agent
        # resumes there from its revision
        first.kill()
        agent.source.addresses = [("127.0.0.1", second.port)]
        await ipam.allocate(pool=POOL.name, node="n3", owner=ephemeral_owner("b"))
        fresh = await ipam.routing_snapshot()
        await agent.until(lambda: agent.follower.revision == fresh.revision)
        assert agent.follower.view is not None
        assert agent.follower.view.state() == fresh.state()
        assert agent.follower.stats.snapshots == 1  # resumed, no snapshot again
        # the store restarts: a new identity reaches the agent as a fresh snapshot
        store.stop()
        store.start()
        await agent.until(lambda: any(u.identity_changed for u in agent.updates))
        assert agent.follower.identity == (await ipam.routing_snapshot()).identity
    finally:
        await agent.stop()


async def test_probes_and_metrics(ipam: RedisIpam, store: RedisServer,
                                  replicas: list[Replica]) -> None:
    r = replicas[0]
    agent = Agent([r.address])
    try:
        await agent.until(lambda: agent.follower.ready.is_set())
        status, _ = r.get("/healthz")
        assert status == 200
        status, text = r.get("/metrics")
        assert status == 200
        missing = monitored("feed") - served(text)
        assert not missing, f"the feed does not serve {sorted(missing)}"
        assert 'stickyip_feed_clients 1.0' in text
        store.stop()  # the store is down: not ready, but alive
        assert await eventually(lambda: r.get("/healthz")[0] == 503, within=30)
        assert r.get("/livez")[0] == 200
        store.start()
        assert await eventually(lambda: r.get("/healthz")[0] == 200, within=30)
    finally:
        await agent.stop()
