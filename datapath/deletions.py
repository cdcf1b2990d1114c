"""The agent's side of the CNI deletion queue (the plugin's side, and the file format,
are in :mod:`datapath.cni`): DELs the plugin could not hand to the agent, replayed
when the agent starts and, should any remain (one failed, or was written while the
start took longer than the plugin waits), on every later pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from datapath import cni

log = logging.getLogger("stickyip.datapath")


@dataclass(frozen=True, slots=True)
class QueuedDelete:
    path: str
    request: dict[str, Any]


class DeleteQueue:
    """The queue directory on the node's disk."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self._lock: int | None = None

    async def hold(self) -> None:
        """Take the queue exclusively (waiting for plugins writing to it): from now on
        a DEL that finds no agent waits for :meth:`release` and then reaches it."""
        self._lock = await asyncio.to_thread(cni.lock_queue, self.dir, exclusive=True,
                                             wait=cni.QUEUE_LOCK_WAIT)
        if self._lock is None:
            log.warning("deletion queue stayed locked; replaying it without the lock",
                        extra={"dir": self.dir})

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def entries(self) -> list[QueuedDelete]:
        """The queued deletions, oldest first; unreadable entries are logged and
        dropped (a DEL of an attachment that is gone is harmless to lose)."""
        try:
            names = [n for n in os.listdir(self.dir) if n.endswith(cni.QUEUE_SUFFIX)]
        except FileNotFoundError:
            return []
        found: list[tuple[float, QueuedDelete]] = []
        for name in names:
            path = os.path.join(self.dir, name)
            try:
                with open(path, encoding="utf-8") as f:
                    request = json.load(f)
                if not isinstance(request, dict):
                    raise ValueError("not a JSON object")
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                log.error("dropping an unreadable queued deletion",
                          extra={"path": path, "error": str(e)})
                self.done(QueuedDelete(path, {}))
                continue
            found.append((float(request.get("queuedAt") or 0.0), QueuedDelete(path, request)))
        return [q for _, q in sorted(found, key=lambda item: item[0])]

    def done(self, entry: QueuedDelete) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)

    async def replay(self, delete: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
        """Run ``delete`` for every queued DEL; an entry leaves the queue only once its
        deletion succeeded. Returns how many are left."""
        left = 0
        for entry in self.entries():
            request = dict(entry.request, command="DEL")
            try:
                await delete(request)
            except Exception as e:
                left += 1
                log.warning("queued deletion failed; kept for the next pass",
                            extra={"container": request.get("containerId"), "error": str(e)})
                continue
            self.done(entry)
            log.info("queued deletion done", extra={"container": request.get("containerId"),
                                                    "ifname": request.get("ifname")})
        return left
