"""Pure address-conflict frames: the probes that ask whether anyone on a link holds an
address (an ARP probe per RFC 5227 for IPv4; duplicate address detection per RFC
4862, a neighbour solicitation from the unspecified address to the solicited-node
multicast group, for IPv6), the announcements that tell neighbours an address now
lives behind this node (gratuitous ARP, unsolicited neighbour advertisement), and
the reading of received frames into the conflicts they reveal. Bytes in, bytes out:
:mod:`datapath.conflicts` sends and receives them."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LL_ADDR = 2
ARP_REQUEST = 1
ARP_REPLY = 2


@dataclass(frozen=True, slots=True)
class Conflict:
    """Another holder of ``address`` answered on ``link`` from ``mac``."""

    address: IPAddress
    mac: str
    link: str
    #: what revealed it: "arp-reply", "arp-probe", "neighbor-advert", "dad-probe"
    how: str

    def describe(self) -> str:
        return f"{self.address} answered from {self.mac} on {self.link} ({self.how})"


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def _ether(dst: bytes, src: bytes, proto: int) -> bytes:
    return dst + src + struct.pack("!H", proto)


def _arp(oper: int, sha: bytes, spa: ipaddress.IPv4Address, tha: bytes,
         tpa: ipaddress.IPv4Address) -> bytes:
    return struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, oper) + sha + spa.packed + tha + tpa.packed


def arp_probe(mac: bytes, target: ipaddress.IPv4Address) -> bytes:
    """RFC 5227 2.1.1: an ARP request for ``target`` with sender address 0.0.0.0, so
    that no receiver learns anything from it, broadcast."""
    return _ether(BROADCAST, mac, ETH_P_ARP) + _arp(
        ARP_REQUEST, mac, ipaddress.IPv4Address(0), b"\0" * 6, target)


def arp_announcement(mac: bytes, address: ipaddress.IPv4Address) -> bytes:
    """RFC 5227 2.3: an ARP request with sender and target address both ``address``
    (gratuitous ARP): neighbours holding an entry for it update it to ``mac``."""
    return _ether(BROADCAST, mac, ETH_P_ARP) + _arp(ARP_REQUEST, mac, address, b"\0" * 6,
                                                     address)


def solicited_node(address: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """ff02::1:ffXX:XXXX, the group a holder of ``address`` listens on (RFC 4291)."""
    return ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + address.packed[13:])


def multicast_mac(group: ipaddress.IPv6Address) -> bytes:
    """33:33 and the group's last 32 bits (RFC 2464 7)."""
    return b"\x33\x33" + group.packed[12:]


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmpv6(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, body: bytes) -> bytes:
    """An IPv6 header (hop limit 255, as neighbour discovery requires) and the ICMPv6
    message ``body`` (checksum field zero) with its checksum filled in."""
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    header = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, 255) + src.packed + dst.packed
    return header + body


def dad_probe(mac: bytes, target: ipaddress.IPv6Address) -> bytes:
    """RFC 4862 5.4.2: a neighbour solicitation for ``target`` from the unspecified
    address to its solicited-node group, without a source link-layer option."""
    group = solicited_node(target)
    body = struct.pack("!BBHI", ND_NEIGHBOR_SOLICIT, 0, 0, 0) + target.packed
    return _ether(multicast_mac(group), mac, ETH_P_IPV6) + _icmpv6(
        ipaddress.IPv6Address(0), group, body)


def unsolicited_na(mac: bytes, address: ipaddress.IPv6Address) -> bytes:
    """RFC 4861 7.2.6: an unsolicited neighbour advertisement of ``address`` at ``mac``
    to all nodes, Override set: neighbours holding an entry for it update it."""
    body = (struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE) + address.packed
            + struct.pack("!BB", ND_OPT_TARGET_LL_ADDR, 1) + mac)
    return _ether(multicast_mac(ALL_NODES), mac, ETH_P_IPV6) + _icmpv6(address, ALL_NODES, body)


def probe(mac: bytes, address: IPAddress) -> bytes:
    return arp_probe(mac, address) if address.version == 4 else dad_probe(mac, address)


def announcement(mac: bytes, address: IPAddress) -> bytes:
    return (arp_announcement(mac, address) if address.version == 4
            else unsolicited_na(mac, address))


def conflict_in(frame: bytes, *, own_mac: bytes, link: str,
                wanted: set[IPAddress]) -> Conflict | None:
    """The conflict a received frame reveals for one of the ``wanted`` addresses: an ARP
    packet whose sender is that address (a reply, or the holder's own announcement), an
    ARP probe for it from another host (RFC 5227 2.1.1: someone else is probing the same
    address now), a neighbour advertisement for it, or another host's DAD probe for it.
    Frames from ``own_mac`` (our own probes looped back) reveal nothing."""
    if len(frame) < 14 or frame[6:12] == own_mac:
        return None
    (proto,) = struct.unpack("!H", frame[12:14])
    if proto == ETH_P_ARP:
        return _arp_conflict(frame[14:], own_mac, link, wanted)
    if proto == ETH_P_IPV6:
        return _nd_conflict(frame[14:], frame[6:12], own_mac, link, wanted)
    return None


def _arp_conflict(arp: bytes, own_mac: bytes, link: str, wanted: set[IPAddress]
                  ) -> Conflict | None:
    if len(arp) < 28:
        return None
    htype, ptype, hlen, plen, oper = struct.unpack("!HHBBH", arp[:8])
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    sha = arp[8:14]
    spa, tpa = ipaddress.IPv4Address(arp[14:18]), ipaddress.IPv4Address(arp[24:28])
    if sha == own_mac:
        return None
    if spa in wanted:
        return Conflict(spa, mac_text(sha), link, "arp-reply" if oper == ARP_REPLY
                        else "arp-announcement")
    if oper == ARP_REQUEST and int(spa) == 0 and tpa in wanted:
        return Conflict(tpa, mac_text(sha), link, "arp-probe")
    return None


def _nd_conflict(ip6: bytes, src_mac: bytes, own_mac: bytes, link: str,
                 wanted: set[IPAddress]) -> Conflict | None:
    if len(ip6) < 40 + 24 or ip6[6] != ICMPV6 or ip6[7] != 255:
        return None  # neighbour discovery always has hop limit 255 (RFC 4861)
    icmp = ip6[40:]
    target = ipaddress.IPv6Address(icmp[8:24])
    if target not in wanted:
        return None
    if icmp[0] == ND_NEIGHBOR_ADVERT:
        mac = src_mac
        opts = icmp[24:]
        while len(opts) >= 8 and opts[1]:
            if opts[0] == ND_OPT_TARGET_LL_ADDR:
                mac = opts[2:8]
                break
            opts = opts[opts[1] * 8:]
        return None if mac == own_mac else Conflict(target, mac_text(mac), link,
                                                      "neighbor-advert")
    source = ipaddress.IPv6Address(ip6[8:24])
    if icmp[0] == ND_NEIGHBOR_SOLICIT and source.is_unspecified:
        return Conflict(target, mac_text(src_mac), link, "dad-probe")
    return None
