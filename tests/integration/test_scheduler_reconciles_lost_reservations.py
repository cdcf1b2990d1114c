"""The cluster holds the truth about live addresses (issue 16). A store that comes back
without the reservation of a running pod (restarted from a state that lacks it) is
reconciled by the scheduler: the reservation is restored for that pod, and the
address is never handed to anyone else — not to the new pods the scheduler places
meanwhile, not to other writers allocating on that node or claiming exactly that
address while it is reconciled (the store pauses new addresses until then), not to
a later claim. An address the store gives to another pod is a conflict:
quarantined, and reported as an Event and a metric."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from ipam import (
    AddressTaken,
    PoolSpec,
    RedisIpam,
    ReservationKey,
    ReservationState,
    contract,
    ephemeral_owner,
)
from ipam.errors import AllocationPaused
from kubestandin import KubeStandIn
from scheduler.app import SchedulerApp
from tests.integration.test_scheduler_cache import (
    has_ip,
    placement,
    replica,
    standin,
    sts,
    wait_bound,
)
from tests.integration.test_scheduler_failover import events_for
from tests.support.redis_server import RedisServer


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    with RedisServer() as s:
        yield s


async def store(url: str) -> RedisIpam:
    return RedisIpam(aioredis.Redis.from_url(url), actor="test")


def offline(server: RedisServer) -> RedisServer:
    """A second redis-server on the same data directory and another port: the store
    as it is on disk, out of the scheduler's reach."""
    side = RedisServer()
    side.dir.rmdir()
    side.dir = server.dir
    return side


@asynccontextmanager
async def running_db(server: RedisServer, replicas: int
                     ) -> AsyncIterator[tuple[RedisIpam, KubeStandIn, SchedulerApp, Any]]:
    """A pool, one node, a scheduler and StatefulSet db running with its addresses."""
    ipam = await store(server.url)
    await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28))
    try:
        async with standin(1) as api, replica(api, server.url) as app:
            await api.create(sts("db", replicas))
            yield ipam, api, app, await wait_bound(api, "db", replicas, check=has_ip)
    finally:
        await ipam.aclose()


async def wait_for_epoch(app: SchedulerApp, name: str, epoch: int) -> None:
    """The scheduler's cache has seen pod ``name`` at ``epoch``."""
    for _ in range(400):
        pod = app.cache.pod_by_ref(f"default/{name}")
        if pod is not None and pod.annotations.get(contract.ANN_EPOCH) == str(epoch):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the scheduler never saw {name} at epoch {epoch}")


