"""The agent's routes and fences are driven by the change stream (issue 10.2): one
snapshot at start, then each change applied as it comes — no re-read of the view, no
lease read per endpoint per heartbeat — from the store itself or through the feed.
An agent restarted while a reservation moved fences it; a store that changed identity
makes the agent re-assert its endpoints (issue 16.2). In-memory netlink, program and
records; a real redis-server."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datapath.agent import Agent
from datapath.config import AgentSettings
from datapath.events import PodEvents
from datapath.fakes import (
    FakeNetlink,
    FakeProber,
    MemoryEndpointProgram,
    MemoryEndpointRecords,
)
from datapath.feed import FeedServer
from datapath.peers import StorePeers, publish
from datapath.routing import Route
from ipam import OwnerKey, PoolSpec, RedisIpam, ReservationKey, layout
from ipam.connection import open_redis
from ipam.follow import StoreSource, cancel
from tests.support.redis_server import RedisServer, free_port

NODE = "node-a"
POOL = PoolSpec(name="pods", cidr="10.40.0.0/24", block_size=28)
K0 = ReservationKey.of("prod", "db", 0)
PEERS = {"node-a": "192.0.2.1", "node-b": "192.0.2.2", "node-c": "192.0.2.3"}


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


async def revision(ipam: RedisIpam) -> int:
    return int(await ipam.redis.hget(layout.LAYOUT, "rev") or 0)


def via(node: Node, dst: object) -> str:
    """The gateway of the kernel's route to ``dst`` ("" if not a 'via' route)."""
    r = node.routes()[dst]
    return r.target if r.kind == "via" else ""


