"""Endpoint records on disk (one JSON file per attachment, written atomically), so a
restarted agent knows what it had set up and can diff it against the kernel."""

from __future__ import annotations

import contextlib
import os

from datapath.models import EndpointRecord


class EndpointStore:
    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "endpoints")
        os.makedirs(self.dir, exist_ok=True)
        self._cache: dict[tuple[str, str], EndpointRecord] = {}

    def _path(self, key: tuple[str, str]) -> str:
        return os.path.join(self.dir, f"{key[0]}@{key[1]}.json")

    def load(self) -> list[EndpointRecord]:
        self._cache.clear()
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                rec = EndpointRecord.model_validate_json(f.read())
            self._cache[rec.key] = rec
        return list(self._cache.values())

    def get(self, container_id: str, ifname: str) -> EndpointRecord | None:
        return self._cache.get((container_id, ifname))

    def all(self) -> list[EndpointRecord]:
        return list(self._cache.values())

    def put(self, rec: EndpointRecord) -> None:
        path = self._path(rec.key)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(rec.model_dump_json())
        os.replace(tmp, path)
        self._cache[rec.key] = rec

    def delete(self, rec: EndpointRecord) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(rec.key))
        self._cache.pop(rec.key, None)
