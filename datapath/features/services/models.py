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


@dataclass(frozen=True, slots=True, order=True)
class Backend:
    address: ipaddress.IPv4Address
    port: int


@dataclass(frozen=True, slots=True, order=True)
class Frontend:
    address: ipaddress.IPv4Address
    port: int


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of one Service, with everything the datapath needs."""

    service: ServiceKey
    port_name: str
    protocol: str  # TCP | UDP | SCTP
    frontends: tuple[Frontend, ...]
    backends: tuple[Backend, ...]
    affinity_timeout_s: int = 0  # 0: no session affinity
    maglev: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.service, self.port_name, self.protocol)
