"""The conflict probes and announcements as bytes (RFC 5227 ARP probe and
announcement, RFC 4862 DAD probe, RFC 4861 unsolicited advertisement), checked field
by field and checksum by checksum, and the reading of received frames into the
conflicts they reveal (and the ones they must not)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from datapath import probe
from datapath.probe import Conflict

MAC = bytes.fromhex("02aabbccddee")
OTHER = bytes.fromhex("025a5a5a5a5a")
V4 = ipaddress.IPv4Address("10.244.0.5")
V6 = ipaddress.IPv6Address("fd00:244::1:2:3")


def _verify_icmpv6(frame: bytes) -> None:
    """The ICMPv6 checksum verifies: the sum over pseudo header and message is 0."""
    ip6 = frame[14:]
    length = struct.unpack("!H", ip6[4:6])[0]
    pseudo = ip6[8:24] + ip6[24:40] + struct.pack("!I3xB", length, 58)
    assert probe.checksum(pseudo + ip6[40:40 + length]) == 0
    assert len(ip6) == 40 + length


def test_arp_probe_asks_for_the_target_from_the_unspecified_sender() -> None:
    f = probe.arp_probe(MAC, V4)
    assert f[:6] == b"\xff" * 6 and f[6:12] == MAC and f[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, oper = struct.unpack("!HHBBH", f[14:22])
    assert (htype, ptype, hlen, plen, oper) == (1, 0x0800, 6, 4, 1)
    assert f[22:28] == MAC                    # sender hardware address
    assert f[28:32] == bytes(4)               # sender IP 0.0.0.0: nobody learns from it
    assert f[32:38] == bytes(6)               # target hardware address unknown
    assert f[38:42] == V4.packed


def test_arp_announcement_names_the_address_as_sender_and_target() -> None:
    f = probe.arp_announcement(MAC, V4)
    assert f[:6] == b"\xff" * 6 and f[22:28] == MAC
    assert f[28:32] == f[38:42] == V4.packed


def test_dad_probe_is_a_solicitation_from_unspecified_to_the_solicited_node_group() -> None:
    f = probe.dad_probe(MAC, V6)
    group = ipaddress.IPv6Address("ff02::1:ff02:3")
    assert probe.solicited_node(V6) == group
    assert f[:6] == bytes.fromhex("3333ff020003") and f[6:12] == MAC
    assert f[12:14] == b"\x86\xdd"
    ip6 = f[14:]
    assert ip6[0] >> 4 == 6 and ip6[6] == 58 and ip6[7] == 255   # ICMPv6, hop limit 255
    assert ip6[8:24] == bytes(16)                                 # from ::
    assert ip6[24:40] == group.packed
    assert ip6[40] == 135 and ip6[41] == 0                        # neighbour solicitation
    assert ip6[48:64] == V6.packed                                # target
    assert len(ip6) == 40 + 24, "no source link-layer option from the unspecified address"
    _verify_icmpv6(f)


def test_unsolicited_advertisement_overrides_with_our_mac() -> None:
    f = probe.unsolicited_na(MAC, V6)
    assert f[:6] == bytes.fromhex("333300000001") and f[6:12] == MAC
    ip6 = f[14:]
    assert ip6[7] == 255 and ip6[8:24] == V6.packed and ip6[24:40] == probe.ALL_NODES.packed
    icmp = ip6[40:]
    assert icmp[0] == 136
    flags = struct.unpack("!I", icmp[4:8])[0]
    assert flags == probe.NA_FLAG_OVERRIDE  # override, not solicited, not a router
    assert icmp[8:24] == V6.packed
    assert icmp[24:26] == b"\x02\x01" and icmp[26:32] == MAC  # target link-layer address
    _verify_icmpv6(f)


def test_the_checksum_is_rfc_1071() -> None:
    # the example of RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2
    assert probe.checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    assert probe.checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded


def _arp(oper: int, sha: bytes, spa: str, tpa: str) -> bytes:
    return (MAC + sha + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, oper) + sha
            + ipaddress.IPv4Address(spa).packed + bytes(6) + ipaddress.IPv4Address(tpa).packed)


WANTED: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = {V4, V6}


def test_an_arp_reply_for_the_address_is_a_conflict_naming_mac_and_link() -> None:
    got = probe.conflict_in(_arp(2, OTHER, str(V4), "0.0.0.0"), own_mac=MAC, link="fab0",
                            wanted=WANTED)
    assert got == Conflict(V4, "02:5a:5a:5a:5a:5a", "fab0", "arp-reply")
    assert "10.244.0.5 answered from 02:5a:5a:5a:5a:5a on fab0" in got.describe()


def test_another_hosts_probe_or_announcement_for_the_address_is_a_conflict() -> None:
    assert probe.conflict_in(_arp(1, OTHER, "0.0.0.0", str(V4)), own_mac=MAC, link="l",
                             wanted=WANTED) == Conflict(V4, probe.mac_text(OTHER), "l",
                                                        "arp-probe")
    assert probe.conflict_in(_arp(1, OTHER, str(V4), str(V4)), own_mac=MAC, link="l",
                             wanted=WANTED) == Conflict(V4, probe.mac_text(OTHER), "l",
                                                        "arp-announcement")


@pytest.mark.parametrize("frame", [
    _arp(2, OTHER, "10.244.0.6", "0.0.0.0"),        # another address
    _arp(1, OTHER, "10.9.9.9", str(V4)),            # someone asking for it: no holder
    probe.arp_probe(MAC, V4),                       # our own probe, looped back
    _arp(2, OTHER, str(V4), "0.0.0.0")[:30],        # truncated
    b"\x00" * 10,
])
def test_frames_that_reveal_no_conflict(frame: bytes) -> None:
    assert probe.conflict_in(frame, own_mac=MAC, link="l", wanted=WANTED) is None


def _na(sender: bytes, target: ipaddress.IPv6Address, *, option: bytes | None,
        hop: int = 255) -> bytes:
    body = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + target.packed
    if option is not None:
        body += b"\x02\x01" + option
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, hop) + target.packed \
        + probe.ALL_NODES.packed + body
    return bytes.fromhex("333300000001") + sender + b"\x86\xdd" + ip6


def test_a_neighbour_advertisement_for_the_address_is_a_conflict() -> None:
    third = bytes.fromhex("02c0ffee0001")
    assert probe.conflict_in(_na(OTHER, V6, option=third), own_mac=MAC, link="l",
                             wanted=WANTED) == Conflict(V6, probe.mac_text(third), "l",
                                                        "neighbor-advert")
    # without a target link-layer option the Ethernet source tells who it is
    assert probe.conflict_in(_na(OTHER, V6, option=None), own_mac=MAC, link="l",
                             wanted=WANTED) == Conflict(V6, probe.mac_text(OTHER), "l",
                                                        "neighbor-advert")


def test_another_hosts_dad_probe_for_the_address_is_a_conflict() -> None:
    assert probe.conflict_in(probe.dad_probe(OTHER, V6), own_mac=MAC, link="l",
                             wanted=WANTED) == Conflict(V6, probe.mac_text(OTHER), "l",
                                                        "dad-probe")


@pytest.mark.parametrize("frame", [
    _na(OTHER, ipaddress.IPv6Address("fd00:244::9"), option=None),   # another target
    _na(OTHER, V6, option=None, hop=64),                             # forwarded: not ND
    probe.unsolicited_na(MAC, V6),                                   # our own
    probe.dad_probe(MAC, V6),                                        # our own probe
    _na(OTHER, V6, option=None)[:50],                                # truncated
])
def test_nd_frames_that_reveal_no_conflict(frame: bytes) -> None:
    assert probe.conflict_in(frame, own_mac=MAC, link="l", wanted=WANTED) is None
