"""Datapath data: the endpoint record the agent keeps per pod attachment, the reply
the agent sends the CNI plugin, and what the netlink adapter reports of links."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field

from datapath.hooks import Endpoint


class AgentReply(TypedDict):
    ok: bool
    result: NotRequired[dict[str, Any] | None]
    code: NotRequired[int]
    msg: NotRequired[str]
    details: NotRequired[str]


class EndpointRecord(BaseModel):
    """What the agent set up for one attachment; written to the state dir so a
    restarted agent can diff it against the kernel."""

    container_id: str
    ifname: str
    host_ifname: str
    netns: str
    address: ipaddress.IPv4Address
    pool: str
    owner: str
    kind: Literal["ephemeral", "sticky"]
    epoch: int = 0
    namespace: str = ""
    pod: str = ""
    pod_uid: str = ""
    host_mac: str = ""
    pod_mac: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    fenced: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)

    def endpoint(self, host_ifindex: int) -> Endpoint:
        return Endpoint(container_id=self.container_id, ifname=self.ifname,
                        host_ifname=self.host_ifname, host_ifindex=host_ifindex,
                        address=self.address, namespace=self.namespace, pod=self.pod,
                        labels=dict(self.labels), netns=self.netns)


@dataclass(frozen=True, slots=True)
class PodLink:
    """A pod's interface as the kernel has it."""

    index: int
    mac: str
    up: bool
    addresses: tuple[str, ...]
    #: the default route via the gateway and the gateway's permanent neighbour exist
    routes_ok: bool = False


@dataclass(frozen=True, slots=True)
class TcFilter:
    """One bpf filter on a link's clsact hook."""

    parent: int
    prio: int
    name: str
    prog_id: int


def host_ifname(prefix: str, container_id: str, ifname: str) -> str:
    """Stable host-side veth name (<= 15 chars), as Calico derives 'cali…' names."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return (prefix + digest)[:15]
