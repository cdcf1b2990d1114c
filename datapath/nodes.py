"""Node addresses published in the store by each agent (what direct routes and BGP
peers point at). The agent's own hash next to the IPAM keys, keyed by node name."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from datapath.errors import TryAgain

KEY = "sip:datapath:node-address"


class NodeDirectory:
    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def publish(self, node: str, address: str) -> None:
        """Store this node's address; written and announced to followers only when it
        changed (a heartbeat's re-publish costs one read in the store)."""
        from datapath import peers

        await peers.publish(self._redis, node, address)

    async def addresses(self) -> dict[str, str]:
        try:
            raw = await self._redis.hgetall(KEY)
        except (RedisError, OSError) as e:
            raise TryAgain(f"cannot read node addresses: {e}") from e
        return {_s(k): _s(v) for k, v in raw.items()}


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
