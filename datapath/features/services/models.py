"""What a Service port becomes on this node: its frontends and ready backends."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NewType

#: "namespace/name" of a Service
ServiceKey = NewType("ServiceKey", str)

#: The annotation choosing the backend algorithm of one Service.
ALGORITHM_ANNOTATION = "stickyip.io/lb-algorithm"
DEFAULT_AFFINITY_TIMEOUT_S = 10800
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True, order=True)
class Backend:
    """One backend; a :class:`ServicePort` holds backends of its own family only."""

    address: IPAddress
    port: int


@dataclass(frozen=True, slots=True, order=True)
class Frontend:
    address: IPAddress
    port: int


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of one Service in one address family, with everything the datapath
    needs (a dual-stack Service has one per family and port)."""

    service: ServiceKey
    port_name: str
    protocol: str  # TCP | UDP | SCTP
    frontends: tuple[Frontend, ...]
    backends: tuple[Backend, ...]
    affinity_timeout_s: int = 0  # 0: no session affinity
    maglev: bool = False
    family: int = 4

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.service, self.port_name, self.protocol, self.family)
