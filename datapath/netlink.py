"""The agent's netlink adapter (pyroute2 only, no ``ip`` commands): pod veths, pod
addresses and routes inside the pod netns, host routes and neighbours, tc clsact
filters. pyroute2 errors are translated to :class:`NetlinkFailure` here."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from datapath.errors import InterfaceExists, NetlinkFailure, UnknownContainer
from datapath.models import PodLink, TcFilter
from datapath.routing import IPAddress, Route

RT_TABLE_MAIN = 254
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
NUD_PERMANENT = 0x80
TC_H_CLSACT_INGRESS = 0xFFFFFFF2
TC_H_CLSACT_EGRESS = 0xFFFFFFF3
ETH_P_ALL = 0x0003
NETLINK_ROUTE = 0
AF_INET = 2
AF_INET6 = 10
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE = 0


def _family(address: IPAddress | ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    return AF_INET if address.version == 4 else AF_INET6


def _default(gateway: IPAddress) -> str:
    return "0.0.0.0/0" if gateway.version == 4 else "::/0"


async def _all(gen: Any) -> list[Any]:
    """Every message of a pyroute2 reply (a list for 'get', an async generator for dumps)."""
    if isinstance(gen, list | tuple):
        return list(gen)
    return [m async for m in gen]


async def _first(gen: Any) -> Any:
    """First message of a pyroute2 reply (a list for 'get', an async generator for dumps)."""
    if isinstance(gen, list | tuple):
        if gen:
            return gen[0]
    else:
        async for m in gen:
            return m
    raise NetlinkFailure("netlink returned no message")


def _err(what: str, e: NetlinkError) -> NetlinkFailure:
    return NetlinkFailure(f"{what}: {os.strerror(e.code)} (errno {e.code})", details=str(e))


class Netlink:
    """Netlink operations in the node's own netns and in pod netns paths."""

    def __init__(self, *, route_protocol: int) -> None:
        self.route_protocol = route_protocol
        self._ipr: AsyncIPRoute | None = None

    def netns_exists(self, path: str) -> bool:
        return netns_exists(path)

    async def open(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()

    async def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @property
    def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            raise NetlinkFailure("netlink socket is not open")
        return self._ipr

    @asynccontextmanager
    async def _pod(self, netns: str) -> AsyncIterator[AsyncIPRoute]:
        if not netns_exists(netns):
            raise UnknownContainer(f"network namespace {netns} does not exist")
        try:
            sock = netns_socket(netns)
        except OSError as e:
            raise NetlinkFailure(f"cannot enter {netns}: {e.strerror}") from e
        try:
            async with AsyncIPRoute(use_socket=sock) as ipr:
                yield ipr
        except NetlinkError as e:
            raise _err(f"netlink in {netns}", e) from e
        finally:
            sock.close()

    # ------------------------------------------------------------------ links

    async def link_index(self, name: str) -> int | None:
        try:
            found = await self.ipr.link_lookup(ifname=name)
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise _err(f"lookup {name}", e) from e
        return int(found[0]) if found else None

    async def link_names(self) -> dict[str, int]:
        out = {}
        async for msg in await self.ipr.link("dump"):
            out[str(msg.get("ifname"))] = int(msg["index"])
        return out

    async def link_info(self, index: int) -> tuple[str, bool]:
        m = await _first(await self.ipr.link("get", index=index))
        return str(m.get("address")), bool(m["flags"] & 1)

    async def create_veth(self, host_if: str, netns: str, ifname: str) -> int:
        """Create the pair with the peer directly in the pod netns under ``ifname``."""
        if not netns_exists(netns):
            raise UnknownContainer(f"network namespace {netns} does not exist")
        fd = os.open(netns, os.O_RDONLY)
        try:
            await self.ipr.link("add", ifname=host_if, kind="veth",
                                peer={"ifname": ifname, "net_ns_fd": fd})
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                raise InterfaceExists(
                    f"interface {ifname} (or host side {host_if}) already exists",
                    details=str(e)) from e
            raise _err(f"create veth {host_if}", e) from e
        finally:
            os.close(fd)
        idx = await self.link_index(host_if)
        if idx is None:
            raise NetlinkFailure(f"veth {host_if} vanished after creation")
        return idx

    async def set_up(self, index: int) -> None:
        try:
            await self.ipr.link("set", index=index, state="up")
        except NetlinkError as e:
            raise _err(f"set link {index} up", e) from e

    async def delete_link(self, name: str) -> bool:
        idx = await self.link_index(name)
        if idx is None:
            return False
        try:
            await self.ipr.link("del", index=idx)
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return False
            raise _err(f"delete {name}", e) from e
        return True

    async def ensure_neigh(self, index: int, address: IPAddress, mac: str) -> None:
        try:
            await self.ipr.neigh("replace", dst=str(address), lladdr=mac, ifindex=index,
                                 state=NUD_PERMANENT, family=_family(address))
        except NetlinkError as e:
            raise _err(f"neighbour {address} on {index}", e) from e

    async def add_gateway(self, index: int, gateway: ipaddress.IPv6Address) -> None:
        """The pods' IPv6 gateway (link-local, e.g. fe80::1/64) on a host veth, without
        duplicate address detection: it is link-local on a link whose only other end
        is the pod, and it must answer at once."""
        try:
            await self.ipr.addr("replace", index=index, address=str(gateway), prefixlen=64,
                                flags=IFA_F_NODAD, family=AF_INET6)
        except NetlinkError as e:
            raise _err(f"gateway {gateway} on {index}", e) from e

    async def neigh_mac(self, index: int, address: IPAddress) -> str | None:
        """MAC of the permanent neighbour ``address`` on ``index`` (a kernel lookup of one
        entry: dumping every neighbour of a node with many pods costs O(pods))."""
        try:
            msgs = await self.ipr.neigh("get", dst=str(address), ifindex=index,
                                        family=_family(address))
        except NetlinkError as e:
            if e.code in (errno.ENOENT, errno.ENODEV, errno.ESRCH):
                return None
            raise _err(f"neighbour {address} on {index}", e) from e
        for n in await _all(msgs):
            if n["state"] & NUD_PERMANENT and n.get("lladdr"):
                return str(n.get("lladdr"))
        return None

    # ---------------------------------------------------------- inside the pod

    async def pod_link(self, netns: str, ifname: str,
                       gateways: Sequence[IPAddress] = ()) -> PodLink | None:
        """The pod's interface as the kernel has it (one socket, a handful of requests):
        its global addresses of both families; with ``gateways``, also whether the
        default route of each gateway's family and its permanent neighbour exist."""
        if not netns_exists(netns):
            return None
        async with self._pod(netns) as ipr:
            try:
                msg = await _first(await ipr.link("get", ifname=ifname))
            except NetlinkError as e:
                if e.code == errno.ENODEV:
                    return None
                raise
            idx = int(msg["index"])
            addrs = tuple(sorted(str(a.get("address")) for a in
                                 await _all(await ipr.addr("dump", index=idx))
                                 if a["scope"] == RT_SCOPE_UNIVERSE))
            routes_ok = False
            if gateways:
                routes_ok = True
                neighbours = [n for n in await _all(await ipr.neigh("dump", ifindex=idx))
                              if n["state"] & NUD_PERMANENT]
                for gw in gateways:
                    default = any(r["dst_len"] == 0 and r.get("gateway") == str(gw)
                                  and r.get("oif") == idx for r in
                                  await _all(await ipr.route("dump", table=RT_TABLE_MAIN,
                                                             family=_family(gw))))
                    neigh = any(n.get("dst") == str(gw) for n in neighbours)
                    routes_ok = routes_ok and default and neigh
            return PodLink(index=idx, mac=str(msg.get("address")),
                           up=bool(msg["flags"] & 1), addresses=addrs, routes_ok=routes_ok)

    async def configure_pod(self, netns: str, ifname: str, addresses: Sequence[IPAddress],
                            gateways: Sequence[IPAddress], host_mac: str) -> str:
        """Each address as a /32 or /128, link up, per gateway (one per family, both
        link-local) a permanent neighbour pointing at the host veth and the default
        route through it (Calico's layout, no ARP or ND needed). IPv6 addresses are added
        without duplicate address detection (``nodad``) and DAD is off on the pod's
        interface: the agent probed the node's links for the address before (see
        :mod:`datapath.conflicts`), and the veth's only other end is the host, so the
        kernel's own DAD could find nothing and would only hold the address tentative,
        unusable, for a second. Idempotent; returns the pod MAC."""
        if any(a.version == 6 for a in addresses):
            _pod_sysctl(netns, f"net/ipv6/conf/{ifname}/accept_dad", "0")
        async with self._pod(netns) as ipr:
            lo = await ipr.link_lookup(ifname="lo")
            if lo:
                await ipr.link("set", index=lo[0], state="up")
            found = await ipr.link_lookup(ifname=ifname)
            if not found:
                raise NetlinkFailure(f"{ifname} missing in {netns}")
            idx = found[0]
            have = {str(a.get("address")) async for a in await ipr.addr("dump", index=idx)}
            for address in addresses:
                if str(address) in have:
                    continue
                if address.version == 4:
                    await ipr.addr("add", index=idx, address=str(address), prefixlen=32)
                else:
                    await ipr.addr("add", index=idx, address=str(address), prefixlen=128,
                                   flags=IFA_F_NODAD, family=AF_INET6)
            await ipr.link("set", index=idx, state="up")
            for gw in gateways:
                await ipr.neigh("replace", dst=str(gw), lladdr=host_mac, ifindex=idx,
                                state=NUD_PERMANENT, family=_family(gw))
                if gw.version == 4:
                    await ipr.route("replace", dst=f"{gw}/32", oif=idx, scope=RT_SCOPE_LINK)
                await ipr.route("replace", dst=_default(gw), gateway=str(gw), oif=idx,
                                family=_family(gw))
            msg = await _first(await ipr.link("get", index=idx))
            return str(msg.get("address"))

    async def pod_routes_ok(self, netns: str, ifname: str,
                            gateways: Sequence[IPAddress]) -> bool:
        pod = await self.pod_link(netns, ifname, gateways)
        return pod is not None and pod.routes_ok

    # ----------------------------------------------------------------- routes

    async def routes(self, names: dict[int, str]) -> list[Route]:
        """Routes in the main table carrying the agent's protocol number; ``names``
        maps the ifindex of dev routes to interface names (unknown ones show as #N)."""
        out = []
        for family in (AF_INET, AF_INET6):
            out += await self._routes(names, family)
        return out

    async def _routes(self, names: dict[int, str], family: int) -> list[Route]:
        out: list[Route] = []
        zero = "0.0.0.0" if family == AF_INET else "::"
        async for r in await self.ipr.route("dump", table=RT_TABLE_MAIN, family=family):
            if r["proto"] != self.route_protocol:
                continue
            dst = ipaddress.ip_network(f"{r.get('dst') or zero}/{r['dst_len']}")
            if r["type"] == RTN_BLACKHOLE:
                out.append(Route(dst, "blackhole"))
            elif r.get("gateway"):
                out.append(Route(dst, "via", str(r.get("gateway"))))
            elif r.get("oif") is not None:
                out.append(Route(dst, "dev", names.get(int(r.get("oif")), f"#{r.get('oif')}")))
        return out

    def _route_args(self, route: Route, names: dict[str, int]) -> dict[str, Any]:
        args: dict[str, Any] = {"dst": str(route.dst), "table": RT_TABLE_MAIN,
                                "proto": self.route_protocol, "family": _family(route.dst)}
        if route.kind == "blackhole":
            args["type"] = "blackhole"
        elif route.kind == "via":
            args["gateway"] = route.target
        else:
            idx = names.get(route.target)
            if idx is None:
                raise NetlinkFailure(f"route {route.dst}: no interface {route.target}")
            args["oif"] = idx
            if route.family == 4:
                args["scope"] = RT_SCOPE_LINK
        return args

    async def apply_route(self, op: str, route: Route, names: dict[str, int]) -> None:
        try:
            if op == "del":
                # scope "nowhere" matches any scope, as iproute2 does for IPv4 deletes
                args = {"dst": str(route.dst), "table": RT_TABLE_MAIN, "proto": self.route_protocol,
                        "family": _family(route.dst)}
                if route.family == 4:
                    args["scope"] = RT_SCOPE_NOWHERE
                if route.kind == "blackhole":
                    args["type"] = "blackhole"
                await self.ipr.route("del", **args)
            else:
                await self.ipr.route("replace", **self._route_args(route, names))
        except NetlinkError as e:
            if op == "del" and e.code in (errno.ESRCH, errno.ENOENT):
                return
            raise _err(f"route {op} {route.dst}", e) from e

    # --------------------------------------------------------------------- tc

    async def ensure_clsact(self, index: int) -> None:
        try:
            await self.ipr.tc("add", "clsact", index=index)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise _err(f"clsact on {index}", e) from e

    async def filters(self, index: int, parent: int = TC_H_CLSACT_INGRESS) -> list[TcFilter]:
        out = []
        try:
            msgs = [m async for m in await self.ipr.get_filters(index=index, parent=parent)]
        except NetlinkError as e:
            if e.code in (errno.EINVAL, errno.ENOENT, errno.ENODEV):
                return []
            raise _err(f"list filters on {index}", e) from e
        for m in msgs:
            opts = m.get("TCA_OPTIONS")
            if m.get("TCA_KIND") != "bpf" or opts is None:
                continue
            out.append(TcFilter(parent=parent, prio=int(m["info"]) >> 16,
                                name=str(opts.get("TCA_BPF_NAME") or ""),
                                prog_id=int(opts.get("TCA_BPF_ID") or 0)))
        return out

    async def attach_bpf(self, index: int, fd: int, name: str, prio: int,
                         parent: int = TC_H_CLSACT_INGRESS) -> None:
        try:
            await self.ipr.tc("replace-filter", "bpf", index=index, handle=1, fd=fd, name=name,
                              parent=parent, prio=prio, protocol=ETH_P_ALL,
                              direct_action=True)
        except NetlinkError as e:
            raise _err(f"attach {name} to {index}", e) from e

    # ----------------------------------------------------------------- host

    async def global_address(self, skip_prefix: str, family: int = 4) -> str:
        """First global address of ``family`` (4 or 6) on a non-pod, non-loopback
        interface ("" when there is none)."""
        names = {i: n for n, i in (await self.link_names()).items()}
        async for a in await self.ipr.addr("dump", family=AF_INET if family == 4 else AF_INET6):
            name = names.get(int(a["index"]), "")
            if name == "lo" or name.startswith(skip_prefix) or a["scope"] != 0:
                continue
            return str(a.get("address"))
        return ""


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def entered_netns(path: str) -> Iterator[None]:
    """The calling thread inside the netns at ``path`` for the ``with`` block, then
    back. Sockets created inside stay in that netns. Keep the block short and free of
    awaits: only this thread moves."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            try:
                yield
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover
                    os.abort()  # stuck in a pod netns: crash rather than misroute
        finally:
            os.close(target)
    finally:
        os.close(own)


def netns_socket(path: str) -> socket.socket:
    """A NETLINK_ROUTE socket living in the netns at ``path`` (far cheaper than
    pyroute2's ``netns=``, which forks a helper process per socket)."""
    with entered_netns(path):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


def netns_exists(path: str) -> bool:
    return os.path.exists(path)


def enable_forwarding(*, ipv6: bool = True) -> None:
    """The node routes pod traffic: IPv4 (and IPv6) forwarding on in this netns."""
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1\n")
    if ipv6 and os.path.exists("/proc/sys/net/ipv6/conf/all/forwarding"):
        with open("/proc/sys/net/ipv6/conf/all/forwarding", "w") as f:
            f.write("1\n")


def _pod_sysctl(netns: str, name: str, value: str) -> None:
    """Write ``/proc/sys/NAME`` of the pod netns (``/proc/sys/net`` follows the netns of
    the thread that opens it)."""
    try:
        with entered_netns(netns):
            fd = os.open(f"/proc/sys/{name}", os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise NetlinkFailure(f"cannot set {name} in {netns}: {e.strerror}") from e
