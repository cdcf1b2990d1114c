"""plumbing's list+watch through the real ``kubernetes`` client against the API stand-in:
events in order, bookmarks, 410 Gone and re-lists, an API server restart, selectors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from kubestandin import KubeStandIn, objects
from plumbing.kube.client import KubeSettings, api_client
from plumbing.kube.errors import Unavailable
from plumbing.kube.rest import Obj, RestClient
from plumbing.kube.watch import Backoff, Reflector


class Recorder:
    """A sink that keeps what it was given, for a test thread to read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []

    def replace(self, items: list[Obj]) -> None:
        with self.lock:
            self.lists.append(sorted(o["metadata"]["name"] for o in items))

    def apply(self, etype: str, obj: Obj) -> None:
        with self.lock:
            self.events.append((etype, obj["metadata"]["name"]))

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.events)


@asynccontextmanager
async def reflecting(api: KubeStandIn, path: str = "/api/v1/pods", **kw: Any
                     ) -> AsyncIterator[tuple[Reflector, Recorder]]:
    sink = Recorder()
    rest = RestClient(api_client(KubeSettings(kube_host=api.url)), timeout=5)
    reflector = Reflector(rest, path, sink, watch_timeout=30,
                          backoff=Backoff(initial=0.05, maximum=0.2), **kw)
    thread = reflector.start()
    try:
        if not kw.get("resource_version"):
            await asyncio.to_thread(reflector.synced.wait, 10)
            assert reflector.synced.is_set()
        yield reflector, sink
    finally:
        reflector.stop()
        await asyncio.to_thread(thread.join, 10)
        rest.api.close()  # type: ignore[no-untyped-call]
    assert not thread.is_alive(), "stop() ends the watch thread"


async def test_list_then_added_modified_and_deleted_in_order() -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        await api.create(objects.pod("before"))
        async with reflecting(api) as (reflector, sink):
            assert sink.lists == [["before"]] and reflector.lists == 1
            await api.create(objects.pod("a"))
            await api.patch("v1", "Pod", "a", {"metadata": {"labels": {"x": "1"}}})
            await api.delete("v1", "Pod", "before")
            want = [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "before")]
            await api.wait_for(lambda _: sink.seen() == want)
            await api.wait_for(
                lambda a: reflector.resource_version == str(a.resource_version))


async def test_bookmarks_advance_the_resource_version() -> None:
    async with KubeStandIn(statefulset_controller=False, bookmark_interval=0.05) as api, \
            reflecting(api) as (reflector, sink):
        listed = int(reflector.resource_version)
        for i in range(3):  # changes to another collection: no pod event, only bookmarks
            await api.create(objects.node(f"node-{i}"))
        await api.wait_for(lambda a: reflector.resource_version == str(a.resource_version))
        assert int(reflector.resource_version) == listed + 3
        assert reflector.bookmarks >= 1 and sink.seen() == [] and reflector.lists == 1


async def test_a_stale_version_gets_410_and_the_collection_is_listed_again() -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        await api.create(objects.pod("old"))
        stale = str(api.resource_version)
        await api.create(objects.pod("new"))
        await api.delete("v1", "Pod", "old")
        api.compact()
        async with reflecting(api, resource_version=stale) as (reflector, sink):
            await api.wait_for(lambda _: sink.lists == [["new"]])
            assert reflector.lists == 1 and reflector.synced.is_set()
            await api.create(objects.pod("after"))  # and it watches again afterwards
            await api.wait_for(lambda _: sink.seen() == [("ADDED", "after")])


async def test_an_api_server_restart_is_survived_without_a_relist(
        caplog: pytest.LogCaptureFixture) -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        await api.create(objects.pod("a"))
        probe = RestClient(api_client(KubeSettings(kube_host=api.url)), timeout=2)
        async with reflecting(api) as (reflector, sink):
            async with api.outage():  # the watch breaks, reconnects are refused
                with pytest.raises(Unavailable, match="connection refused"):
                    await asyncio.to_thread(probe.get, "/version")
                await api.create(objects.pod("b"))
                await api.delete("v1", "Pod", "a")
                await api.wait_for(lambda _: any(
                    r.name == "stickyip.kube.watch" and "retrying" in r.getMessage()
                    for r in caplog.records))
            await api.wait_for(lambda _: sink.seen() == [("ADDED", "b"), ("DELETED", "a")])
            assert reflector.lists == 1, "resumed from its version, no new list"
            await api.create(objects.pod("c"))
            await api.wait_for(lambda _: sink.seen()[-1:] == [("ADDED", "c")])


async def test_a_restart_after_compaction_lists_again_and_sees_deletions() -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        await api.create(objects.pod("a"))
        await api.create(objects.pod("b"))
        async with reflecting(api) as (reflector, sink):
            async with api.outage():
                await api.delete("v1", "Pod", "a")
                await api.create(objects.pod("c"))
                api.compact()  # the history it would resume from is gone: 410
            await api.wait_for(lambda _: len(sink.lists) == 2)
            assert sink.lists == [["a", "b"], ["b", "c"]] and reflector.lists == 2
            assert sink.seen() == []  # the deletion of a is known from the list alone


async def test_selectors_limit_the_collection_and_objects_that_leave_are_deleted() -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        await api.create(objects.pod("web-0", labels={"app": "web"}))
        await api.create(objects.pod("db-0", labels={"app": "db"}))
        async with reflecting(api, label_selector="app=web") as (_, sink):
            assert sink.lists == [["web-0"]]
            await api.create(objects.pod("web-1", labels={"app": "web"}))
            await api.create(objects.pod("db-1", labels={"app": "db"}))
            await api.patch("v1", "Pod", "web-0", {"metadata": {"labels": {"app": "old"}}})
            await api.wait_for(lambda _: sink.seen() == [("ADDED", "web-1"),
                                                         ("DELETED", "web-0")])


async def test_lists_are_paged_and_a_cluster_scoped_collection_works() -> None:
    async with KubeStandIn(statefulset_controller=False) as api:
        for i in range(7):
            await api.create(objects.node(f"node-{i}"))
        async with reflecting(api, "/api/v1/nodes", page_size=3) as (reflector, sink):
            assert sink.lists == [[f"node-{i}" for i in range(7)]]
            assert reflector.resource_version == str(api.resource_version)
