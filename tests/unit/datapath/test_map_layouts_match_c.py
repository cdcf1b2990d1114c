"""The ctypes layouts in datapath/maps.py match the C structs in bpf/lib/endpoint.h
(sizes and field order), so the agent and the tc program read the same bytes."""

from __future__ import annotations

import ctypes
import ipaddress
import re
from pathlib import Path

from datapath import maps

HEADER = Path(maps.__file__).parent / "bpf" / "lib" / "endpoint.h"
SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "__u32": 4, "__u64": 8}


def c_structs() -> dict[str, list[tuple[str, int]]]:
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    out = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\};", text, flags=re.S):
        out[name] = [(f, SIZES[t]) for t, f in re.findall(r"(\w+)\s+(\w+)\s*;", body)]
    return out


def c_size(fields: list[tuple[str, int]]) -> int:
    off, align = 0, 1
    for _, size in fields:
        off = (off + size - 1) // size * size + size
        align = max(align, size)
    return (off + align - 1) // align * align


def test_layouts_match() -> None:
    structs = c_structs()
    for cname, ours in (("stickyip_endpoint", maps.EndpointInfo),
                        ("stickyip_ep_counters", maps.EndpointCounters)):
        fields = structs[cname]
        assert c_size(fields) == ctypes.sizeof(ours), cname
        assert [f for f, _ in fields] == [f[0] for f in ours._fields_], cname
        assert [s for _, s in fields] == [ctypes.sizeof(f[1]) for f in ours._fields_], cname


def test_map_names_match_the_pinned_tables() -> None:
    text = HEADER.read_text()
    for name in (maps.ENDPOINTS_MAP, maps.COUNTERS_MAP):
        assert re.search(rf"\b{name}\s*,", text) and f'"/{name}"' in text


def test_address_byte_order_is_network_order_in_memory() -> None:
    info = maps.endpoint_info(ipaddress.IPv4Address("10.1.2.3"), fenced=True)
    assert bytes(info)[:4] == bytes([10, 1, 2, 3])
    assert info.flags == maps.FLAG_FENCED
    assert maps.be32_to_addr(info.addr) == ipaddress.IPv4Address("10.1.2.3")
