"""Pure range, block and duration arithmetic."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipam import ranges
from ipam.errors import InvalidAddress, InvalidPool, InvalidRequest


def test_geometry_of_a_16_with_26_blocks() -> None:
    geo = ranges.geometry("10.20.0.0/16", 26)
    assert geo.size == 65536
    assert geo.block_size == 64
    assert geo.block_count == 1024
    assert geo.block_cidr(3) == ipaddress.IPv4Network("10.20.0.192/26")
    assert geo.offset_of("10.20.1.5") == 261
    assert geo.address_at(261) == ipaddress.IPv4Address("10.20.1.5")
    assert geo.block_of(261) == 4


@pytest.mark.parametrize(
    ("cidr", "block", "message"),
    [
        ("10.20.0.1/16", 26, "host bits"),
        ("10.20.0.0/33", 26, "invalid CIDR"),
        ("not-a-cidr", 26, "invalid CIDR"),
        ("10.0.0.0/7", 26, "larger than /8"),
        ("10.20.0.0/24", 16, "does not fit"),
        ("10.0.0.0/8", 15, "does not fit"),
        ("10.20.0.0/24", 33, "does not fit"),
        ("fd00::/31", 122, "larger than /32"),
        ("fd00::/64", 111, r"between /112 and /128"),
        ("fd00::/64", 129, "does not fit"),
        ("fd00::1/64", 122, "host bits"),
    ],
)
def test_bad_geometry_is_refused_with_a_reason(cidr: str, block: int, message: str) -> None:
    with pytest.raises(InvalidPool, match=message):
        ranges.geometry(cidr, block)


def test_outside_address_is_refused() -> None:
    geo = ranges.geometry("10.20.0.0/24", 28)
    with pytest.raises(InvalidAddress, match="outside pool"):
        geo.offset_of("10.21.0.1")
    with pytest.raises(InvalidAddress):
        geo.address_at(256)


def test_address_list_keeps_order_and_expands_ranges() -> None:
    got = ranges.parse_address_list("10.20.0.12, 10.20.0.10-10.20.0.11,10.20.0.30")
    assert [str(a) for a in got] == ["10.20.0.12", "10.20.0.10", "10.20.0.11", "10.20.0.30"]


@pytest.mark.parametrize(
    "text",
    ["", "10.20.0.1,,10.20.0.2", "10.20.0.5-10.20.0.1", "10.20.0.1,10.20.0.1", "10.20.0.300",
     "10.20.0.1-10.20.0.1-10.20.0.2", "10.20.0.1-fd00::2", "fd00::5-fd00::1", "fd00::zz"],
)
def test_bad_address_lists_are_refused(text: str) -> None:
    with pytest.raises(InvalidAddress):
        ranges.parse_address_list(text)


def test_address_list_limit() -> None:
    with pytest.raises(InvalidAddress, match="longer than"):
        ranges.parse_address_list("10.0.0.0-10.0.255.255", limit=1000)


def test_excluded_offsets_accept_addresses_ranges_and_cidrs() -> None:
    geo = ranges.geometry("10.20.0.0/24", 28)
    got = ranges.parse_excluded(["10.20.0.5", "10.20.0.10-10.20.0.12", "10.20.0.64/30"], geo)
    assert got == [5, 10, 11, 12, 64, 65, 66, 67]
    with pytest.raises(InvalidPool, match="outside"):
        ranges.parse_excluded(["10.21.0.1"], geo)
    assert ranges.default_excluded(geo) == [0, 255]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0.0), ("24h", 86400.0), ("1h30m", 5400.0), ("7d", 604800.0), ("250ms", 0.25),
     ("forever", ranges.FOREVER)],
)
def test_retain_durations(text: str, seconds: float) -> None:
    assert ranges.parse_retain(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "-5s", "5", "1h 30m", "forever!"])
def test_bad_retain_durations(text: str) -> None:
    with pytest.raises(InvalidRequest, match="retain"):
        ranges.parse_retain(text)


@given(st.integers(min_value=8, max_value=24), st.data())
def test_blocks_tile_the_pool_exactly(prefix: int, data: st.DataObject) -> None:
    block = data.draw(st.integers(min_value=max(prefix, 16), max_value=29))
    geo = ranges.geometry(f"10.0.0.0/{prefix}", block)
    assert geo.block_count * geo.block_size == geo.size
    b = data.draw(st.integers(min_value=0, max_value=geo.block_count - 1))
    cidr = geo.block_cidr(b)
    offs = geo.block_offsets(b)
    assert geo.offset_of(cidr.network_address) == offs.start
    assert geo.offset_of(cidr.broadcast_address) == offs.stop - 1
    assert {geo.block_of(o) for o in (offs.start, offs.stop - 1)} == {b}


def test_runs_collapse_sorted_offsets() -> None:
    assert list(ranges.iter_runs([1, 2, 3, 7, 9, 10])) == [(1, 3), (7, 7), (9, 10)]
    assert list(ranges.iter_runs([])) == []


def test_ipv6_geometry_of_a_64_with_122_blocks() -> None:
    geo = ranges.geometry("fd00:1::/64", 122)
    assert (geo.family, geo.size, geo.block_size) == (6, 2**64, 64)
    assert geo.block_count == 2**58 and geo.hex_width == 15
    last = ipaddress.IPv6Address("fd00:1::ffff:ffff:ffff:ffff")
    assert geo.locate(last) == (2**58 - 1, 63)
    assert geo.key_of(last) == "3ffffffffffffff:63"
    assert geo.address_of_key("3ffffffffffffff:63") == last
    assert geo.block_cidr(2**58 - 1) == ipaddress.IPv6Network("fd00:1::ffff:ffff:ffff:ffc0/122")
    # beyond 2^53: plain floats would have lost these
    assert geo.at(2**58 - 2, 1) == ipaddress.IPv6Address("fd00:1::ffff:ffff:ffff:ff81")
    with pytest.raises(InvalidAddress, match="outside pool"):
        geo.offset_of("fd00:2::")
    with pytest.raises(InvalidAddress, match="outside pool"):
        geo.offset_of("10.0.0.1")
    with pytest.raises(InvalidAddress, match="malformed"):
        geo.parse_block_hex("3ff")


def test_default_block_size_follows_the_family() -> None:
    from ipam.models import PoolSpec

    assert PoolSpec(name="a", cidr="10.0.0.0/16").block_size == 26
    assert PoolSpec(name="b", cidr="fd00::/64").block_size == 122
    assert PoolSpec(name="c", cidr="fd00::/64", block_size=112).block_size == 112


def test_spans_compare_as_strings_within_a_family() -> None:
    a = ranges.geometry("10.0.0.0/16", 26).span()
    b = ranges.geometry("10.1.0.0/16", 26).span()
    c = ranges.geometry("fd00::/64", 122).span()
    assert a[1] < b[0] and len(a[0]) == len(b[1])
    assert c[0].startswith("6:") and len(c[0]) == 2 + 32


@given(st.sampled_from(["10.0.0.0/8", "fd00::/32", "fd00:0:0:1::/64", "fe80::/112"]),
       st.data())
def test_block_and_offset_round_trip_at_the_edges(cidr: str, data: st.DataObject) -> None:
    net = ipaddress.ip_network(cidr)
    low, high = ranges.block_prefix_bounds(net.version, net.prefixlen)
    geo = ranges.geometry(cidr, data.draw(st.integers(min_value=low, max_value=high)))
    edge = st.integers(min_value=0, max_value=min(geo.size, 1 << 16) - 1)
    off = data.draw(st.one_of(edge, edge.map(lambda x: geo.size - 1 - x)))
    addr = geo.address_at(off)
    b, o = geo.locate(addr)
    assert 0 <= o < geo.block_size and 0 <= b < geo.block_count
    assert geo.address_of_key(geo.key_of(addr)) == addr
    assert addr in geo.block_cidr(b)
    assert int(geo.block_hex(b), 16) == b and len(geo.block_hex(b)) == geo.hex_width
