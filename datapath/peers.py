"""Following the node addresses agents publish (what direct routes and BGP sessions
point at) without polling: an agent writes its address only when it differs from
the stored one, and then announces the node's name on a Redis channel; a follower
reads every address once when it (re)subscribes and each announced node after that.

A Redis channel loses what is published while a subscriber is disconnected; a
follower therefore reads the whole directory again on every (re)subscription, so it
never misses an address for longer than its connection is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from datapath.errors import TryAgain
from datapath.feedwire import NodeAddresses, Peers

log = logging.getLogger("stickyip.datapath")

#: node name -> its IPv4 address; node name -> its IPv6 address
KEY = "sip:datapath:node-address"
KEY6 = "sip:datapath:node-address6"
#: channel: the name of a node whose address changed
CHANNEL = "sip:datapath:node-address:changed"
OnPeers = Callable[[Peers, list[str]], None]

#: KEYS: v4 hash, v6 hash; ARGV: channel, node, v4 address|'', v6 address|''.
#: Writes and announces only what changed (a heartbeat's re-publish is a no-op).
PUBLISH = """
local changed = false
for i = 1, 2 do
  local a = ARGV[2 + i]
  if a ~= '' and redis.call('HGET', KEYS[i], ARGV[2]) ~= a then
    redis.call('HSET', KEYS[i], ARGV[2], a)
    changed = true
  end
end
if changed then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return changed and 1 or 0
"""


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def publish(client: Redis, node: str, address: str, address6: str = "") -> bool:
    """Store ``node``'s addresses; announce the node when one changed. One round trip."""
    try:
        # EVALSHA (loaded on first use): Redis hashes a script sent in full every time
        changed = await client.register_script(PUBLISH)(
            keys=[KEY, KEY6], args=[CHANNEL, node, address, address6])
    except (RedisError, OSError) as e:
        raise TryAgain(f"cannot publish node address: {e}") from e
    return bool(changed)


async def read_all(client: Redis, nodes: list[str] | None = None) -> Peers:
    """Every node's addresses (or only ``nodes``'), in one round trip."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            if nodes is None:
                pipe.hgetall(KEY)
                pipe.hgetall(KEY6)
                v4, v6 = await pipe.execute()
            else:
                pipe.hmget(KEY, nodes)
                pipe.hmget(KEY6, nodes)
                a4, a6 = await pipe.execute()
                v4 = {n: a for n, a in zip(nodes, a4, strict=True) if a}
                v6 = {n: a for n, a in zip(nodes, a6, strict=True) if a}
    except (RedisError, OSError) as e:
        raise TryAgain(f"cannot read node addresses: {e}") from e
    out: dict[str, dict[int, str]] = {}
    for family, raw in ((4, v4), (6, v6)):
        for k, v in raw.items():
            out.setdefault(_s(k), {})[family] = _s(v)
    return {node: NodeAddresses.of(fam) for node, fam in out.items()}


class PeerSource(Protocol):
    """Where a follower gets node addresses: :meth:`start` returns them all and then
    calls ``on_change(set, deleted)`` for each change until :meth:`stop`."""

    async def start(self, on_change: OnPeers) -> Peers: ...

    async def stop(self) -> None: ...


class StorePeers:
    """Node addresses followed in the store (one subscription connection of its own)."""

    def __init__(self, client: Redis, *, retry: float = 1.0) -> None:
        self.client = client
        self.retry = retry
        self.peers: Peers = {}
        self._task: asyncio.Task[None] | None = None
        self._on_change: OnPeers | None = None

    async def start(self, on_change: OnPeers) -> Peers:
        self._on_change = on_change
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready), name="peers")
        await ready
        return dict(self.peers)

    async def stop(self) -> None:
        if self._task is not None:
            from ipam.follow import cancel

            await cancel(self._task)

    def _replace(self, fresh: Peers) -> None:
        changed = {n: a for n, a in fresh.items() if self.peers.get(n) != a}
        gone = [n for n in self.peers if n not in fresh]
        self.peers = fresh
        if (changed or gone) and self._on_change is not None:
            self._on_change(changed, gone)

    async def _run(self, ready: asyncio.Future[None]) -> None:
        first = True
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                # subscribed first, then read: nothing published in between is lost
                fresh = await read_all(self.client)
                if first:
                    self.peers = fresh
                    first = False
                    if not ready.done():
                        ready.set_result(None)
                else:
                    self._replace(fresh)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=30.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    node = _s(msg["data"])
                    got = await read_all(self.client, [node])
                    now = got.get(node)
                    if now is None:
                        if self.peers.pop(node, None) is not None and self._on_change:
                            self._on_change({}, [node])
                    elif self.peers.get(node) != now:
                        self.peers[node] = now
                        if self._on_change:
                            self._on_change({node: now}, [])
            except (RedisError, OSError, TryAgain) as e:
                log.warning("following node addresses failed (retrying)",
                            extra={"error": str(e)})
                await asyncio.sleep(self.retry)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
