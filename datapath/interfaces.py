"""The interfaces through which the agent reaches the node: netlink (links, pod
netns, neighbours, routes, tc), the anti-spoofing program with its maps, and the
endpoint records kept across restarts. The real adapters are
:class:`datapath.netlink.Netlink`, :class:`datapath.loader.AntispoofProgram` and
:class:`datapath.store.EndpointStore`; in-memory fakes of all three live in
:mod:`datapath.fakes`, so the agent's parts run in unit tests without root."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from datapath.maps.state import MapWriter
from datapath.models import EndpointRecord, PodLink, TcFilter
from datapath.probe import Conflict
from datapath.routing import IPAddress, Route


class NetlinkOps(Protocol):
    """Netlink operations in the node's own netns and in pod netns paths."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def netns_exists(self, path: str) -> bool: ...

    async def link_index(self, name: str) -> int | None: ...

    async def link_names(self) -> dict[str, int]: ...

    async def link_info(self, index: int) -> tuple[str, bool]:
        """(MAC, up) of a host link."""
        ...

    async def create_veth(self, host_if: str, netns: str, ifname: str) -> int:
        """The pair with the peer directly in the pod netns; returns the host ifindex."""
        ...

    async def set_up(self, index: int) -> None: ...

    async def delete_link(self, name: str) -> bool:
        """Whether a link was deleted (its routes, neighbours and filters go with it)."""
        ...

    async def ensure_neigh(self, index: int, address: IPAddress, mac: str) -> None: ...

    async def neigh_mac(self, index: int, address: IPAddress) -> str | None: ...

    async def add_gateway(self, index: int, gateway: ipaddress.IPv6Address) -> None:
        """The pods' link-local IPv6 gateway as an address of a host veth."""
        ...

    async def pod_link(self, netns: str, ifname: str,
                       gateways: Sequence[IPAddress] = ()) -> PodLink | None: ...

    async def configure_pod(self, netns: str, ifname: str, addresses: Sequence[IPAddress],
                            gateways: Sequence[IPAddress], host_mac: str) -> str:
        """Addresses, link up, per gateway its neighbour and default route; returns the
        pod MAC."""
        ...

    async def pod_routes_ok(self, netns: str, ifname: str,
                            gateways: Sequence[IPAddress]) -> bool: ...

    async def routes(self, names: dict[int, str]) -> list[Route]:
        """The agent's routes in the main table (``names``: ifindex -> link name)."""
        ...

    async def apply_route(self, op: str, route: Route, names: dict[str, int]) -> None:
        """``op`` is ``replace`` or ``del``; ``names``: link name -> ifindex."""
        ...

    async def ensure_clsact(self, index: int) -> None: ...

    async def filters(self, index: int) -> list[TcFilter]:
        """The bpf filters at tc ingress of a link."""
        ...

    async def attach_bpf(self, index: int, fd: int, name: str, prio: int) -> None: ...

    async def global_address(self, skip_prefix: str, family: int = 4) -> str: ...


class AddressProber(Protocol):
    """Conflict detection on the node's links (:class:`datapath.conflicts.RawProber`)."""

    async def probe(self, addresses: Sequence[IPAddress]) -> list[Conflict]:
        """Who else answers for any of ``addresses`` (empty: nobody, within the wait)."""
        ...

    async def announce(self, addresses: Sequence[IPAddress]) -> None:
        """Tell the neighbours these addresses live behind this node now."""
        ...


class EndpointProgram(MapWriter, Protocol):
    """The anti-spoofing program: its fd and name for tc, and its maps
    (``stickyip_endpoints``, ``stickyip_ep_counters``) as a map writer."""

    @property
    def name(self) -> str:
        """The name its tc filters carry: the program's name, the kernel's tag of its code
        and the id of the endpoint map it reads, so a filter still running an older
        program, or reading a map since replaced, is told apart."""
        ...

    @property
    def fd(self) -> int: ...

    def load(self) -> None: ...

    def close(self) -> None: ...


class EndpointRecords(Protocol):
    """What the agent set up per attachment, kept across agent restarts."""

    def load(self) -> list[EndpointRecord]:
        """Read every saved record (at start-up); later calls see the same set."""
        ...

    def get(self, container_id: str, ifname: str) -> EndpointRecord | None: ...

    def all(self) -> list[EndpointRecord]: ...

    def put(self, rec: EndpointRecord) -> None: ...

    def delete(self, rec: EndpointRecord) -> None: ...


@runtime_checkable
class ReportsMapFill(Protocol):
    """A part that owns pinned eBPF maps (the anti-spoofing program, a features hook)
    and reports how full they are, for ``stickyip_bpf_map_*``."""

    def map_fill(self) -> dict[str, tuple[int, int]]:
        """map name -> (entries, max_entries)."""
        ...


@runtime_checkable
class ReportsDrops(Protocol):
    """A features hook whose programs drop packets, for
    ``stickyip_datapath_drops_total{reason}``."""

    def drops(self) -> dict[str, int]:
        """reason -> packets dropped since its maps were created."""
        ...
