"""The one way the servers' entry points learn they should stop: SIGINT or SIGTERM
sets an ``asyncio.Event`` they wait on before shutting down in order."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_event() -> asyncio.Event:
    """An event the running loop sets on SIGINT or SIGTERM (where the platform lets a
    loop handle signals at all)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
