"""A wall clock the test moves forward by hand: components that read it (the
failover and GC controllers, the IPAM's timestamps) see time pass at once, so
tests wait on what happened rather than on sleeps that must outlast a grace."""

from __future__ import annotations

import time


class SkewClock:
    """``time.time()`` plus an offset that only :meth:`advance` changes."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
