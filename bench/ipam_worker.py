"""One benchmark client process: CLIENTS concurrent allocate+release loops for SECONDS.

Prints one JSON line: {"pairs": n, "lat": [pair latencies in ms, sampled]}.
With a negative SECONDS, allocates -SECONDS per client and keeps them (the parent
counts addresses handed out twice): {"addresses": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from ipam import RedisIpam, ephemeral_owner
from ipam.connection import open_redis


async def main(url: str, pool: str, node: str, tag: str, clients: int, seconds: float,
               batching: bool, start_at: float) -> None:
    client, _ = await open_redis(url, max_connections=max(clients, 1))
    ipam = RedisIpam(client, actor=tag, batching=batching)
    await ipam.pool(pool)
    lat: list[float] = []
    pairs = 0

    async def loop(c: int) -> None:
        nonlocal pairs
        i = 0
        while time.time() < deadline:
            owner = ephemeral_owner(f"{tag}-{c}-{i}")
            t0 = time.perf_counter()
            await ipam.allocate(pool=pool, node=node, owner=owner)
            await ipam.release(pool=pool, owner=owner)
            lat.append((time.perf_counter() - t0) * 1000)
            pairs += 1
            i += 1

    async def hold(c: int, n: int) -> list[str]:
        out = []
        for i in range(n):
            lease = await ipam.allocate(pool=pool, node=node,
                                        owner=ephemeral_owner(f"{tag}-h{c}-{i}"))
            out.append(str(lease.address))
        return out

    await asyncio.sleep(max(0.0, start_at - time.time()))  # all processes start together
    if seconds < 0:  # hold mode: allocate -seconds per client and keep them
        got = await asyncio.gather(*(hold(c, int(-seconds)) for c in range(clients)))
        await ipam.aclose()
        print(json.dumps({"addresses": [a for g in got for a in g]}))
        return
    deadline = time.time() + seconds
    await asyncio.gather(*(loop(c) for c in range(clients)))
    await ipam.aclose()
    step = max(1, len(lat) // 20000)
    print(json.dumps({"pairs": pairs, "lat": lat[::step]}))


if __name__ == "__main__":
    a = sys.argv
    asyncio.run(main(a[1], a[2], a[3], a[4], int(a[5]), float(a[6]), a[7] == "1", float(a[8])))
