"""Datapath data: the endpoint record the agent keeps per pod attachment, the reply
the agent sends the CNI plugin, and what the netlink adapter reports of links."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field, model_validator

from datapath.hooks import Endpoint

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    #: the pod's addresses, at most one per family, IPv4 first
    addresses: list[IPAddress]
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

    @model_validator(mode="before")
    @classmethod
    def _single_address(cls, data: Any) -> Any:
        """Records written before dual-stack hold one ``address``."""
        if isinstance(data, dict) and "addresses" not in data and "address" in data:
            data = {**data, "addresses": [data["address"]]}
            del data["address"]
        return data

    @model_validator(mode="after")
    def _ordered(self) -> EndpointRecord:
        if not self.addresses:
            raise ValueError("an endpoint has at least one address")
        if len({a.version for a in self.addresses}) != len(self.addresses):
            raise ValueError(f"at most one address per family, got {self.addresses}")
        self.addresses.sort(key=lambda a: a.version)
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)

    @property
    def address(self) -> IPAddress:
        """The first address (IPv4 on a dual-stack pod)."""
        return self.addresses[0]

    def address_of(self, family: int) -> IPAddress | None:
        return next((a for a in self.addresses if a.version == family), None)

    def endpoint(self, host_ifindex: int) -> Endpoint:
        return Endpoint(container_id=self.container_id, ifname=self.ifname,
                        host_ifname=self.host_ifname, host_ifindex=host_ifindex,
                        address=self.address, addresses=tuple(self.addresses),
                        namespace=self.namespace, pod=self.pod,
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
