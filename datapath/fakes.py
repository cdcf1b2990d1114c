"""In-memory fakes of the agent's interfaces (:mod:`datapath.interfaces`): netlink,
the anti-spoofing program and the endpoint records. They keep just enough kernel
state to answer as the real adapters do, so ADD, DEL, CHECK, GC and restore run in
unit tests without root.

Every call on a fake is one step of a shared :class:`Steps` journal; a journal made
with ``fail_at=k`` makes the k-th call (counting from 0) raise the error the real
adapter would raise, which is how tests prove that a failure at any step of ADD
leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from datapath.errors import BpfFailure, InterfaceExists, NetlinkFailure, UnknownContainer
from datapath.maps.state import Key, MemoryMaps, Value
from datapath.models import EndpointRecord, PodLink, TcFilter
from datapath.probe import Conflict
from datapath.routing import IPAddress, IPNetwork, Route
from datapath.store import EndpointStore

TC_INGRESS = 0xFFFFFFF2


class Steps:
    """The journal of calls made on the fakes, with an optional injected failure."""

    def __init__(self, *, fail_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at

    def __call__(self, call: str, error: type[Exception]) -> None:
        index = len(self.calls)
        self.calls.append(call)
        if index == self.fail_at:
            raise error(f"injected failure at step {index} ({call})")


@dataclass
class HostLink:
    index: int
    mac: str
    up: bool = False
    #: (netns path, ifname) of the veth peer
    peer: tuple[str, str] | None = None
    #: addresses given to the link (the pods' IPv6 gateway)
    addresses: set[str] = field(default_factory=set)


@dataclass
class PodSide:
    index: int
    mac: str
    up: bool = False
    addresses: set[str] = field(default_factory=set)
    #: the gateways of its default routes (those with a permanent neighbour)
    gateways: set[str] = field(default_factory=set)


class FakeNetlink:
    """A node's links, pod netns, neighbours, routes and tc filters, in memory."""

    def __init__(self, steps: Steps | None = None, *, address: str = "192.0.2.1",
                 address6: str = "2001:db8::1") -> None:
        self.steps = steps or Steps()
        self.address = address
        self.address6 = address6
        #: pod netns paths that exist
        self.namespaces: set[str] = set()
        self.links: dict[str, HostLink] = {"lo": HostLink(1, "00:00:00:00:00:00", True)}
        self.pods: dict[tuple[str, str], PodSide] = {}
        self.neighbours: dict[tuple[int, IPAddress], str] = {}
        self.kernel_routes: dict[IPNetwork, tuple[Route, int | None]] = {}
        self.clsact: set[int] = set()
        self.tc: dict[int, list[TcFilter]] = {}
        self._next = 10

    def _step(self, call: str) -> None:
        self.steps(f"netlink.{call}", NetlinkFailure)

    def _mac(self) -> str:
        self._next += 1
        return f"02:00:00:00:{self._next // 256:02x}:{self._next % 256:02x}"

    def _by_index(self, index: int) -> tuple[str, HostLink]:
        for name, link in self.links.items():
            if link.index == index:
                return name, link
        raise NetlinkFailure(f"no link {index}")

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def netns_exists(self, path: str) -> bool:
        return path in self.namespaces

    async def link_index(self, name: str) -> int | None:
        self._step("link_index")
        link = self.links.get(name)
        return None if link is None else link.index

    async def link_names(self) -> dict[str, int]:
        self._step("link_names")
        return {name: link.index for name, link in self.links.items()}

    async def link_info(self, index: int) -> tuple[str, bool]:
        self._step("link_info")
        _, link = self._by_index(index)
        return link.mac, link.up

    async def create_veth(self, host_if: str, netns: str, ifname: str) -> int:
        self._step("create_veth")
        if netns not in self.namespaces:
            raise UnknownContainer(f"network namespace {netns} does not exist")
        if host_if in self.links or (netns, ifname) in self.pods:
            raise InterfaceExists(f"interface {ifname} (or host side {host_if}) already exists")
        self._next += 1
        index = self._next
        self.links[host_if] = HostLink(index, self._mac(), peer=(netns, ifname))
        self.pods[(netns, ifname)] = PodSide(2, self._mac())
        return index

    async def set_up(self, index: int) -> None:
        self._step("set_up")
        self._by_index(index)[1].up = True

    async def delete_link(self, name: str) -> bool:
        self._step("delete_link")
        link = self.links.pop(name, None)
        if link is None:
            return False
        if link.peer is not None:
            self.pods.pop(link.peer, None)
        self.neighbours = {k: v for k, v in self.neighbours.items() if k[0] != link.index}
        self.kernel_routes = {k: v for k, v in self.kernel_routes.items()
                              if v[1] != link.index}
        self.clsact.discard(link.index)
        self.tc.pop(link.index, None)
        return True

    async def ensure_neigh(self, index: int, address: IPAddress, mac: str) -> None:
        self._step("ensure_neigh")
        self._by_index(index)
        self.neighbours[(index, address)] = mac

    async def neigh_mac(self, index: int, address: IPAddress) -> str | None:
        self._step("neigh_mac")
        return self.neighbours.get((index, address))

    async def add_gateway(self, index: int, gateway: ipaddress.IPv6Address) -> None:
        self._step("add_gateway")
        self._by_index(index)[1].addresses.add(str(gateway))

    async def pod_link(self, netns: str, ifname: str,
                       gateways: Sequence[IPAddress] = ()) -> PodLink | None:
        self._step("pod_link")
        pod = self.pods.get((netns, ifname))
        if pod is None or netns not in self.namespaces:
            return None
        routes_ok = bool(gateways) and all(str(g) in pod.gateways for g in gateways)
        return PodLink(index=pod.index, mac=pod.mac, up=pod.up,
                       addresses=tuple(sorted(pod.addresses)), routes_ok=routes_ok)

    async def configure_pod(self, netns: str, ifname: str, addresses: Sequence[IPAddress],
                            gateways: Sequence[IPAddress], host_mac: str) -> str:
        self._step("configure_pod")
        pod = self.pods.get((netns, ifname))
        if pod is None or netns not in self.namespaces:
            raise NetlinkFailure(f"{ifname} missing in {netns}")
        pod.addresses.update(str(a) for a in addresses)
        pod.up = True
        pod.gateways.update(str(g) for g in gateways)
        return pod.mac

    async def pod_routes_ok(self, netns: str, ifname: str,
                            gateways: Sequence[IPAddress]) -> bool:
        pod = await self.pod_link(netns, ifname, gateways)
        return pod is not None and pod.routes_ok

    async def routes(self, names: dict[int, str]) -> list[Route]:
        self._step("routes")
        out = []
        for route, index in self.kernel_routes.values():
            if index is not None:
                route = Route(route.dst, "dev", names.get(index, f"#{index}"))
            out.append(route)
        return out

    async def apply_route(self, op: str, route: Route, names: dict[str, int]) -> None:
        self._step(f"apply_route.{op}")
        if op == "del":
            self.kernel_routes.pop(route.dst, None)
            return
        index = None
        if route.kind == "dev":
            index = names.get(route.target)
            if index is None or not any(x.index == index for x in self.links.values()):
                raise NetlinkFailure(f"route {route.dst}: no interface {route.target}")
        self.kernel_routes[route.dst] = (route, index)

    async def ensure_clsact(self, index: int) -> None:
        self._step("ensure_clsact")
        self._by_index(index)
        self.clsact.add(index)

    async def filters(self, index: int) -> list[TcFilter]:
        self._step("filters")
        return list(self.tc.get(index, []))

    async def attach_bpf(self, index: int, fd: int, name: str, prio: int) -> None:
        self._step("attach_bpf")
        self._by_index(index)
        if index not in self.clsact:
            raise NetlinkFailure(f"attach {name} to {index}: no clsact qdisc")
        kept = [f for f in self.tc.get(index, []) if f.prio != prio]
        self.tc[index] = [*kept, TcFilter(parent=TC_INGRESS, prio=prio, name=name, prog_id=fd)]

    async def global_address(self, skip_prefix: str, family: int = 4) -> str:
        return self.address if family == 4 else self.address6

    # -------------------------------------------------------- for assertions

    def pod_veths(self, prefix: str) -> list[str]:
        return sorted(n for n in self.links if n.startswith(prefix))


