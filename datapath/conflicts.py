"""Address conflict detection on the node's links, with raw (AF_PACKET) sockets and the
frames of :mod:`datapath.probe`: before an address is brought up, probe every link for
another holder (ARP probe, IPv6 duplicate address detection) and listen a bounded time
for an answer; after an address is brought up, announce it (gratuitous ARP, unsolicited
neighbour advertisement). The probing runs in a worker thread: it blocks on ``select``
for at most the probe wait.

"The node's links" are its up Ethernet links other than loopback and the pods' veths
(or the links named in the settings): where a forgotten VM, a hand-configured host or
another cluster would answer for the address."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from datapath import probe
from datapath.errors import NetlinkFailure
from datapath.probe import Conflict, IPAddress

log = logging.getLogger("stickyip.datapath")

ARPHRD_ETHER = 1
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
SIOCGIFFLAGS = 0x8913
SIOCGIFHWADDR = 0x8927
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
SO_ATTACH_FILTER = 26

#: classic BPF for the IPv6 socket: ICMPv6 neighbour solicitations and advertisements
#: without extension headers (as neighbour discovery sends them), nothing else
_ND_FILTER = [
    (0x28, 0, 0, 12),          # ldh [12]          ethertype
    (0x15, 0, 5, 0x86DD),      # jeq IPv6 ?        else drop
    (0x30, 0, 0, 20),          # ldb [20]          next header
    (0x15, 0, 3, 58),          # jeq ICMPv6 ?      else drop
    (0x30, 0, 0, 54),          # ldb [54]          ICMPv6 type
    (0x35, 0, 1, 135),         # jge 135 ?         else drop
    (0x25, 0, 1, 136),         # jgt 136 ?  drop : accept
    (0x06, 0, 0, 0),           # ret 0             drop
    (0x06, 0, 0, 0x40000),     # ret 256k          accept
]


def _nd_filter() -> bytes:
    """The program as an array of ``struct sock_filter``."""
    return b"".join(struct.pack("HBBI", *insn) for insn in _ND_FILTER)


@dataclass(frozen=True, slots=True)
class Link:
    """A link conflicts are probed on: its name, index and MAC."""

    name: str
    index: int
    mac: bytes


def node_links(skip_prefix: str, only: Sequence[str] = ()) -> list[Link]:
    """The node's up Ethernet links, not loopback nor pod veths (``skip_prefix``), or
    just those named in ``only`` (each must exist). Asked of the kernel of the
    process's own network namespace (ioctl), not of /sys, which may show another."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        indexes = dict((name, index) for index, name in socket.if_nameindex())
        for name in list(only) or sorted(indexes):
            if not only and name.startswith(skip_prefix):
                continue  # a pod veth (a node has hundreds): no ioctl, no rtnl lock taken
            try:
                req = struct.pack("16sH14s", name.encode(), 0, b"")
                flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req)[:18])[1]
                _, kind, hw = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFHWADDR, req))
                index = indexes[name]
            except (OSError, KeyError) as e:
                if only:
                    raise NetlinkFailure(f"conflict probe link {name!r} does not exist "
                                         f"on this node ({e})") from e
                continue
            if not only and (kind != ARPHRD_ETHER or flags & IFF_LOOPBACK
                             or not flags & IFF_UP or name.startswith(skip_prefix)):
                continue
            out.append(Link(name, index, hw[:6]))
    return out


