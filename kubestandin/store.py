"""In-memory object store with one global resourceVersion counter and a bounded event
history, which is what watch resumption and 410 Gone are made of (as etcd provides)."""

from __future__ import annotations

import asyncio
import bisect
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


def clone(value: Any) -> Any:
    """Deep copy of JSON data (several times faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


class Store:
    """All objects by resource and (namespace, name); every change gets the next revision."""

    def __init__(self, *, history_size: int = 20000) -> None:
        self._pods = next(r for r in RESOURCES if r.kind == "Pod" and not r.group)
        self.rv = 0
        self._objects: dict[Resource, dict[Key, Obj]] = {r: {} for r in RESOURCES}
        # Keys in (namespace, name) order, rebuilt only after a key was added or removed
        # (never changed in place, so an iteration keeps the list it started with).
        self._sorted: dict[Resource, list[Key] | None] = {r: None for r in RESOURCES}
        self._history: deque[Event] = deque()
        self._history_size = history_size
        # Events at or below this revision are no longer in the history.
        self._floor = 0
        self._subscribers: set[asyncio.Queue[Event]] = set()
        # Indexes for the controllers and the owner cascade.
        self._owned: dict[str, set[tuple[Resource, Key]]] = {}
        self._pods_on_node: dict[str, set[Key]] = {}

    # --- reads (return deep copies: callers may mutate them) ---
    def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        obj = self._objects[res].get((namespace if res.namespaced else "", name))
        return clone(obj) if obj is not None else None

    def peek(self, res: Resource, namespace: str, name: str) -> Obj | None:
        """Like ``get`` without the copy; the caller must not mutate the result."""
        return self._objects[res].get((namespace if res.namespaced else "", name))

    def _keys(self, res: Resource) -> list[Key]:
        keys = self._sorted[res]
        if keys is None:
            keys = self._sorted[res] = sorted(self._objects[res])
        return keys

    def count_after(self, res: Resource, namespace: str | None, after: Key) -> int:
        """How many objects (of ``namespace``, if given) sort after ``after``."""
        keys = self._keys(res)
        end = len(keys)
        if namespace is not None and res.namespaced:
            end = bisect.bisect_left(keys, (namespace + "\x00", ""))
        return max(0, end - bisect.bisect_right(keys, after))

    def iter(self, res: Resource, namespace: str | None = None, *,
             after: Key | None = None) -> Iterator[Obj]:
        """Stored objects (not copies) in (namespace, name) order; with ``after``, only
        those after that key (a list's continue point: found by bisection, so a page
        costs what it holds, not the whole collection)."""
        keys = self._keys(res)
        objects = self._objects[res]
        scoped = namespace is not None and res.namespaced
        start = (namespace or "", "") if scoped else ("", "")
        i = bisect.bisect_left(keys, max(start, after) if after is not None else start)
        if after is not None and i < len(keys) and keys[i] == after:
            i += 1
        for key in keys[i:] if i else keys:
            if scoped and key[0] != namespace:
                return
            obj = objects.get(key)
            if obj is not None:
                yield obj

    def all_resources(self) -> Iterator[tuple[Resource, Obj]]:
        for res, objs in self._objects.items():
            for obj in list(objs.values()):
                yield res, obj

    def owned_by(self, uid: str) -> list[tuple[Resource, Obj]]:
        """Objects whose ownerReferences name ``uid`` (not copies)."""
        return [(res, self._objects[res][key])
                for res, key in sorted(self._owned.get(uid, ()), key=lambda rk: rk[1])]

    def pods_on_node(self, node: str) -> list[Obj]:
        """Pods whose ``spec.nodeName`` is ``node`` (not copies)."""
        pods = self._objects[self._pods]
        return [pods[key] for key in sorted(self._pods_on_node.get(node, ()))]

    def _index(self, res: Resource, obj: Obj, add: bool) -> None:
        key = key_of(obj)
        for ref in obj["metadata"].get("ownerReferences") or ():
            owned = self._owned.setdefault(str(ref.get("uid")), set())
            if add:
                owned.add((res, key))
            else:
                owned.discard((res, key))
                if not owned:
                    del self._owned[str(ref.get("uid"))]
        node = (obj.get("spec") or {}).get("nodeName") if res is self._pods else None
        if node:
            on_node = self._pods_on_node.setdefault(node, set())
            if add:
                on_node.add(key)
            else:
                on_node.discard(key)
                if not on_node:
                    del self._pods_on_node[node]

    # --- writes: each assigns the next revision and publishes one event ---
    def put(self, res: Resource, obj: Obj, *, created: bool) -> Obj:
        old = self._objects[res].get(key_of(obj))
        self.rv += 1
        stored: Obj = clone(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        if old is not None:
            self._index(res, old, add=False)
        else:
            self._sorted[res] = None
        self._objects[res][key_of(stored)] = stored
        self._index(res, stored, add=True)
        self._publish(Event("ADDED" if created else "MODIFIED", self.rv, res, stored, old))
        return clone(stored)  # type: ignore[no-any-return]

    def remove(self, res: Resource, namespace: str, name: str) -> Obj:
        old = self._objects[res].pop((namespace if res.namespaced else "", name))
        self._sorted[res] = None
        self._index(res, old, add=False)
        self.rv += 1
        final: Obj = clone(old)
        # The DELETED event carries the revision of the deletion, as etcd reports it.
        final["metadata"]["resourceVersion"] = str(self.rv)
        self._publish(Event("DELETED", self.rv, res, final, old))
        return clone(final)  # type: ignore[no-any-return]

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
