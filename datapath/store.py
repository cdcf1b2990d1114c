"""Endpoint records on disk (one JSON file per attachment, written atomically), so a
restarted agent knows what it had set up and can diff it against the kernel."""

from __future__ import annotations

import contextlib
import os

from datapath.models import EndpointRecord


class EndpointStore:
    """The records, read once at start-up (:meth:`load`) and kept in memory; every
    change is saved before it counts. Subclasses may keep the saved form elsewhere
    by overriding :meth:`_saved`, :meth:`_save` and :meth:`_unsave`."""

    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "endpoints")
        os.makedirs(self.dir, exist_ok=True)
        self._cache: dict[tuple[str, str], EndpointRecord] = {}

    def load(self) -> list[EndpointRecord]:
        self._cache = {}
        for text in self._saved():
            rec = EndpointRecord.model_validate_json(text)
            self._cache[rec.key] = rec
        return list(self._cache.values())

    def get(self, container_id: str, ifname: str) -> EndpointRecord | None:
        return self._cache.get((container_id, ifname))

    def all(self) -> list[EndpointRecord]:
        return list(self._cache.values())

    def put(self, rec: EndpointRecord) -> None:
        self._save(rec.key, rec.model_dump_json())
        self._cache[rec.key] = rec

    def delete(self, rec: EndpointRecord) -> None:
        self._unsave(rec.key)
        self._cache.pop(rec.key, None)

    # ------------------------------------------------------------ the saved form

    def _path(self, key: tuple[str, str]) -> str:
        return os.path.join(self.dir, f"{key[0]}@{key[1]}.json")

    def _saved(self) -> list[str]:
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".json"):
                with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                    out.append(f.read())
        return out

    def _save(self, key: tuple[str, str], text: str) -> None:
        path = self._path(key)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    def _unsave(self, key: tuple[str, str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))