class FakeProber:
    """Conflict detection without links: ``squatters`` answer for their addresses;
    ``announced`` lists what was announced, in order."""

    def __init__(self, steps: Steps | None = None) -> None:
        self.steps = steps or Steps()
        self.squatters: dict[IPAddress, Conflict] = {}
        self.announced: list[IPAddress] = []
        self.probed: list[IPAddress] = []

    def squat(self, address: IPAddress, mac: str = "02:5a:5a:5a:5a:5a",
              link: str = "eth0") -> Conflict:
        c = Conflict(address, mac, link, "arp-reply" if address.version == 4
                     else "neighbor-advert")
        self.squatters[address] = c
        return c

    async def probe(self, addresses: Sequence[IPAddress]) -> list[Conflict]:
        self.steps("prober.probe", NetlinkFailure)
        self.probed.extend(addresses)
        return [self.squatters[a] for a in addresses if a in self.squatters]

    async def announce(self, addresses: Sequence[IPAddress]) -> None:
        self.steps("prober.announce", NetlinkFailure)
        self.announced.extend(addresses)


class MemoryEndpointProgram(MemoryMaps):
    """The anti-spoofing program without a kernel: its maps are dicts."""

    def __init__(self, steps: Steps | None = None, *,
                 name: str = "antispoof_ingress") -> None:
        super().__init__()
        self.steps = steps or Steps()
        self.name = name
        self.fd = 3
        self.loaded = False

    def update(self, name: str, key: Key, value: Value) -> None:
        self.steps(f"program.update.{name}", BpfFailure)
        super().update(name, key, value)

    def delete(self, name: str, key: Key) -> None:
        self.steps(f"program.delete.{name}", BpfFailure)
        super().delete(name, key)

    def lookup(self, name: str, key: Key) -> Value | None:
        self.steps(f"program.lookup.{name}", BpfFailure)
        return super().lookup(name, key)

    def load(self) -> None:
        self.loaded = True

    def close(self) -> None:
        self.loaded = False


class MemoryEndpointRecords(EndpointStore):
    """Endpoint records saved in a dict (``saved``: what survives a restart) instead of
    files; :meth:`load` reads them back as the real store reads its files."""

    def __init__(self, steps: Steps | None = None) -> None:
        self.steps = steps or Steps()
        self.saved: dict[tuple[str, str], str] = {}
        self._cache: dict[tuple[str, str], EndpointRecord] = {}

    def _saved(self) -> list[str]:
        return list(self.saved.values())

    def _save(self, key: tuple[str, str], text: str) -> None:
        self.steps("records.put", OSError)
        self.saved[key] = text

    def _unsave(self, key: tuple[str, str]) -> None:
        self.steps("records.delete", OSError)
        self.saved.pop(key, None)
