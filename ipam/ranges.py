"""Pure IPv4 range and block arithmetic: pools, blocks, offsets, address lists.

Addresses inside a pool are handled as *offsets* from the pool's network
address; a block is a run of ``block_size`` offsets aligned on its size.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ipam.errors import InvalidAddress, InvalidPool, InvalidRequest

#: Blocks must be byte-aligned in the Redis bitmap (BITPOS works on byte ranges).
MIN_BLOCK_SIZE = 8
MAX_BLOCK_PREFIX = 29
#: A pool bitmap of a /8 is 2 MiB; larger pools are refused.
MIN_POOL_PREFIX = 8
MAX_EXCLUDED = 65536


@dataclass(frozen=True, slots=True)
class PoolGeometry:
    """Where a pool sits and how it is cut into blocks."""

    network: ipaddress.IPv4Network
    block_prefix: int

    @property
    def size(self) -> int:
        return self.network.num_addresses

    @property
    def block_size(self) -> int:
        return 1 << (32 - self.block_prefix)

    @property
    def block_count(self) -> int:
        return self.size // self.block_size

    @property
    def first(self) -> int:
        return int(self.network.network_address)

    @property
    def last(self) -> int:
        return int(self.network.broadcast_address)

    def contains(self, address: ipaddress.IPv4Address) -> bool:
        return self.first <= int(address) <= self.last

    def offset_of(self, address: ipaddress.IPv4Address | str) -> int:
        addr = parse_address(address) if isinstance(address, str) else address
        if not self.contains(addr):
            raise InvalidAddress(f"{addr} is outside pool range {self.network}")
        return int(addr) - self.first

    def address_at(self, offset: int) -> ipaddress.IPv4Address:
        if not 0 <= offset < self.size:
            raise InvalidAddress(f"offset {offset} is outside pool range {self.network}")
        return ipaddress.IPv4Address(self.first + offset)

    def block_of(self, offset: int) -> int:
        return offset // self.block_size

    def block_cidr(self, block: int) -> ipaddress.IPv4Network:
        if not 0 <= block < self.block_count:
            raise InvalidAddress(f"block {block} is outside pool range {self.network}")
        base = self.first + block * self.block_size
        return ipaddress.IPv4Network((base, self.block_prefix))

    def block_offsets(self, block: int) -> range:
        start = block * self.block_size
        return range(start, start + self.block_size)


def parse_network(text: str) -> ipaddress.IPv4Network:
    """Parse a pool CIDR strictly: host bits must be zero."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise InvalidPool(f"invalid CIDR {text!r}: {e}") from e
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidPool(f"CIDR {text!r} is IPv6; only IPv4 pools are supported for now")
    if net.prefixlen < MIN_POOL_PREFIX:
        raise InvalidPool(f"CIDR {text!r} is larger than /{MIN_POOL_PREFIX}; split it into pools")
    return net


def geometry(cidr: str, block_size: int) -> PoolGeometry:
    """Validate a pool CIDR with its block prefix length and return its geometry."""
    net = parse_network(cidr)
    if not net.prefixlen <= block_size <= MAX_BLOCK_PREFIX:
        raise InvalidPool(
            f"block size /{block_size} does not fit pool {net}: choose a prefix between "
            f"/{net.prefixlen} and /{MAX_BLOCK_PREFIX}"
        )
    return PoolGeometry(network=net, block_prefix=block_size)


def parse_address(text: str) -> ipaddress.IPv4Address:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError as e:
        raise InvalidAddress(f"invalid IPv4 address {text!r}") from e
    if not isinstance(addr, ipaddress.IPv4Address):
        raise InvalidAddress(f"{text!r} is IPv6; only IPv4 addresses are supported for now")
    return addr


def parse_address_list(text: str, *, limit: int = 65536) -> list[ipaddress.IPv4Address]:
    """Parse ``stickyip.io/ips`` syntax: comma-separated addresses and ``a-b`` ranges.

    Order is kept (ordinal i gets the i-th address); duplicates are refused.
    """
    out: list[ipaddress.IPv4Address] = []
    seen: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise InvalidAddress(f"empty entry in address list {text!r}")
        if "-" in item:
            a_text, _, b_text = item.partition("-")
            a, b = parse_address(a_text), parse_address(b_text)
            if int(b) < int(a):
                raise InvalidAddress(f"range {item!r} ends before it starts")
            if len(out) + int(b) - int(a) + 1 > limit:
                raise InvalidAddress(f"address list {text!r} is longer than {limit}")
            addrs: Iterable[ipaddress.IPv4Address] = (
                ipaddress.IPv4Address(i) for i in range(int(a), int(b) + 1)
            )
        else:
            addrs = [parse_address(item)]
        for addr in addrs:
            if int(addr) in seen:
                raise InvalidAddress(f"address {addr} appears twice in {text!r}")
            seen.add(int(addr))
            out.append(addr)
            if len(out) > limit:
                raise InvalidAddress(f"address list {text!r} is longer than {limit}")
    return out


def parse_excluded(items: Iterable[str], geo: PoolGeometry) -> list[int]:
    """Offsets of excluded addresses (single addresses, ``a-b`` ranges or CIDRs)."""
    offsets: set[int] = set()
    for item in items:
        text = item.strip()
        if "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError as e:
                raise InvalidPool(f"invalid excluded CIDR {text!r}") from e
            start, end = int(net.network_address), int(net.broadcast_address)
        else:
            addrs = parse_address_list(text, limit=MAX_EXCLUDED)
            start, end = int(addrs[0]), int(addrs[-1])
        if start < geo.first or end > geo.last:
            raise InvalidPool(f"excluded {text!r} is outside pool range {geo.network}")
        if len(offsets) + end - start + 1 > MAX_EXCLUDED:
            raise InvalidPool(f"more than {MAX_EXCLUDED} excluded addresses")
        offsets.update(range(start - geo.first, end - geo.first + 1))
    return sorted(offsets)


def default_excluded(geo: PoolGeometry) -> list[int]:
    """The pool's own first and last address, as Calico excludes them."""
    if geo.size <= 2:
        return []
    return [0, geo.size - 1]


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: ``retain: forever`` is stored as this sentinel.
FOREVER = -1.0


def parse_retain(text: str) -> float:
    """Parse ``stickyip.io/retain``: ``0s`` | a Go-style duration (``1h30m``) | ``forever``."""
    value = text.strip()
    if value == "forever":
        return FOREVER
    if not value:
        raise InvalidRequest("empty retain duration; use e.g. '0s', '24h' or 'forever'")
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(value):
        raise InvalidRequest(
            f"invalid retain duration {text!r}; use e.g. '0s', '90m', '24h', '7d' or 'forever'"
        )
    return total


def format_retain(seconds: float) -> str:
    if seconds == FOREVER:
        return "forever"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{int(seconds * 1000)}ms"


def iter_runs(offsets: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Collapse sorted offsets into inclusive runs, for compact display."""
    start = prev = None
    for o in offsets:
        if start is None:
            start = prev = o
        elif prev is not None and o == prev + 1:
            prev = o
        else:
            assert prev is not None
            yield start, prev
            start = prev = o
    if start is not None and prev is not None:
        yield start, prev
