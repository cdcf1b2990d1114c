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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from datapath.errors import InterfaceExists, NetlinkFailure, UnknownContainer
from datapath.models import PodLink, TcFilter
from datapath.routing import Route

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

    async def ensure_neigh(self, index: int, address: ipaddress.IPv4Address, mac: str) -> None:
        try:
            await self.ipr.neigh("replace", dst=str(address), lladdr=mac, ifindex=index,
                                 state=NUD_PERMANENT)
        except NetlinkError as e:
            raise _err(f"neighbour {address} on {index}", e) from e

    async def neigh_mac(self, index: int, address: ipaddress.IPv4Address) -> str | None:
        """MAC of the permanent neighbour ``address`` on ``index`` (a kernel lookup of one
        entry: dumping every neighbour of a node with many pods costs O(pods))."""
        try:
            msgs = await self.ipr.neigh("get", dst=str(address), ifindex=index)
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
                       gateway: ipaddress.IPv4Address | None = None) -> PodLink | None:
        """The pod's interface as the kernel has it (one socket, a handful of requests);
        with ``gateway``, also whether its default route and gateway neighbour exist."""
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
                                 await _all(await ipr.addr("dump", index=idx, family=2))))
            routes_ok = False
            if gateway is not None:
                default = any(r["dst_len"] == 0 and r.get("gateway") == str(gateway)
                              and r.get("oif") == idx for r in
                              await _all(await ipr.route("dump", table=RT_TABLE_MAIN,
                                                         family=2)))
                neigh = any(n["state"] & NUD_PERMANENT for n in await _all(
                    await ipr.neigh("dump", ifindex=idx)) if n.get("dst") == str(gateway))
                routes_ok = default and neigh
            return PodLink(index=idx, mac=str(msg.get("address")),
                           up=bool(msg["flags"] & 1), addresses=addrs, routes_ok=routes_ok)

    async def configure_pod(self, netns: str, ifname: str, address: ipaddress.IPv4Address,
                            gateway: ipaddress.IPv4Address, host_mac: str) -> str:
        """Address /32, link up, a permanent neighbour for the link-local gateway and
        the default route through it (as Calico does). Idempotent; returns the pod MAC."""
        async with self._pod(netns) as ipr:
            lo = await ipr.link_lookup(ifname="lo")
            if lo:
                await ipr.link("set", index=lo[0], state="up")
            found = await ipr.link_lookup(ifname=ifname)
            if not found:
                raise NetlinkFailure(f"{ifname} missing in {netns}")
            idx = found[0]
            have = {str(a.get("address")) async for a in
                    await ipr.addr("dump", index=idx, family=2)}
            if str(address) not in have:
                await ipr.addr("add", index=idx, address=str(address), prefixlen=32)
            await ipr.link("set", index=idx, state="up")
            await ipr.neigh("replace", dst=str(gateway), lladdr=host_mac, ifindex=idx,
                            state=NUD_PERMANENT)
            await ipr.route("replace", dst=f"{gateway}/32", oif=idx, scope=RT_SCOPE_LINK)
            await ipr.route("replace", dst="0.0.0.0/0", gateway=str(gateway), oif=idx)
            msg = await _first(await ipr.link("get", index=idx))
            return str(msg.get("address"))

    async def pod_routes_ok(self, netns: str, ifname: str,
                            gateway: ipaddress.IPv4Address) -> bool:
        pod = await self.pod_link(netns, ifname, gateway)
        return pod is not None and pod.routes_ok

    # ----------------------------------------------------------------- routes

    async def routes(self, names: dict[int, str]) -> list[Route]:
        """Routes in the main table carrying the agent's protocol number; ``names``
        maps the ifindex of dev routes to interface names (unknown ones show as #N)."""
        out = []
        async for r in await self.ipr.route("dump", table=RT_TABLE_MAIN, family=2):
            if r["proto"] != self.route_protocol:
                continue
            dst = ipaddress.IPv4Network(f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}")
            if r["type"] == RTN_BLACKHOLE:
                out.append(Route(dst, "blackhole"))
            elif r.get("gateway"):
                out.append(Route(dst, "via", str(r.get("gateway"))))
            elif r.get("oif") is not None:
                out.append(Route(dst, "dev", names.get(int(r.get("oif")), f"#{r.get('oif')}")))
        return out

    def _route_args(self, route: Route, names: dict[str, int]) -> dict[str, Any]:
        args: dict[str, Any] = {"dst": str(route.dst), "table": RT_TABLE_MAIN,
                                "proto": self.route_protocol}
        if route.kind == "blackhole":
            args["type"] = "blackhole"
        elif route.kind == "via":
            args["gateway"] = route.target
        else:
            idx = names.get(route.target)
            if idx is None:
                raise NetlinkFailure(f"route {route.dst}: no interface {route.target}")
            args["oif"] = idx
            args["scope"] = RT_SCOPE_LINK
        return args

    async def apply_route(self, op: str, route: Route, names: dict[str, int]) -> None:
        try:
            if op == "del":
                # scope "nowhere" matches any scope, as iproute2 does for deletes
                args = {"dst": str(route.dst), "table": RT_TABLE_MAIN, "proto": self.route_protocol,
                        "scope": RT_SCOPE_NOWHERE}
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

    async def global_address(self, skip_prefix: str) -> str:
        """First global IPv4 address on a non-pod, non-loopback interface."""
        names = {i: n for n, i in (await self.link_names()).items()}
        async for a in await self.ipr.addr("dump", family=2):
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


def enable_forwarding() -> None:
    """The node routes pod traffic: IPv4 forwarding on in this netns."""
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1\n")
