"""A separate allocating client process for crash tests and benchmarks.

Usage: python -m tests.support.alloc_worker URL POOL NODE PREFIX SECONDS
Prints one line per acknowledged allocation: ``OWNER ADDRESS``; errors go to stderr.
With SECONDS 0 it runs until its standard input closes (the parent decides when, on
what it has seen, not on a clock).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from ipam import IpamError, RedisIpam, ephemeral_owner
from ipam.connection import open_redis


async def main(url: str, pool: str, node: str, prefix: str, seconds: float) -> None:
    client, _ = await open_redis(url, socket_timeout=0.5, retries=5)
    ipam = RedisIpam(client, actor=prefix)
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    if seconds <= 0:
        def until_eof() -> None:
            sys.stdin.read()
            stop.set()
        threading.Thread(target=until_eof, daemon=True).start()
    i = 0
    while not stop.is_set() if seconds <= 0 else time.monotonic() < deadline:
        owner = ephemeral_owner(f"{prefix}-{i}")
        try:
            lease = await ipam.allocate(pool=pool, node=node, owner=owner)
        except IpamError as e:
            print(f"unacked {owner}: {e}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.05)
        else:
            print(f"{owner} {lease.address}", flush=True)
        i += 1
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
