"""The list+watch loop against a scripted API: which version each watch resumes from,
when it lists again, what the sink sees. (Against the real client and the API
stand-in: tests/integration/test_kube_watch_follows_the_api.py.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from plumbing.kube import errors
from plumbing.kube.rest import Obj, RestClient
from plumbing.kube.watch import Backoff, Mirror, Reflector


def pod(name: str, rv: int) -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)}}


class ScriptedStream:
    def __init__(self, events: list[Obj] | None, idle: threading.Event) -> None:
        self.events, self.idle = events, idle
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[Obj]:
        if self.events is None:  # the script is over: an idle watch until closed
            self.idle.set()
            self.closed.wait(10)
            return
        yield from self.events

    def close(self) -> None:
        self.closed.set()


class ScriptedApi(RestClient):
    """Answers lists and watches from scripts; records what was asked."""

    def __init__(self, lists: list[tuple[list[Obj], str]],
                 watches: list[list[Obj] | Exception]) -> None:
        self.lists, self.watches = lists, watches
        self.asked: list[str] = []
        self.idle = threading.Event()

    def list(self, path: str, **kw: Any) -> tuple[list[Obj], str]:
        self.asked.append("list")
        return self.lists.pop(0)

    def watch(self, path: str, resource_version: str, **kw: Any) -> Any:
        self.asked.append(f"watch@{resource_version}")
        if not self.watches:
            return ScriptedStream(None, self.idle)
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        return ScriptedStream(step, self.idle)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def replace(self, items: list[Obj]) -> None:
        self.seen.append(("LIST", ",".join(o["metadata"]["name"] for o in items)))

    def apply(self, etype: str, obj: Obj) -> None:
        self.seen.append((etype, obj["metadata"]["name"]))


def run_until_idle(api: ScriptedApi, sink: Any, **kw: Any) -> Reflector:
    reflector = Reflector(api, "/api/v1/pods", sink, backoff=Backoff(initial=0.001), **kw)
    thread = reflector.start()
    assert api.idle.wait(10), "the reflector never reached the end of the script"
    reflector.stop()
    thread.join(10)
    assert not thread.is_alive()
    return reflector


def test_list_then_watch_from_the_list_version_and_resume_from_the_last_event() -> None:
    api = ScriptedApi(lists=[([pod("a", 3)], "10")], watches=[
        [{"type": "ADDED", "object": pod("b", 11)},
         {"type": "MODIFIED", "object": pod("a", 12)},
         {"type": "DELETED", "object": pod("b", 13)}],
    ])
    sink = Recorder()
    reflector = run_until_idle(api, sink)
    assert sink.seen == [("LIST", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert api.asked == ["list", "watch@10", "watch@13"]
    assert reflector.resource_version == "13" and reflector.synced.is_set()


def test_bookmarks_move_the_version_without_reaching_the_sink() -> None:
    api = ScriptedApi(lists=[([], "10")], watches=[
        [{"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "57"}}}],
    ])
    sink = Recorder()
    reflector = run_until_idle(api, sink)
    assert sink.seen == [("LIST", "")]
    assert api.asked == ["list", "watch@10", "watch@57"] and reflector.bookmarks == 1


@pytest.mark.parametrize("error", [
    {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"},
    {"kind": "Status", "code": 500, "message": "too old resource version: 10 (40)"},
])
def test_an_expired_version_lists_again(error: Obj) -> None:
    api = ScriptedApi(lists=[([pod("a", 3)], "10"), ([pod("c", 41)], "41")], watches=[
        [{"type": "ERROR", "object": error}],
    ])
    sink = Recorder()
    reflector = run_until_idle(api, sink)
    assert api.asked == ["list", "watch@10", "list", "watch@41"]
    assert sink.seen == [("LIST", "a"), ("LIST", "c")] and reflector.lists == 2


def test_an_http_410_on_the_watch_request_lists_again() -> None:
    api = ScriptedApi(lists=[([], "10"), ([], "50")],
                      watches=[errors.Gone("watch: expired (HTTP 410)", status=410)])
    run_until_idle(api, Recorder())
    assert api.asked == ["list", "watch@10", "list", "watch@50"]


def test_other_errors_back_off_and_resume_from_the_same_version() -> None:
    api = ScriptedApi(lists=[([], "10")], watches=[
        errors.Unavailable("GET: cannot reach (connection refused)"),
        [{"type": "ADDED", "object": pod("a", 11)},
         {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd down"}}],
        errors.Forbidden("GET: forbidden (HTTP 403)", status=403),
    ])
    sink = Recorder()
    run_until_idle(api, sink)
    assert api.asked == ["list", "watch@10", "watch@10", "watch@11", "watch@11"]
    assert sink.seen == [("LIST", ""), ("ADDED", "a")]


def test_a_failing_consumer_loses_one_change_not_the_watch() -> None:
    api = ScriptedApi(lists=[([], "10")], watches=[
        [{"type": "ADDED", "object": pod("bad", 11)}, {"type": "ADDED", "object": pod("ok", 12)}],
    ])
    sink = Recorder()
    original = sink.apply

    def apply(etype: str, obj: Obj) -> None:
        if obj["metadata"]["name"] == "bad":
            raise RuntimeError("consumer bug")
        original(etype, obj)

    sink.apply = apply  # type: ignore[method-assign]
    run_until_idle(api, sink)
    assert sink.seen == [("LIST", ""), ("ADDED", "ok")]


def test_a_given_version_resumes_without_listing() -> None:
    api = ScriptedApi(lists=[], watches=[[{"type": "ADDED", "object": pod("a", 31)}]])
    sink = Recorder()
    run_until_idle(api, sink, resource_version="30")
    assert api.asked == ["watch@30", "watch@31"] and sink.seen == [("ADDED", "a")]


def test_stop_interrupts_a_backoff_pause() -> None:
    api = ScriptedApi(lists=[([], "10")], watches=[errors.Unavailable("down")] * 3)
    reflector = Reflector(api, "/api/v1/pods", Recorder(), backoff=Backoff(initial=600))
    thread = reflector.start()
    assert reflector.synced.wait(10)
    reflector.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    b = Backoff(initial=0.5, maximum=3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_mirror_turns_a_relist_into_the_changes_it_implies() -> None:
    seen: list[tuple[str, str, str]] = []
    mirror = Mirror(lambda t, o: seen.append((t, o["metadata"]["name"],
                                              o["metadata"]["resourceVersion"])))
    mirror.replace([pod("a", 1), pod("b", 2)])
    mirror.apply("MODIFIED", pod("a", 3))
    mirror.apply("ADDED", pod("c", 4))
    seen.clear()
    # A re-list after a gap: b vanished, a unchanged, c changed, d is new.
    mirror.replace([pod("a", 3), pod("c", 9), pod("d", 10)])
    assert sorted(seen) == [("ADDED", "d", "10"), ("DELETED", "b", "2"),
                            ("MODIFIED", "c", "9")]
    assert sorted(mirror.objects) == ["default/a", "default/c", "default/d"]
    mirror.apply("DELETED", pod("a", 11))
    assert "default/a" not in mirror.objects and seen[-1] == ("DELETED", "a", "11")
