"""The async context of a bed (the test bed, the demo's system): ``start`` on entry,
``close`` on exit, and ``close`` after a start that failed half-way, so that whatever
it had set up (namespaces, processes, pins) is removed."""

from __future__ import annotations

from typing import Self


class Lifecycle:
    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
