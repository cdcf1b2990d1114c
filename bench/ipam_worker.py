"""One benchmark client process of ``bench.ipam``.

Usage: ``python -m bench.ipam_worker URL POOL TAG CALLERS CONNECTIONS NODE_FIRST BATCHING``

CALLERS concurrent loops share one RedisIpam (CONNECTIONS connections, the product's
batching on or off); caller ``c`` allocates on node ``node-(NODE_FIRST + c)``. The
worker connects and warms up (every caller's node holds its block), prints
``ready``, then reads one line from its standard input:

- ``go START DEADLINE`` (absolute ``time.time()`` values, the same for every
  worker): from START each caller allocates and releases (one pair) until
  DEADLINE; a pair counts only if it completed by DEADLINE. Prints one JSON line:
  {"pairs", "lat" (pair latencies in ms, at most 20,000 sampled), "cpu_s" (this
  process's CPU time over the window)}.
- ``hold N``: every caller allocates N addresses and keeps them; prints
  {"addresses": [...]} (the parent counts addresses handed out twice).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from ipam import RedisIpam, ephemeral_owner
from ipam.connection import open_redis


async def main(url: str, pool: str, tag: str, callers: int, connections: int,
               node_first: int, batching: bool) -> None:
    client, _ = await open_redis(url, max_connections=connections)
    ipam = RedisIpam(client, actor=tag, batching=batching)
    nodes = [f"node-{node_first + c}" for c in range(callers)]
    # warm-up: scripts loaded, the pool cached, every caller's node holds its block
    for c, node in enumerate(nodes):
        owner = ephemeral_owner(f"{tag}-warm-{c}")
        await ipam.allocate(pool=pool, node=node, owner=owner)
        await ipam.release(owner=owner, pool=pool)
    print("ready", flush=True)
    command = (await asyncio.to_thread(sys.stdin.readline)).split()

    if command[0] == "hold":
        n = int(command[1])

        async def hold(c: int) -> list[str]:
            out = []
            for i in range(n):
                lease = await ipam.allocate(pool=pool, node=nodes[c],
                                            owner=ephemeral_owner(f"{tag}-h{c}-{i}"))
                out.append(str(lease.address))
            return out
        got = await asyncio.gather(*(hold(c) for c in range(callers)))
        await ipam.aclose()
        print(json.dumps({"addresses": [a for g in got for a in g]}), flush=True)
        return

    start, deadline = float(command[1]), float(command[2])
    lat: list[float] = []
    pairs = 0

    async def loop(c: int) -> None:
        nonlocal pairs
        node, i = nodes[c], 0
        while True:
            t0 = time.perf_counter()
            if time.time() >= deadline:
                return
            owner = ephemeral_owner(f"{tag}-{c}-{i}")
            await ipam.allocate(pool=pool, node=node, owner=owner)
            await ipam.release(owner=owner, pool=pool)
            i += 1
            if time.time() <= deadline:
                lat.append((time.perf_counter() - t0) * 1000)
                pairs += 1

    await asyncio.sleep(max(0.0, start - time.time()))
    cpu0 = time.process_time()
    await asyncio.gather(*(loop(c) for c in range(callers)))
    cpu = time.process_time() - cpu0
    await ipam.aclose()
    step = max(1, len(lat) // 20000)
    print(json.dumps({"pairs": pairs, "lat": lat[::step], "cpu_s": cpu}), flush=True)


if __name__ == "__main__":
    a = sys.argv
    asyncio.run(main(a[1], a[2], a[3], int(a[4]), int(a[5]), int(a[6]), a[7] == "1"))
