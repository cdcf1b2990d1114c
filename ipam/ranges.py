"""Pure IPv4/IPv6 range and block arithmetic: pools, blocks, offsets, address lists.

An address inside a pool is an *offset* from the pool's network address (a Python
int, however large), or equivalently a pair (block index B, offset-in-block o).
The store keeps only the pair: ``o`` is a small integer (a block holds at most
2^16 addresses) and ``B`` travels as a fixed-width lower-case hex string
(:meth:`PoolGeometry.block_hex`), because Redis Lua numbers are doubles and an
IPv6 block index can be far above 2^53. Lua never does arithmetic on ``B``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from ipam.errors import InvalidAddress, InvalidPool, InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Family = Literal[4, 6]

#: A block holds at most 2^16 addresses (an 8 KiB bitmap in Redis) and at least one.
MAX_BLOCK_BITS = 16
#: Largest pools: an IPv4 /8, an IPv6 /32 (split larger ranges into pools).
MIN_POOL_PREFIX: dict[int, int] = {4: 8, 6: 32}
#: Default block prefix per family (64 addresses, as Calico cuts IPv4 /26 and IPv6 /122).
DEFAULT_BLOCK_PREFIX: dict[int, int] = {4: 26, 6: 122}
MAX_EXCLUDED = 65536
#: Kept for callers that name the IPv4 bounds.
MAX_BLOCK_PREFIX = 32


def family_bits(family: int) -> int:
    return 32 if family == 4 else 128


def block_prefix_bounds(family: int, pool_prefix: int) -> tuple[int, int]:
    """The block prefix lengths allowed for a pool: /16../32 (IPv4) or /112../128
    (IPv6), and never shorter than the pool itself."""
    bits = family_bits(family)
    return max(pool_prefix, bits - MAX_BLOCK_BITS), bits


@dataclass(frozen=True, slots=True)
class PoolGeometry:
    """Where a pool sits and how it is cut into blocks."""

    network: IPNetwork
    block_prefix: int
    # derived once (at() runs for every address a store reply carries)
    _first: int = field(init=False, repr=False, compare=False)
    _size: int = field(init=False, repr=False, compare=False)
    _bs: int = field(init=False, repr=False, compare=False)
    _cls: type[IPAddress] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v4 = self.network.version == 4
        object.__setattr__(self, "_first", int(self.network.network_address))
        object.__setattr__(self, "_size", self.network.num_addresses)
        object.__setattr__(self, "_bs", 1 << ((32 if v4 else 128) - self.block_prefix))
        object.__setattr__(self, "_cls", ipaddress.IPv4Address if v4 else ipaddress.IPv6Address)

    @property
    def family(self) -> Family:
        return 4 if self.network.version == 4 else 6

    @property
    def bits(self) -> int:
        return family_bits(self.family)

    @property
    def size(self) -> int:
        return self.network.num_addresses

    @property
    def block_size(self) -> int:
        return 1 << (self.bits - self.block_prefix)

    @property
    def block_count(self) -> int:
        return self.size // self.block_size

    @property
    def hex_width(self) -> int:
        """Digits of a block index in the store (fixed width: string order = number order)."""
        return max(1, len(format(self.block_count - 1, "x")))

    @property
    def first(self) -> int:
        return int(self.network.network_address)

    @property
    def last(self) -> int:
        return int(self.network.broadcast_address)

    def contains(self, address: IPAddress) -> bool:
        return address.version == self.network.version and (
            self.first <= int(address) <= self.last)

    def offset_of(self, address: IPAddress | str) -> int:
        addr = parse_address(address) if isinstance(address, str) else address
        if not self.contains(addr):
            raise InvalidAddress(f"{addr} is outside pool range {self.network}")
        return int(addr) - self.first

    def address_at(self, offset: int) -> IPAddress:
        if not 0 <= offset < self.size:
            raise InvalidAddress(f"offset {offset} is outside pool range {self.network}")
        if self.family == 4:
            return ipaddress.IPv4Address(self.first + offset)
        return ipaddress.IPv6Address(self.first + offset)

    def block_of(self, offset: int) -> int:
        return offset // self.block_size

    def block_cidr(self, block: int) -> IPNetwork:
        if not 0 <= block < self.block_count:
            raise InvalidAddress(f"block {block} is outside pool range {self.network}")
        base = self.first + block * self.block_size
        if self.family == 4:
            return ipaddress.IPv4Network((base, self.block_prefix))
        return ipaddress.IPv6Network((base, self.block_prefix))

    def block_offsets(self, block: int) -> range:
        start = block * self.block_size
        return range(start, start + self.block_size)

    # --------------------------------------------------- the store's (B, o) pairs

    def locate(self, address: IPAddress | str) -> tuple[int, int]:
        """(block index, offset inside the block) of an address of this pool."""
        return divmod(self.offset_of(address), self.block_size)

    def at(self, block: int, o: int) -> IPAddress:
        bs = self._bs
        if not 0 <= o < bs:
            raise InvalidAddress(f"offset {o} is outside a block of {bs}")
        offset = block * bs + o
        if not 0 <= offset < self._size:
            raise InvalidAddress(f"offset {offset} is outside pool range {self.network}")
        return self._cls(self._first + offset)

    def block_hex(self, block: int) -> str:
        if not 0 <= block < self.block_count:
            raise InvalidAddress(f"block {block} is outside pool range {self.network}")
        return format(block, f"0{self.hex_width}x")

    def parse_block_hex(self, text: str) -> int:
        if len(text) != self.hex_width or not re.fullmatch(r"[0-9a-f]+", text):
            raise InvalidAddress(f"malformed block index {text!r} for pool {self.network}")
        block = int(text, 16)
        if block >= self.block_count:
            raise InvalidAddress(f"block {text!r} is outside pool range {self.network}")
        return block

    def key_of(self, address: IPAddress | str) -> str:
        """The store's field for an address: ``BLOCKHEX:o``."""
        b, o = self.locate(address)
        return f"{self.block_hex(b)}:{o}"

    def address_of_key(self, key: str) -> IPAddress:
        b, _, o = key.partition(":")
        if not o.isdigit():
            raise InvalidAddress(f"malformed address key {key!r}")
        return self.at(self.parse_block_hex(b), int(o))

    def span(self) -> tuple[str, str]:
        """First and last address as family-tagged fixed-width hex: comparable as
        strings, so the store can check overlaps without big numbers."""
        width = self.bits // 4
        return (f"{self.family}:{self.first:0{width}x}", f"{self.family}:{self.last:0{width}x}")


