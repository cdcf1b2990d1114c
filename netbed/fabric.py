"""Nodes as network namespaces on one fabric: a bridge in a fabric namespace, and per
node a namespace whose ``fab0`` veth is plugged into it with the node's address (and,
with an IPv6 network, its IPv6 address too)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from netbed.shell import Namespaces, netns_path, sh


@dataclass
class FabricNode:
    """What every bed knows of one of its nodes (beds extend it with their own)."""

    name: str
    index: int
    netns: str
    address: str
    #: the node's own directory (logs, state, sockets)
    dir: Path
    #: the node's IPv6 address on the fabric ("" without one)
    address6: str = field(default="", kw_only=True)

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)


class Fabric:
    def __init__(self, namespaces: Namespaces, *, prefix: str,
                 network: ipaddress.IPv4Network,
                 network6: ipaddress.IPv6Network | None = None) -> None:
        self.namespaces = namespaces
        self.prefix = prefix
        self.network = network
        self.network6 = network6
        self.netns = f"{prefix}-fab"
        self._count = 0

    def start(self) -> None:
        self.namespaces.add(self.netns)
        sh("ip", "-n", self.netns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.netns, "link", "set", "br0", "up")

    def add_node(self) -> tuple[int, str, str]:
        """A new node namespace on the bridge, with loopback and ``fab0`` up:
        (its index from 1, its namespace name, its address)."""
        self._count += 1
        i = self._count
        netns, address = f"{self.prefix}-n{i}", str(self.network.network_address + 10 + i)
        self.namespaces.add(netns)
        sh("ip", "-n", self.netns, "link", "add", f"p{i}", "type", "veth", "peer", "name",
           "fab0", "netns", netns)
        sh("ip", "-n", self.netns, "link", "set", f"p{i}", "master", "br0", "up")
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        sh("ip", "-n", netns, "addr", "add", f"{address}/{self.network.prefixlen}",
           "dev", "fab0")
        if self.network6 is not None:
            # nodad: the bed's own addresses are known unique, and BIRD and the agents
            # must be able to bind them at once
            sh("ip", "-n", netns, "addr", "add", f"{self.address6_of(i)}/"
               f"{self.network6.prefixlen}", "dev", "fab0", "nodad")
        sh("ip", "-n", netns, "link", "set", "fab0", "up")
        return i, netns, address

    def address6_of(self, index: int) -> str:
        """Node ``index``'s IPv6 address ("" when the fabric has no IPv6 network)."""
        if self.network6 is None:
            return ""
        return str(self.network6.network_address + 10 + index)
