"""Datapath data: the endpoint record the agent keeps per pod attachment, and the
request/response shapes spoken between the CNI plugin and the agent."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field

from datapath.hooks import Endpoint


class AgentRequest(TypedDict):
    """One line of JSON the plugin sends to the agent."""

    command: str
    containerId: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: str
    config: dict[str, Any]


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


def host_ifname(prefix: str, container_id: str, ifname: str) -> str:
    """Stable host-side veth name (<= 15 chars), as Calico derives 'cali…' names."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return (prefix + digest)[:15]
