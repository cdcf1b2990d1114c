"""The agent's extension point for per-endpoint datapath features.

The node agent (``datapath/agent.py``) owns pod plumbing (veth, addresses, routes,
anti-spoofing). Features that attach more tc programs to a pod's host-side veth
(service load balancing, NetworkPolicy) implement :class:`EndpointHook`; the agent
calls them after an endpoint is plumbed and before it is torn down, and once at
start-up with every endpoint it restored.

tc ordering on the host-side veth of a pod (clsact):
  ingress (packets FROM the pod): prio 1 anti-spoofing (agent) returns TC_ACT_UNSPEC
  for legitimate packets so later filters run; prio 10.. service LB and egress policy.
  egress (packets TO the pod): prio 10.. reverse NAT and ingress policy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

#: tc filter priorities on the host-side veth.
PRIO_ANTISPOOF = 1
PRIO_SERVICES = 10
PRIO_POLICY = 20


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One pod attachment as the agent plumbed it."""

    container_id: str
    ifname: str
    host_ifname: str
    host_ifindex: int
    #: the first address (IPv4 on a dual-stack pod)
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    namespace: str
    pod: str
    labels: dict[str, str] = field(default_factory=dict)
    netns: str = ""
    #: every address of the pod (one per family, IPv4 first); ``(address,)`` if empty
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()

    def __post_init__(self) -> None:
        if not self.addresses:
            object.__setattr__(self, "addresses", (self.address,))


class EndpointHook(Protocol):
    async def endpoint_added(self, ep: Endpoint) -> None: ...

    async def endpoint_removed(self, ep: Endpoint) -> None: ...

    async def resync(self, endpoints: list[Endpoint]) -> None: ...
