"""The agent's heartbeat: tells IPAM this node is alive (what the failover
controller reads), republishes the node address, then runs the epoch check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from datapath.errors import DatapathError
from datapath.metrics import AgentMetrics
from datapath.nodes import NodeDirectory
from ipam import IpamError, RedisIpam

log = logging.getLogger("stickyip.datapath")


class Heartbeat:
    def __init__(self, ipam: RedisIpam, *, node: str, nodes: NodeDirectory,
                 address: Callable[[], str], interval: float, metrics: AgentMetrics,
                 address6: Callable[[], str] = lambda: "",
                 lock: asyncio.Lock, then: Callable[[], Awaitable[None]]) -> None:
        self.ipam = ipam
        self.node = node
        self.nodes = nodes
        self.address = address
        self.address6 = address6
        self.interval = interval
        self.metrics = metrics
        self.lock = lock
        #: run under the lock after each heartbeat (the epoch check)
        self.then = then

    async def beat(self) -> None:
        await self.ipam.heartbeat(self.node)
        address, address6 = self.address(), self.address6()
        if address or address6:
            await self.nodes.publish(self.node, address, address6)
        async with self.lock:
            await self.then()

    async def run(self) -> None:
        """Beat every ``interval`` until cancelled; failures are counted and logged."""
        while True:
            try:
                await self.beat()
                self.metrics.heartbeats.labels("ok").inc()
            except (DatapathError, IpamError) as e:
                self.metrics.heartbeats.labels("error").inc()
                log.warning("heartbeat failed", extra={"error": str(e)})
            await asyncio.sleep(self.interval)
