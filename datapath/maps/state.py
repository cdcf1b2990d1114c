"""Map entries as plain tuples, the interface the service and policy managers write
through (:class:`MapWriter`), an in-memory fake of it, and the diff between two
desired states. Pure: no bcc, no netlink.

A key or value is the tuple of its ctypes fields in declaration order (see
the map modules in :mod:`datapath.maps`), so desired states compare and diff as plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

Key = tuple[int, ...]
Value = tuple[int, ...]
#: map name -> key -> value
MapState = dict[str, dict[Key, Value]]


@dataclass(slots=True)
class MapOps:
    """What to write so that one state becomes another: upserts first, then deletes."""

    upserts: list[tuple[str, Key, Value]] = field(default_factory=list)
    deletes: list[tuple[str, Key]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)


def diff(old: Mapping[str, Mapping[Key, Value]], new: Mapping[str, Mapping[Key, Value]],
         *, order: Iterable[str] = ()) -> MapOps:
    """Entries to upsert (new or changed) and delete (gone), maps in ``order`` first."""
    ops = MapOps()
    names = list(dict.fromkeys([*order, *new, *old]))
    for name in names:
        o = old.get(name, {})
        n = new.get(name, {})
        for k, v in n.items():
            if o.get(k) != v:
                ops.upserts.append((name, k, v))
    for name in reversed(names):
        o = old.get(name, {})
        n = new.get(name, {})
        for k in o:
            if k not in n:
                ops.deletes.append((name, k))
    return ops


class MapWriter(Protocol):
    def update(self, name: str, key: Key, value: Value) -> None: ...

    def delete(self, name: str, key: Key) -> None: ...

    def lookup(self, name: str, key: Key) -> Value | None: ...

    def items(self, name: str) -> list[tuple[Key, Value]]: ...


class MemoryMaps:
    """A :class:`MapWriter` over dicts, for unit tests and dry runs; counts writes."""

    def __init__(self) -> None:
        self.maps: MapState = {}
        self.writes = 0

    def update(self, name: str, key: Key, value: Value) -> None:
        self.maps.setdefault(name, {})[key] = value
        self.writes += 1

    def delete(self, name: str, key: Key) -> None:
        self.maps.get(name, {}).pop(key, None)
        self.writes += 1

    def lookup(self, name: str, key: Key) -> Value | None:
        return self.maps.get(name, {}).get(key)

    def items(self, name: str) -> list[tuple[Key, Value]]:
        return list(self.maps.get(name, {}).items())


def apply(writer: MapWriter, ops: MapOps) -> None:
    for name, k, v in ops.upserts:
        writer.update(name, k, v)
    for name, k in ops.deletes:
        writer.delete(name, k)
