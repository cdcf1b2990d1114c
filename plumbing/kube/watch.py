"""List+watch of one Kubernetes collection, as client-go's reflector does it: list
(remembering the list's resourceVersion), watch from that version with bookmarks,
hand every change to a :class:`Sink`, resume after a broken or ended stream from the
last version seen, list again when that version is too old (410 Gone), and back off
while the API server is unreachable.

Usage (one thread per collection; the official client blocks)::

    reflector = Reflector(RestClient(api_client(settings)), "/api/v1/pods", sink,
                          field_selector="spec.nodeName=node-1")
    thread = reflector.start()          # or run reflector.run() in a thread of yours
    reflector.synced.wait(10)           # the first list reached the sink
    ...
    reflector.stop(); thread.join()

A :class:`Sink` gets ``replace(items)`` after every list — the first one and each
re-list: the complete current collection, so objects it does not hold were deleted
meanwhile (this is the resync point) — and ``apply(type, object)`` for each ADDED,
MODIFIED or DELETED event. :class:`Mirror` is a sink that keeps the objects and turns
re-lists into per-object events, for consumers that only want events;
:class:`LoopSink` hands the calls to an asyncio loop instead of the watch thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from plumbing.kube import errors
from plumbing.kube.rest import Obj, RestClient

__all__ = ["Backoff", "LoopSink", "Mirror", "Reflector", "Sink", "object_key"]

log = logging.getLogger("stickyip.kube.watch")

#: Watch event types a sink receives (BOOKMARK and ERROR are handled here).
CHANGES = ("ADDED", "MODIFIED", "DELETED")


class Sink(Protocol):
    def replace(self, items: list[Obj]) -> None:
        """The whole collection as just listed (objects not in it are gone)."""

    def apply(self, etype: str, obj: Obj) -> None:
        """One change: ``etype`` is ADDED, MODIFIED or DELETED."""


def object_key(obj: Obj) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


@dataclass
class Backoff:
    """Pause between failed attempts: ``initial``, doubling up to ``maximum``; reset
    after a watch that worked."""

    initial: float = 0.2
    maximum: float = 10.0
    _next: float = 0.0

    def next(self) -> float:
        self._next = min(self.maximum, self._next * 2) if self._next else self.initial
        return self._next

    def reset(self) -> None:
        self._next = 0.0


class Reflector:
    """Keeps a :class:`Sink` in step with one collection (``path``, e.g.
    ``/api/v1/pods`` or ``/apis/apps/v1/statefulsets``), optionally filtered by label
    and field selectors. ``resource_version``: start by resuming a watch from there
    instead of listing (a consumer that kept its state across a restart)."""

    def __init__(self, rest: RestClient, path: str, sink: Sink, *, name: str = "",
                 label_selector: str | None = None, field_selector: str | None = None,
                 watch_timeout: int = 300, page_size: int = 500,
                 backoff: Backoff | None = None, resource_version: str = "") -> None:
        self.rest, self.path, self.sink = rest, path, sink
        self.name = name or path
        self.label_selector, self.field_selector = label_selector, field_selector
        self.watch_timeout, self.page_size = watch_timeout, page_size
        self.backoff = backoff or Backoff()
        #: The last resourceVersion seen (list, event or bookmark): where a watch resumes.
        self.resource_version = resource_version
        self.lists = 0
        self.bookmarks = 0
        #: Set once the first list reached the sink.
        self.synced = threading.Event()
        self._stopped = threading.Event()
        self._stream_lock = threading.Lock()
        self._stream: Any = None

    # ------------------------------------------------------------ control

    def start(self) -> threading.Thread:
        """Run in a new daemon thread (named ``watch-<name>``)."""
        thread = threading.Thread(target=self.run, name=f"watch-{self.name}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """End ``run`` soon: closes the open watch and interrupts a backoff pause.
        Safe from any thread."""
        self._stopped.set()
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # --------------------------------------------------------------- loop

    def run(self) -> None:
        """List and watch until :meth:`stop`; never raises a Kubernetes error."""
        while not self.stopped:
            try:
                if not self.resource_version:
                    self._list()
                self._watch()
                self.backoff.reset()
            except errors.Gone as e:
                log.info("resourceVersion too old; listing again",
                         extra={"collection": self.name, "error": e.detail})
                self.resource_version = ""
            except errors.KubeError as e:
                if self.stopped:
                    return
                pause = self.backoff.next()
                log.warning("list/watch failed; retrying",
                            extra={"collection": self.name, "error": str(e),
                                   "retry_in_s": pause})
                self._stopped.wait(pause)

    def _list(self) -> None:
        items, rv = self.rest.list(self.path, label_selector=self.label_selector,
                                   field_selector=self.field_selector,
                                   page_size=self.page_size)
        if self.stopped:
            return
        self._deliver(self.sink.replace, items)
        self.resource_version = rv
        self.lists += 1
        self.synced.set()

    def _deliver(self, fn: Callable[..., None], *args: object) -> None:
        # A consumer's bug loses that one change, not the whole watch.
        try:
            fn(*args)
        except Exception:
            log.exception("the consumer of a watch failed on a change",
                          extra={"collection": self.name})

    def _watch(self) -> None:
        stream = self.rest.watch(self.path, self.resource_version,
                                 timeout_seconds=self.watch_timeout,
                                 label_selector=self.label_selector,
                                 field_selector=self.field_selector)
        with self._stream_lock:
            if self.stopped:
                stream.close()
                return
            self._stream = stream
        try:
            for event in stream:
                if self.stopped:
                    return
                etype, obj = event.get("type", ""), event.get("object") or {}
                if etype == "ERROR":
                    raise errors.from_status(None, obj, f"watch {self.path}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if etype == "BOOKMARK":
                    self.bookmarks += 1
                elif etype in CHANGES:
                    self._deliver(self.sink.apply, etype, obj)
                if rv:
                    self.resource_version = str(rv)
        finally:
            with self._stream_lock:
                self._stream = None


class Mirror:
    """A :class:`Sink` that keeps the collection by :func:`object_key` and calls
    ``handler(type, object)`` only for changes: a re-list becomes DELETED (with the
    last known object) for what vanished, ADDED for what is new and MODIFIED for what
    changed, so the handler never needs to reconcile a whole list itself."""

    def __init__(self, handler: Callable[[str, Obj], None]) -> None:
        self.handler = handler
        self.objects: dict[str, Obj] = {}

    def replace(self, items: list[Obj]) -> None:
        fresh = {object_key(o): o for o in items}
        for key in [k for k in self.objects if k not in fresh]:
            self.handler("DELETED", self.objects.pop(key))
        for key, obj in fresh.items():
            old = self.objects.get(key)
            self.objects[key] = obj
            if old is None:
                self.handler("ADDED", obj)
            elif _rv(old) != _rv(obj) or not _rv(obj):
                self.handler("MODIFIED", obj)

    def apply(self, etype: str, obj: Obj) -> None:
        key = object_key(obj)
        if etype == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.handler(etype, obj)


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class LoopSink:
    """Forwards a sink's calls from the watch thread to ``sink`` on an asyncio loop,
    so the consumer's state is only ever touched by that loop (no locks). Calls made
    after the loop closed are dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Sink) -> None:
        self.loop, self.sink = loop, sink

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            self.loop.call_soon_threadsafe(fn, *args)

    def replace(self, items: list[Obj]) -> None:
        self._post(self.sink.replace, items)

    def apply(self, etype: str, obj: Obj) -> None:
        self._post(self.sink.apply, etype, obj)