async def test_a_lost_reservation_is_restored_for_its_pod_and_never_handed_out(
        server: RedisServer) -> None:
    async with running_db(server, 3) as (_, api, app, pods):
        before = placement(pods)
        node, lost_ip = before["db-1"]
        uid = pods["db-1"]["metadata"]["uid"]
        key = ReservationKey.parse("default/db/1")

        # db-1 runs at a later epoch (it was re-homed before): the restored record
        # keeps it, so a later re-home still fences this pod
        await api.patch("v1", "Pod", "db-1", {"metadata": {"annotations": {
            contract.ANN_EPOCH: "3"}}})
        await wait_for_epoch(app, "db-1", 3)

        # The store goes away; while it is away, new pods wait to be placed ...
        server.stop()
        await api.create(sts("new", 4))
        # ... and it comes back from a state without db-1's reservation (as a failover
        # to a replica that never got it, or a restore of an older backup, would).
        side = offline(server).start()
        try:
            other = await store(side.url)
            await other.release(owner=key.owner, force=True)   # quarantined ...
            await other.confirm_holder_gone(key.owner, holder=uid)  # ... and gone
            assert await other.reservation(key) is None
            await other.aclose()
        finally:
            side.stop()
        server.start()  # same port, same data: another identity, db-1's record missing
        fresh = await store(server.url)  # the test's own connections died with the server

        # Meanwhile other writers want addresses on that node: an agent's ephemeral
        # leases, a claim of exactly that address for another ordinal.
        got: list[str] = []
        paused = 0
        stop = asyncio.Event()

        async def others() -> None:
            nonlocal paused
            i = 0
            while not stop.is_set() and len(got) < 3:
                try:
                    lease = await fresh.allocate(pool="pool-a", node=node,
                                                 owner=ephemeral_owner(f"c{i}"))
                    got.append(str(lease.address))
                    i += 1
                except AllocationPaused:
                    paused += 1
                with contextlib.suppress(AllocationPaused, AddressTaken):
                    taken = await fresh.claim(ReservationKey.parse("default/thief/0"),
                                              pool="pool-a", address=lost_ip)
                    got.append(f"claimed {taken.address}")

        writers = asyncio.create_task(others())

        # The scheduler noticed the new identity, restored db-1 for its pod, and only
        # then placed the new pods, on the same node, without that address.
        new = await wait_bound(api, "new", 4, within=20, check=has_ip)
        await asyncio.wait_for(writers, 20)
        stop.set()
        assert paused > 0, "the other writers were held while the store was reconciled"
        assert len(got) == 3 and lost_ip not in got and not any(
            g.startswith("claimed") for g in got), got
        res = await fresh.reservation(key)
        assert res is not None and str(res.address) == lost_ip and res.node == node
        assert res.holder == uid and res.state is ReservationState.BOUND
        assert res.epoch == 3, "restored at the epoch the pod runs at"
        assert lost_ip not in {ip for _, ip in placement(new).values()}
        assert placement(await wait_bound(api, "db", 3)) == before
        report = app.reconciler.last
        assert report is not None and report.restored == [key.owner]
        assert "store changed" in report.why
        msgs = await events_for(api, "db-1", "IPAddressRestored")
        assert any(lost_ip in m and "restored sts/default/db/1" in m for m in msgs), msgs
        assert app.metrics.registry.get_sample_value("stickyip_reconcile_restored_total") == 1
        assert app.metrics.registry.get_sample_value("stickyip_reconcile_conflicts") == 0
        # and nobody else can take it now
        with pytest.raises(AddressTaken):
            await fresh.claim(ReservationKey.parse("default/thief/0"), pool="pool-a",
                              address=lost_ip)
        await fresh.aclose()


async def test_an_address_given_to_another_pod_is_a_quarantined_reported_conflict(
        server: RedisServer) -> None:
    async with running_db(server, 2) as (ipam, api, app, pods):
        _, ip = placement(pods)["db-1"]
        key = ReservationKey.parse("default/db/1")
        uid = pods["db-1"]["metadata"]["uid"]
        # db-1's reservation is lost and its address then claimed by another ordinal,
        # whose pod runs (bound) elsewhere in the store's view
        await ipam.release(owner=key.owner, force=True)
        await ipam.confirm_holder_gone(key.owner, holder=uid)
        thief = ReservationKey.parse("default/thief/0")
        await ipam.claim(thief, pool="pool-a", address=ip, node="node-0", holder="u-thief",
                         pod="default/thief-0")

        app.reconciler.request("test")
        report = await app.reconciler.wait_passes(app.reconciler.passes + 1)
        assert report is not None and report.quarantined == [thief.owner]
        assert [f.verdict.value for f in report.conflicts] == ["conflict"]
        held = await ipam.reservation(thief)
        assert held is not None and held.state is ReservationState.QUARANTINED
        assert str(held.address) == ip, "the address stays taken"
        assert await ipam.reservation(key) is None, "not restored while another holds it"
        msgs = await events_for(api, "db-1", "IPAddressConflict")
        assert any(ip in m and "quarantined sts/default/thief/0" in m for m in msgs), msgs
        assert app.metrics.registry.get_sample_value("stickyip_reconcile_conflicts") == 1

        # the other holder's pod does not exist: the GC frees the quarantined
        # reservation and asks for a pass at once, which restores db-1
        passes = app.reconciler.passes
        done = await app.gc.run_once()
        assert [(a.op.value, a.owner) for a in done] == [("holder_gone", thief.owner)]
        report = await asyncio.wait_for(app.reconciler.wait_passes(passes + 1), 10)
        assert report is not None and report.restored == [key.owner]
        res = await ipam.reservation(key)
        assert res is not None and str(res.address) == ip and res.holder == uid
        assert app.metrics.registry.get_sample_value("stickyip_reconcile_conflicts") == 0
