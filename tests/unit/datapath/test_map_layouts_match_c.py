"""Every map module in datapath/maps matches its C declaration in datapath/bpf/lib
(map name, key and value struct, field names, sizes and offsets), read from the
headers without compiling anything, so the agent and the programs read the same
bytes. The loader checks the same again against the compiled object at start-up."""

from __future__ import annotations

import ctypes
import ipaddress
import re
from pathlib import Path

import pytest

from datapath import maps
from datapath.maps import endpoints, ep_counters, fields
from datapath.maps.layout import MapLayout
from datapath.maps.state import MemoryMaps

LIB = Path(maps.__file__).parent.parent / "bpf" / "lib"
SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}


def _size(ctype: str) -> int:
    return SIZES[ctype.removeprefix("__").replace("be", "u")]


def _headers() -> dict[str, str]:
    return {p.name: re.sub(r"/\*.*?\*/", "", p.read_text(), flags=re.S)
            for p in LIB.glob("*.h")}


def c_structs(text: str) -> dict[str, list[tuple[str, int, int]]]:
    """struct -> (field, size, alignment) of each field (arrays: element alignment)."""
    out = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\};", text, flags=re.S):
        out[f"struct {name}"] = [(f, _size(t) * int(n or 1), _size(t)) for t, f, n in
                                 re.findall(r"(\w+)\s+(\w+)\s*(?:\[(\d+)\])?\s*;", body)]
    return out


def c_maps(text: str) -> dict[str, tuple[str, str, str]]:
    """map name -> (key type, value type, pin path expression) of each pinned table."""
    decl = re.compile(r'BPF_TABLE_PINNED7?\(\s*"\w+"\s*,\s*([\w ]+?)\s*,\s*([\w ]+?)\s*,'
                      r"\s*(\w+)\s*,\s*\w+\s*,\s*([^,)]+(?:\([^)]*\))?)")
    return {name: (key, value, pin) for key, value, name, pin in decl.findall(text)}


def c_layout(fields_: list[tuple[str, int, int]]) -> tuple[list[int], int]:
    """Offsets and total size by the C rules for naturally aligned scalars and arrays."""
    off, align, offsets = 0, 1, []
    for _, size, a in fields_:
        off = (off + a - 1) // a * a
        offsets.append(off)
        off += size
        align = max(align, a)
    return offsets, (off + align - 1) // align * align


