"""In-memory object store with one global resourceVersion counter and a bounded event
history, which is what watch resumption and 410 Gone are made of (as etcd provides)."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubestandin.errors import Gone
from kubestandin.resources import RESOURCES, Resource

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class Event:
    """A committed change: ``type`` is ADDED, MODIFIED or DELETED; ``old`` is the prior state."""

    type: str
    rv: int
    resource: Resource
    obj: Obj
    old: Obj | None


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


class Store:
    """All objects by resource and (namespace, name); every change gets the next revision."""

    def __init__(self, *, history_size: int = 20000) -> None:
        self.rv = 0
        self._objects: dict[Resource, dict[Key, Obj]] = {r: {} for r in RESOURCES}
        self._history: deque[Event] = deque()
        self._history_size = history_size
        # Events at or below this revision are no longer in the history.
        self._floor = 0
        self._subscribers: set[asyncio.Queue[Event]] = set()

    # --- reads (return deep copies: callers may mutate them) ---
    def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        obj = self._objects[res].get((namespace if res.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def peek(self, res: Resource, namespace: str, name: str) -> Obj | None:
        """Like ``get`` without the copy; the caller must not mutate the result."""
        return self._objects[res].get((namespace if res.namespaced else "", name))

    def iter(self, res: Resource, namespace: str | None = None) -> Iterator[Obj]:
        """Stored objects (not copies) in (namespace, name) order."""
        for key in sorted(self._objects[res]):
            if namespace is None or not res.namespaced or key[0] == namespace:
                yield self._objects[res][key]

    def all_resources(self) -> Iterator[tuple[Resource, Obj]]:
        for res, objs in self._objects.items():
            for obj in list(objs.values()):
                yield res, obj

    # --- writes: each assigns the next revision and publishes one event ---
    def put(self, res: Resource, obj: Obj, *, created: bool) -> Obj:
        old = self._objects[res].get(key_of(obj))
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self._objects[res][key_of(stored)] = stored
        self._publish(Event("ADDED" if created else "MODIFIED", self.rv, res, stored, old))
        return copy.deepcopy(stored)

    def remove(self, res: Resource, namespace: str, name: str) -> Obj:
        old = self._objects[res].pop((namespace if res.namespaced else "", name))
        self.rv += 1
        final = copy.deepcopy(old)
        # The DELETED event carries the revision of the deletion, as etcd reports it.
        final["metadata"]["resourceVersion"] = str(self.rv)
        self._publish(Event("DELETED", self.rv, res, final, old))
        return copy.deepcopy(final)

    def _publish(self, event: Event) -> None:
        if len(self._history) >= self._history_size:
            self._floor = self._history.popleft().rv
        self._history.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)

    # --- watch support ---
    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)

    def events_after(self, rv: int) -> list[Event]:
        """Events newer than ``rv``; Gone when some of them were already compacted away."""
        if rv < self._floor:
            raise Gone(f"too old resource version: {rv} ({self._floor + 1})")
        return [e for e in self._history if e.rv > rv]

    def compact(self) -> None:
        """Forget the whole event history, like an etcd compaction at the current revision."""
        self._history.clear()
        self._floor = self.rv
