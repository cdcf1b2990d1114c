"""``stickyip_endpoints``: host-side veth ifindex -> the source addresses its pod may
use (one IPv4, one IPv6, each flagged when present), and whether it is fenced.
Written by the agent, read by ``lxc_antispoof.c``."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
from collections.abc import Iterable

from datapath.maps.fields import be32, be128, from_be32, from_be128
from datapath.maps.layout import MapLayout
from datapath.maps.state import MapWriter

NAME = "stickyip_endpoints"
#: ``Value.flags``: the endpoint is fenced, drop everything it sends.
FLAG_FENCED = 1
#: ``Value.flags``: ``addr`` holds the pod's IPv4 address.
FLAG_V4 = 2
#: ``Value.flags``: ``addr6`` holds the pod's IPv6 address.
FLAG_V6 = 4

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (the pod's addresses, IPv4 first; fenced)
Entry = tuple[tuple[Address, ...], bool]


class Key(ctypes.Structure):
    """The host-side veth ifindex (a plain ``u32`` in C)."""

    _fields_ = [("ifindex", ctypes.c_uint32)]


class Value(ctypes.Structure):
    """``struct stickyip_endpoint``."""

    _fields_ = [("addr", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("addr6", ctypes.c_uint32 * 4)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="u32", c_value="struct stickyip_endpoint",
                   header="endpoint.h")


def write(maps: MapWriter, ifindex: int, addresses: Iterable[Address], *,
          fenced: bool = False) -> None:
    maps.update(NAME, (ifindex,), encode(addresses, fenced=fenced))


def encode(addresses: Iterable[Address], *, fenced: bool = False) -> tuple[int, int, int]:
    v4, v6, flags = 0, 0, FLAG_FENCED if fenced else 0
    for a in addresses:
        if a.version == 4:
            v4, flags = be32(a), flags | FLAG_V4
        else:
            v6, flags = be128(a), flags | FLAG_V6
    return (v4, flags, v6)


def read(maps: MapWriter, ifindex: int) -> Entry | None:
    """(addresses, fenced) of one endpoint, None when it has no entry."""
    found = maps.lookup(NAME, (ifindex,))
    return None if found is None else _decode(found)


def read_all(maps: MapWriter) -> dict[int, Entry]:
    return {key[0]: _decode(value) for key, value in maps.items(NAME)}


def remove(maps: MapWriter, ifindex: int) -> None:
    with contextlib.suppress(KeyError):
        maps.delete(NAME, (ifindex,))


def _decode(value: tuple[int, ...]) -> Entry:
    flags = value[1]
    out: list[Address] = []
    if flags & FLAG_V4:
        out.append(from_be32(value[0]))
    if flags & FLAG_V6:
        out.append(from_be128(value[2]))
    return tuple(out), bool(flags & FLAG_FENCED)