def _ours(struct: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    return [(name, ctypes.sizeof(t), getattr(struct, name).offset) for name, t in struct._fields_]


@pytest.mark.parametrize("layout", list(maps.ALL.values()), ids=lambda m: m.name)
def test_layout_matches_its_c_declaration(layout: MapLayout) -> None:
    text = _headers()[layout.header]
    declared = c_maps(text)
    assert layout.name in declared, f"{layout.name} is not declared in {layout.header}"
    c_key, c_value, pin = declared[layout.name]
    assert (c_key, c_value) == (layout.c_key, layout.c_value)
    assert layout.name in pin  # pinned under its own name
    structs = c_structs(text)
    for ctype, ours in ((c_key, layout.key), (c_value, layout.value)):
        c_fields = (structs[ctype] if ctype.startswith("struct ")
                    else [("", _size(ctype), _size(ctype))])
        offsets, size = c_layout(c_fields)
        assert size == ctypes.sizeof(ours), (layout.name, ctype)
        mine = _ours(ours)
        assert [s for _, s, _ in mine] == [s for _, s, _ in c_fields], (layout.name, ctype)
        assert [o for _, _, o in mine] == offsets, (layout.name, ctype)
        if ctype.startswith("struct "):
            assert [n for n, _, _ in mine] == [n for n, _, _ in c_fields], (layout.name, ctype)


def test_every_pinned_map_of_the_headers_has_a_module() -> None:
    declared = {name for text in _headers().values() for name in c_maps(text)}
    assert declared == set(maps.ALL)


def test_constants_agree_with_the_c_defines() -> None:
    text = "\n".join(_headers().values())
    defines = dict(re.findall(r"#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text))
    from datapath.maps import (
        ipcache,
        lb_conntrack,
        lb_maglev,
        lb_services,
        policy_endpoints,
        policy_rules,
    )

    pairs = {"STICKYIP_FLAG_FENCED": endpoints.FLAG_FENCED,
             "STICKYIP_FLAG_V4": endpoints.FLAG_V4, "STICKYIP_FLAG_V6": endpoints.FLAG_V6,
             "SVC_F_AFFINITY": lb_services.F_AFFINITY, "SVC_F_MAGLEV": lb_services.F_MAGLEV,
             "CT_DIR_FWD": lb_conntrack.DIR_FWD,
             "CT_DIR_REV": lb_conntrack.DIR_REV, "CT_F_HAIRPIN": lb_conntrack.F_HAIRPIN,
             "POL_DIR_INGRESS": policy_rules.DIR_INGRESS,
             "POL_DIR_EGRESS": policy_rules.DIR_EGRESS,
             "EP_F_INGRESS_ENFORCED": policy_endpoints.F_INGRESS_ENFORCED,
             "EP_F_EGRESS_ENFORCED": policy_endpoints.F_EGRESS_ENFORCED,
             "ID_ANY": ipcache.ID_ANY, "ID_HOST": ipcache.ID_HOST, "ID_WORLD": ipcache.ID_WORLD,
             "ID_WORLD6": ipcache.ID_WORLD6,
             "LB_MAGLEV_M": lb_maglev.MAGLEV_M,
             "HAIRPIN_ADDR": fields.be32(lb_conntrack.HAIRPIN_ADDR),
             **{f"HAIRPIN6_W{i}": int.from_bytes(
                 lb_conntrack.HAIRPIN_ADDR6.packed[4 * i:4 * i + 4], "little")
                for i in range(4)}}
    for name, ours in pairs.items():
        assert int(defines[name], 0) == ours, name


def test_address_byte_order_is_network_order_in_memory() -> None:
    addr = ipaddress.IPv4Address("10.1.2.3")
    addr6 = ipaddress.IPv6Address("fd00:1:2::3")
    value = endpoints.LAYOUT.pack_value(endpoints.encode([addr, addr6], fenced=True))
    assert bytes(value)[:4] == bytes([10, 1, 2, 3])
    assert bytes(value)[8:24] == addr6.packed  # the 16 bytes exactly as the packet has them
    assert fields.from_be32(value.addr) == addr
    assert endpoints.LAYOUT.unpack_value(bytes(value)) == endpoints.encode([addr, addr6],
                                                                          fenced=True)
    port = endpoints.Key(fields.be16(8080))
    assert bytes(port)[:2] == (8080).to_bytes(2, "big")
    assert fields.from_be16(fields.be16(8080)) == 8080


def test_endpoint_entries_round_trip_through_a_writer() -> None:
    mem = MemoryMaps()
    v4, v6 = ipaddress.IPv4Address("10.0.0.9"), ipaddress.IPv6Address("fd00::9")
    endpoints.write(mem, 7, [v4], fenced=True)
    endpoints.write(mem, 8, [ipaddress.IPv4Address("10.0.0.10"), v6])
    endpoints.write(mem, 9, [v6])
    assert endpoints.read(mem, 7) == ((v4,), True)
    assert endpoints.read_all(mem) == {7: ((v4,), True),
                                       8: ((ipaddress.IPv4Address("10.0.0.10"), v6), False),
                                       9: ((v6,), False)}
    # a v6-only endpoint has no IPv4 flag, so the program never takes 0.0.0.0 for its own
    assert not endpoints.encode([v6])[1] & endpoints.FLAG_V4
    mem.update(ep_counters.NAME, (7,), (3, 300, 1, 2))
    assert ep_counters.read_all(mem) == {7: {"spoofed_packets": 3, "spoofed_bytes": 300,
                                             "fenced_packets": 1, "other_packets": 2}}
    endpoints.remove(mem, 7)
    assert endpoints.read(mem, 7) is None