class Counted:
    """Counts the store reads the agent must no longer make in steady state."""

    def __init__(self, ipam: RedisIpam) -> None:
        self.calls: dict[str, int] = {"routing_snapshot": 0, "routing_view": 0, "lease": 0}
        for name in self.calls:
            real = getattr(ipam, name)
            setattr(ipam, name, self._wrap(name, real))

    def _wrap(self, name: str, real: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await real(*args, **kwargs)
        return call


class Node:
    """One agent's routing part on fakes (no root: nothing of the host is touched)."""

    def __init__(self, ipam: RedisIpam, tmp: Path, *, feed: str = "",
                 netlink: FakeNetlink | None = None,
                 records: MemoryEndpointRecords | None = None,
                 events: PodEvents | None = None) -> None:
        self.settings = AgentSettings(node=NODE, default_pool=POOL.name, state_dir=str(tmp),
                                      socket=str(tmp / "sock"), metrics_port=0, feed=feed,
                                      resnapshot_spread=0.0, sync_interval=0.01)
        self.netlink = netlink or FakeNetlink()
        self.records = records or MemoryEndpointRecords()
        self.agent = Agent(self.settings, ipam, netlink=self.netlink,
                           program=MemoryEndpointProgram(), records=self.records,
                           prober=FakeProber(), events=events)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        a = self.agent
        if a.peer_source is not None:
            a.routes.peers = await a.peer_source.start(a.routes.on_peers)
        await a.routes.start()
        self.tasks = [asyncio.create_task(a.routes.run())]

    async def stop(self) -> None:
        for t in self.tasks:
            await cancel(t)
        await self.agent.routes.stop()
        if self.agent.peer_source is not None:
            await self.agent.peer_source.stop()

    async def caught_up(self, ipam: RedisIpam) -> None:
        async with asyncio.timeout(10):
            await self.agent.routes.wait_applied(await revision(ipam))

    def routes(self) -> dict[Any, Route]:
        return {dst: r for dst, (r, _) in self.netlink.kernel_routes.items()}

    async def add_pod(self, cid: str, namespace: str, pod: str) -> dict[str, Any]:
        netns = f"/run/netns/{cid}"
        self.netlink.namespaces.add(netns)
        # ADD takes the agent's lock itself
        return await self.agent.endpoints.add(
            {"command": "ADD", "containerId": cid, "ifname": "eth0", "netns": netns,
             "args": {"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": pod,
                      "K8S_POD_UID": f"uid-{cid}"}, "config": {}})


@pytest.fixture(params=["store", "feed"])
async def feed(request: pytest.FixtureRequest, ipam: RedisIpam,
               redis_url: str) -> AsyncIterator[str]:
    """'' (agents follow the store) or the address of a feed replica in this process."""
    await ipam.apply_pool(POOL)
    for node, address in PEERS.items():
        await publish(ipam.redis, node, address)
    if request.param == "store":
        yield ""
        return
    client, _ = await open_redis(redis_url)
    peers, _ = await open_redis(redis_url)
    server = FeedServer(StoreSource(RedisIpam(client), own=True), peers=StorePeers(peers),
                        host="127.0.0.1", port=0)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop()
        await peers.aclose()


async def test_routes_follow_each_change_without_reading_the_view_again(
        ipam: RedisIpam, feed: str, tmp_path: Path) -> None:
    reads = Counted(ipam)
    node = Node(ipam, tmp_path, feed=feed)
    await node.start()
    try:
        b = await ipam.allocate(pool=POOL.name, node="node-b", owner="eph/cb/eth0")  # type: ignore[arg-type]
        await node.caught_up(ipam)
        [block] = [x for x in await ipam.blocks(POOL.name) if x.node == "node-b"]
        assert b.address in block.cidr
        assert via(node, block.cidr) == PEERS["node-b"]
        await ipam.rehome_block(pool=POOL.name, block=block.index, from_node="node-b",
                                to_node="node-c")
        await node.caught_up(ipam)
        assert via(node, block.cidr) == PEERS["node-c"]
        # this node's own block: a blackhole, from the same stream
        mine = await ipam.allocate(pool=POOL.name, node=NODE, owner="eph/ca/eth0")  # type: ignore[arg-type]
        await node.caught_up(ipam)
        [own] = [x for x in await ipam.blocks(POOL.name) if x.node == NODE]
        assert mine.address in own.cidr and node.routes()[own.cidr].kind == "blackhole"
        # heartbeats read no lease
        await node.agent.heartbeat.beat()
        await node.agent.heartbeat.beat()
        via_store = reads.calls["routing_snapshot"]
        assert reads.calls == {"routing_snapshot": via_store, "routing_view": 0, "lease": 0}
        assert via_store == (0 if feed else 1)  # through the feed the store is not read
        assert node.agent.follower.stats.snapshots == 1
    finally:
        await node.stop()


async def test_a_node_address_change_reaches_the_routes(ipam: RedisIpam, feed: str,
                                                        tmp_path: Path) -> None:
    await ipam.allocate(pool=POOL.name, node="node-b", owner="eph/cb/eth0")  # type: ignore[arg-type]
    node = Node(ipam, tmp_path, feed=feed)
    await node.start()
    try:
        await node.caught_up(ipam)
        [block] = await ipam.blocks(POOL.name)
        assert node.routes()[block.cidr].target == PEERS["node-b"]
        assert await publish(ipam.redis, "node-b", "192.0.2.22")
        assert not await publish(ipam.redis, "node-b", "192.0.2.22")  # unchanged: silent
        async with asyncio.timeout(10):
            await node.agent.routes.wait_until(
                lambda: node.routes()[block.cidr].target == "192.0.2.22")
    finally:
        await node.stop()


async def test_a_sticky_endpoint_is_fenced_by_the_rehome_in_the_stream(
        ipam: RedisIpam, feed: str, tmp_path: Path) -> None:
    res = await ipam.claim(K0, pool=POOL.name, node=NODE, holder="uid-c0")
    node = Node(ipam, tmp_path, feed=feed)
    await node.start()
    try:
        await node.add_pod("c0", "prod", "db-0")
        host = net(f"{res.address}/32")
        [rec] = node.records.all()
        assert rec.kind == "sticky" and not rec.fenced
        reads = Counted(ipam)
        await ipam.rehome_reservation(K0, to_node="node-b")
        await node.caught_up(ipam)
        [rec] = node.records.all()
        assert rec.fenced
        # its /32 now goes to the new home; nothing was read per lease
        assert node.routes()[host] == Route(host, "via", PEERS["node-b"])
        assert reads.calls["lease"] == 0
    finally:
        await node.stop()


async def test_an_agent_restarted_while_its_reservation_moved_fences_it(
        ipam: RedisIpam, feed: str, tmp_path: Path) -> None:
    """The re-home happened while no agent followed: the fresh snapshot at start does
    not carry it (it is not a route change: the block stays here), the one lease read
    per sticky endpoint at start does."""
    pod = ReservationKey.of("prod", "db", 1)
    await ipam.claim(pod, pool=POOL.name, node=NODE, holder="uid-c1")
    first = Node(ipam, tmp_path, feed=feed)
    await first.start()
    await first.add_pod("c1", "prod", "db-1")
    await first.stop()
    # the reservation moves on (epoch + 1) while the agent is down; its block stays
    moved = await ipam.rehome_reservation(pod, to_node="node-b")
    assert moved.epoch == 2
    second = Node(ipam, tmp_path, feed=feed, netlink=first.netlink, records=first.records)
    await second.start()
    try:
        [rec] = second.records.all()
        assert rec.fenced
        # and it stays fenced across the next restart (the record says so)
        await second.stop()
        third = Node(ipam, tmp_path, feed=feed, netlink=first.netlink, records=first.records)
        await third.start()
        [rec] = third.records.all()
        assert rec.fenced
        await third.stop()
    finally:
        await second.stop()


# ------------------------------------------------------------------ re-assert (16.2)

@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with RedisServer(port=free_port(), appendfsync="always") as server:
        yield server


@pytest.fixture(params=["store", "feed"])
async def restartable(request: pytest.FixtureRequest, own_server: RedisServer
                      ) -> AsyncIterator[tuple[RedisIpam, str]]:
    """A store that can restart, and '' or a feed replica in front of it."""
    client, _ = await open_redis(own_server.url)
    ipam = RedisIpam(client, actor="test")
    await ipam.apply_pool(POOL)
    for node, address in PEERS.items():
        await publish(ipam.redis, node, address)
    server = None
    if request.param == "feed":
        fc, _ = await open_redis(own_server.url)
        pc, _ = await open_redis(own_server.url)
        server = FeedServer(StoreSource(RedisIpam(fc), own=True), peers=StorePeers(pc),
                            host="127.0.0.1", port=0, resnapshot_spread=0)
        await server.start()
    try:
        yield ipam, (f"127.0.0.1:{server.port}" if server is not None else "")
    finally:
        if server is not None:
            await server.stop()
        await ipam.aclose()


async def lose_and_restart(ipam: RedisIpam, server: RedisServer, owner: OwnerKey,
                           then: Callable[[], Awaitable[object]] | None = None) -> None:
    """The store loses ``owner``'s record (as a failover to a replica that never got
    the write would), maybe hands out something meanwhile, and comes back as another
    store (new identity)."""
    lease = await ipam.lease(owner=owner)
    assert lease is not None
    await ipam.release(owner=owner, holder=lease.holder)
    if then is not None:
        await then()
    server.stop()
    server.start()
    assert await ipam.ping()


async def test_after_the_store_changed_identity_a_lost_record_is_restored(
        restartable: tuple[RedisIpam, str], own_server: RedisServer, tmp_path: Path) -> None:
    ipam, feed = restartable
    await ipam.claim(K0, pool=POOL.name, node=NODE, holder="uid-c0")
    node = Node(ipam, tmp_path, feed=feed)
    await node.start()
    try:
        await node.add_pod("c0", "prod", "db-0")
        await node.add_pod("e1", "default", "web")
        [eph] = [r for r in node.records.all() if r.kind == "ephemeral"]
        await lose_and_restart(ipam, own_server, OwnerKey(eph.owner))
        async with asyncio.timeout(30):
            await node.agent.routes.wait_until(lambda: node.agent.reasserter.runs >= 1)
        assert sorted(r.status for r in node.agent.reasserter.last) == ["ok", "restored"]
        back = await ipam.lease(owner=OwnerKey(eph.owner))
        assert back is not None and back.address == eph.addresses[0] and back.node == NODE
        get = node.agent.metrics.registry.get_sample_value
        assert get("stickyip_datapath_reasserted_total", {"result": "restored"}) == 1
        assert get("stickyip_datapath_reassert_conflicts") == 0
    finally:
        await node.stop()


async def test_after_the_store_changed_identity_a_taken_address_is_reported(
        restartable: tuple[RedisIpam, str], own_server: RedisServer, tmp_path: Path) -> None:
    ipam, feed = restartable
    reported: list[tuple[str, str, str, str]] = []

    class Events:
        async def post(self, *, namespace: str, pod: str, uid: str, reason: str,
                       message: str, warning: bool = True) -> None:
            reported.append((namespace, pod, reason, message))

    node = Node(ipam, tmp_path, feed=feed, events=Events())
    await node.start()
    try:
        await node.add_pod("e1", "default", "web")
        [eph] = node.records.all()

        async def hand_it_out() -> None:
            other = await ipam.allocate(pool=POOL.name, node=NODE,
                                        owner=OwnerKey("eph/other/eth0"))
            assert other.address == eph.addresses[0]

        await lose_and_restart(ipam, own_server, OwnerKey(eph.owner), then=hand_it_out)
        async with asyncio.timeout(30):
            await node.agent.routes.wait_until(lambda: node.agent.reasserter.runs >= 1)
        [res] = node.agent.reasserter.last
        assert (res.status, res.other) == ("conflict", "eph/other/eth0")
        # nothing changed in the store: the other owner keeps it, ours is not re-created
        assert await ipam.lease(owner=OwnerKey(eph.owner)) is None
        held = await ipam.owner_of(eph.addresses[0])
        assert held is not None and held.owner == "eph/other/eth0"
        get = node.agent.metrics.registry.get_sample_value
        assert get("stickyip_datapath_reassert_conflicts") == 1
        assert [(ns, pod, reason) for ns, pod, reason, _ in reported] == [
            ("default", "web", "StoreAddressConflict")]
        # the endpoint still serves (which pod keeps it is an operator's call)
        [rec] = node.records.all()
        assert not rec.fenced
    finally:
        await node.stop()
