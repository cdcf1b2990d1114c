"""Node addresses published in the store by each agent (what direct routes and BGP
peers point at), one hash per family next to the IPAM keys, keyed by node name."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from datapath.errors import TryAgain

#: node name -> its IPv4 address
KEY = "sip:datapath:node-address"
#: node name -> its IPv6 address (nodes without one have no entry)
KEY6 = "sip:datapath:node-address6"


class NodeDirectory:
    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def publish(self, node: str, address: str, address6: str = "") -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if address:
                    pipe.hset(KEY, node, address)
                if address6:
                    pipe.hset(KEY6, node, address6)
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise TryAgain(f"cannot publish node address: {e}") from e

    async def peers(self) -> dict[str, dict[int, str]]:
        """node name -> family (4, 6) -> its address, in one round trip."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(KEY)
                pipe.hgetall(KEY6)
                v4, v6 = await pipe.execute()
        except (RedisError, OSError) as e:
            raise TryAgain(f"cannot read node addresses: {e}") from e
        out: dict[str, dict[int, str]] = {}
        for family, raw in ((4, v4), (6, v6)):
            for k, v in raw.items():
                out.setdefault(_s(k), {})[family] = _s(v)
        return out

    async def addresses(self) -> dict[str, str]:
        """node name -> its IPv4 address."""
        return {n: a[4] for n, a in (await self.peers()).items() if 4 in a}


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
