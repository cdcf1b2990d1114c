"""Pure BIRD 2 config generator for bgp routing: an iBGP full mesh between nodes where
each node announces its blocks (static blackholes, aggregated) and the /32s and
/128s it serves away from their block's node, and installs what it learns into the
kernel; plus sessions with configured routers outside the mesh (top-of-rack routers,
route reflectors), which get the same announcements. IPv4 rides sessions between
IPv4 addresses; IPv6 (when the node has an IPv6 address) rides its own sessions
between IPv6 addresses, each family with its own static, kernel and BGP channel, as
Calico peers per family."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ExternalPeer:
    """A router outside the node mesh: its address (either family) and AS number."""

    address: IPAddress
    asn: int


@dataclass(frozen=True, slots=True)
class BirdConfig:
    router_id: str
    asn: int
    blocks: tuple[IPNetwork, ...]
    migrated: tuple[IPAddress, ...]
    #: peer node name -> its IPv4 address
    peers: tuple[tuple[str, str], ...]
    #: peer node name -> its IPv6 address (empty unless ``ipv6``)
    peers6: tuple[tuple[str, str], ...] = ()
    #: render the IPv6 half (the node has an IPv6 address to peer from)
    ipv6: bool = False
    kernel_scan: int = 10
    external: tuple[ExternalPeer, ...] = ()

    def of_family(self, family: int) -> tuple[list[IPNetwork], list[IPAddress]]:
        return ([b for b in self.blocks if b.version == family],
                [a for a in self.migrated if a.version == family])


def parse_peer(text: str) -> ExternalPeer:
    """``'ADDRESS AS'``, e.g. ``'192.0.2.1 64513'`` or ``'2001:db8::1 64513'``
    (STICKYIP_AGENT_BGP_PEERS)."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"BGP peer {text!r}: expected 'ADDRESS AS', e.g. '192.0.2.1 64513'")
    try:
        address = ipaddress.ip_address(parts[0])
        asn = int(parts[1])
    except ValueError as e:
        raise ValueError(f"BGP peer {text!r}: {e}") from e
    if not 1 <= asn <= 4294967295:
        raise ValueError(f"BGP peer {text!r}: AS number {asn} is not in 1..4294967295")
    return ExternalPeer(address, asn)


def config_of(*, router_id: str, asn: int, blocks: Iterable[IPNetwork],
              migrated: Iterable[IPAddress], peers: Mapping[str, Mapping[int, str]],
              self_node: str, ipv6: bool = False,
              external: Iterable[ExternalPeer] = ()) -> BirdConfig:
    """``peers``: node name -> family -> address (the node directory's view). IPv6
    sessions (mesh and external) only with ``ipv6``."""
    def of(family: int) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((n, a[family]) for n, a in peers.items()
                            if n != self_node and a.get(family)))

    mesh, mesh6 = of(4), of(6) if ipv6 else ()
    nodes = {ipaddress.ip_address(a) for _, a in (*mesh, *mesh6)}
    return BirdConfig(
        router_id=router_id, asn=asn,
        blocks=tuple(sorted(set(blocks), key=lambda n: (n.version, n))),
        migrated=tuple(sorted(set(migrated), key=lambda a: (a.version, a))),
        peers=mesh, peers6=mesh6, ipv6=ipv6,
        # one session per address; a node already in the mesh gets no second one
        external=tuple(sorted({p.address: p for p in reversed(list(external))
                               if p.address not in nodes
                               and (ipv6 or p.address.version == 4)}.values(),
                              key=lambda p: (p.address.version, p.address))),
    )


def protocol_name(node: str, family: int = 4) -> str:
    """BIRD protocol names allow letters, digits and '_' only."""
    return ("peer_" if family == 4 else "peer6_") + re.sub(r"[^A-Za-z0-9]", "_", node)


def _family(cfg: BirdConfig, family: int) -> list[str]:
    """The static, kernel and BGP template of one family."""
    ch, sfx = ("ipv4", "") if family == 4 else ("ipv6", "6")
    host = 32 if family == 4 else 128
    blocks, migrated = cfg.of_family(family)
    lines = [
        "",
        f"# {ch}: learned routes go to the kernel; our own static announcements do not.",
        f"protocol kernel stickyip_kernel{sfx} {{",
        f"  {ch} {{ import none; export where source = RTS_BGP; }};",
        "  merge paths on;",
        f"  scan time {cfg.kernel_scan};",
        "}",
        "",
        f"protocol static stickyip_announce{sfx} {{",
        f"  {ch};",
    ]
    lines += [f"  route {b} blackhole;" for b in blocks]
    lines += [f"  route {a}/{host} blackhole;" for a in migrated]
    lines += [
        "}",
        "",
        f"template bgp stickyip_peer{sfx} {{",
        f"  local as {cfg.asn};",
        "  direct;  # peers share the node network: no multihop, direct gateways",
        "  connect retry time 1;",
        "  connect delay time 1;",
        "  error wait time 1, 10;",
        "  hold time 9;",
        f"  {ch} {{",
        "    import all;",
        "    export where source = RTS_STATIC;",
        "    next hop self;",
        "  };",
        "}",
    ]
    return lines


def render(cfg: BirdConfig) -> str:
    ipaddress.IPv4Address(cfg.router_id)  # refuse a config BIRD would reject
    lines = [
        "# Generated by the stickyip agent; do not edit (rewritten on every change).",
        f"router id {cfg.router_id};",
        "",
        "protocol device { scan time 10; }",
    ]
    lines += _family(cfg, 4)
    if cfg.ipv6:
        lines += _family(cfg, 6)
    for family, peers in ((4, cfg.peers), (6, cfg.peers6 if cfg.ipv6 else ())):
        template = "stickyip_peer" if family == 4 else "stickyip_peer6"
        for name, addr in peers:
            if ipaddress.ip_address(addr).version != family:
                raise ValueError(f"peer {name}: {addr} is not an IPv{family} address")
            lines += ["", f"protocol bgp {protocol_name(name, family)} from {template} {{",
                      f"  neighbor {addr} as {cfg.asn};", "}"]
    for p in cfg.external:
        template = "stickyip_peer" if p.address.version == 4 else "stickyip_peer6"
        name = re.sub(r"[^0-9A-Za-z]", "_", str(p.address))
        lines += ["", f"protocol bgp ext_{name} from {template} {{",
                  f"  neighbor {p.address} as {p.asn};", "}"]
    return "\n".join(lines) + "\n"
