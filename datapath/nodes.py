"""Node addresses published in the store by each agent (what direct routes and BGP
peers point at), one hash per family next to the IPAM keys, keyed by node name.
How they are written and followed (only on change, by subscription): datapath.peers."""

from __future__ import annotations

from redis.asyncio import Redis

from datapath import peers
from datapath.feedwire import Peers

#: node name -> its IPv4 address; node name -> its IPv6 address (if it has one)
KEY, KEY6 = peers.KEY, peers.KEY6


class NodeDirectory:
    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def publish(self, node: str, address: str, address6: str = "") -> None:
        """Store this node's addresses; written and announced to followers only when
        one changed (a heartbeat's re-publish costs one read in the store)."""
        await peers.publish(self._redis, node, address, address6)

    async def peers(self) -> Peers:
        """node name -> family (4, 6) -> its address, in one round trip."""
        return await peers.read_all(self._redis)