def parse_network(text: str) -> IPNetwork:
    """Parse a pool CIDR strictly: host bits must be zero."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise InvalidPool(f"invalid CIDR {text!r}: {e}") from e
    smallest = MIN_POOL_PREFIX[net.version]
    if net.prefixlen < smallest:
        raise InvalidPool(
            f"CIDR {text!r} is larger than /{smallest} (the largest IPv{net.version} pool); "
            "split it into pools")
    return net


def geometry(cidr: str, block_size: int) -> PoolGeometry:
    """Validate a pool CIDR with its block prefix length and return its geometry."""
    net = parse_network(cidr)
    low, high = block_prefix_bounds(net.version, net.prefixlen)
    if not low <= block_size <= high:
        raise InvalidPool(
            f"block size /{block_size} does not fit IPv{net.version} pool {net}: choose a "
            f"prefix between /{low} and /{high}"
        )
    return PoolGeometry(network=net, block_prefix=block_size)


def parse_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as e:
        raise InvalidAddress(f"invalid IP address {text!r}") from e


def parse_address_list(text: str, *, limit: int = 65536) -> list[IPAddress]:
    """Parse ``stickyip.io/ips`` syntax: comma-separated addresses and ``a-b`` ranges
    (IPv4 or IPv6; a range stays within one family).

    Order is kept (ordinal i gets the i-th address); duplicates are refused.
    """
    out: list[IPAddress] = []
    seen: set[IPAddress] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise InvalidAddress(f"empty entry in address list {text!r}")
        addrs: Iterable[IPAddress]
        if "-" in item:
            a_text, _, b_text = item.partition("-")
            a, b = parse_address(a_text), parse_address(b_text)
            if a.version != b.version:
                raise InvalidAddress(f"range {item!r} mixes IPv4 and IPv6")
            if int(b) < int(a):
                raise InvalidAddress(f"range {item!r} ends before it starts")
            if len(out) + int(b) - int(a) + 1 > limit:
                raise InvalidAddress(f"address list {text!r} is longer than {limit}")
            make = ipaddress.IPv4Address if a.version == 4 else ipaddress.IPv6Address
            addrs = (make(i) for i in range(int(a), int(b) + 1))
        else:
            addrs = [parse_address(item)]
        for addr in addrs:
            if addr in seen:
                raise InvalidAddress(f"address {addr} appears twice in {text!r}")
            seen.add(addr)
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
            if net.version != geo.network.version:
                raise InvalidPool(f"excluded {text!r} is outside pool range {geo.network}")
            start, end = int(net.network_address), int(net.broadcast_address)
        else:
            if "-" in text:
                a_text, _, b_text = text.partition("-")
                a, b = parse_address(a_text), parse_address(b_text)
                if a.version != b.version or int(b) < int(a):
                    raise InvalidPool(f"invalid excluded range {text!r}")
            else:
                a = b = parse_address(text)
            if a.version != geo.network.version:
                raise InvalidPool(f"excluded {text!r} is outside pool range {geo.network}")
            start, end = int(a), int(b)
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