class RawProber:
    """Probes and announcements on the node's links (an :class:`AddressProber`).

    ``wait``: how long to listen for an answer after the first probe (seconds); the
    probe is sent twice, at the start and half-way, to survive one lost frame. 0 turns
    probing off (announcements still go out)."""

    def __init__(self, *, skip_prefix: str, wait: float, links: Sequence[str] = (),
                 announce: bool = True) -> None:
        self.skip_prefix = skip_prefix
        self.wait = wait
        self.links = list(links)
        self.announce_enabled = announce

    async def probe(self, addresses: Sequence[IPAddress]) -> list[Conflict]:
        if self.wait <= 0 or not addresses:
            return []
        return await asyncio.to_thread(self._probe, list(addresses))

    async def announce(self, addresses: Sequence[IPAddress]) -> None:
        if self.announce_enabled and addresses:
            await asyncio.to_thread(self._announce, list(addresses))

    # ------------------------------------------------------------ the work

    def _links(self) -> list[Link]:
        return node_links(self.skip_prefix, self.links)

    def _probe(self, addresses: list[IPAddress]) -> list[Conflict]:
        wanted = set(addresses)
        socks: list[tuple[socket.socket, Link]] = []
        try:
            for link in self._links():
                for family in sorted({a.version for a in addresses}):
                    socks.append((_open(link, family), link))
            if not socks:
                return []
            frames = [(s, probe.probe(link.mac, a)) for s, link in socks
                      for a in addresses if _family_of(s) == a.version]
            for s, frame in frames:
                s.send(frame)
            found: dict[IPAddress, Conflict] = {}
            start = time.monotonic()
            resent = False
            while True:
                now = time.monotonic()
                if not resent and now - start >= self.wait / 2:
                    for s, frame in frames:
                        s.send(frame)
                    resent = True
                left = (self.wait / 2 if not resent else self.wait) - (now - start)
                if left <= 0:
                    break
                ready, _, _ = select.select([s for s, _ in socks], [], [], left)
                for s in ready:
                    link = next(lk for sk, lk in socks if sk is s)
                    while True:
                        try:
                            data, addr = s.recvfrom(2048)
                        except BlockingIOError:
                            break
                        if addr[2] == PACKET_OUTGOING:
                            continue
                        c = probe.conflict_in(data, own_mac=link.mac, link=link.name,
                                              wanted=wanted)
                        if c is not None and c.address not in found:
                            found[c.address] = c
            return sorted(found.values(), key=lambda c: (c.address.version, c.address))
        except OSError as e:
            raise NetlinkFailure(f"cannot probe the node's links for address conflicts: "
                                 f"{e.strerror or e}") from e
        finally:
            _close_later([s for s, _ in socks])

    def _announce(self, addresses: list[IPAddress]) -> None:
        socks = []
        try:
            for link in self._links():
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
                socks.append(s)
                s.bind((link.name, 0))
                for a in addresses:
                    s.send(probe.announcement(link.mac, a))
        except OSError as e:
            # an announcement is a courtesy to neighbours; the pod runs without it
            log.warning("cannot announce addresses", extra={"error": str(e)})
        finally:
            _close_later(socks)


def _close_later(socks: list[socket.socket]) -> None:
    """Close raw sockets off the caller's path: closing a packet socket waits for an
    RCU grace period (milliseconds to tens of them on a busy node), which an ADD need
    not wait for."""
    def close() -> None:
        for s in socks:
            s.close()
    if socks:
        threading.Thread(target=close, daemon=True, name="close-raw-sockets").start()


def _open(link: Link, family: int) -> socket.socket:
    """A raw socket on ``link`` receiving ARP (4) or neighbour discovery (6) only."""
    proto = probe.ETH_P_ARP if family == 4 else probe.ETH_P_IPV6
    # Protocol 0 until bound: a socket created for a protocol receives it on every link
    # at once, and binding it to one link then waits for an RCU grace period.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        if family == 6:
            prog = ctypes.create_string_buffer(_nd_filter())  # copied by the kernel
            fprog = struct.pack("HL", len(_ND_FILTER), ctypes.addressof(prog))
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            # the all-nodes group the holder's advertisement goes to
            mreq = struct.pack("iHH8s", link.index, PACKET_MR_MULTICAST, 6,
                               probe.multicast_mac(probe.ALL_NODES))
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        s.bind((link.name, proto))  # CPython puts this one in network order itself
        s.setblocking(False)
        _drain(s)
        return s
    except BaseException:
        s.close()
        raise


def _family_of(s: socket.socket) -> int:
    return 4 if s.getsockname()[1] == probe.ETH_P_ARP else 6


def _drain(s: socket.socket) -> None:
    """Frames queued between socket() and the filter taking effect are not ours."""
    with contextlib.suppress(BlockingIOError):
        while True:
            s.recv(2048)

