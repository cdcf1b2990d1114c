"""``stickyip_endpoints``: host-side veth ifindex -> the one source address its pod may
use, and whether it is fenced. Written by the agent, read by ``lxc_antispoof.c``."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress

from datapath.maps.fields import be32, from_be32
from datapath.maps.layout import MapLayout
from datapath.maps.state import MapWriter

NAME = "stickyip_endpoints"
#: ``Value.flags``: the endpoint is fenced, drop everything it sends.
FLAG_FENCED = 1


class Key(ctypes.Structure):
    """The host-side veth ifindex (a plain ``u32`` in C)."""

    _fields_ = [("ifindex", ctypes.c_uint32)]


class Value(ctypes.Structure):
    """``struct stickyip_endpoint``."""

    _fields_ = [("addr", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="u32", c_value="struct stickyip_endpoint",
                   header="endpoint.h")


def write(maps: MapWriter, ifindex: int, address: ipaddress.IPv4Address, *,
          fenced: bool = False) -> None:
    maps.update(NAME, (ifindex,), (be32(address), FLAG_FENCED if fenced else 0))


def read(maps: MapWriter, ifindex: int) -> tuple[ipaddress.IPv4Address, bool] | None:
    """(address, fenced) of one endpoint, None when it has no entry."""
    found = maps.lookup(NAME, (ifindex,))
    return None if found is None else _decode(found)


def read_all(maps: MapWriter) -> dict[int, tuple[ipaddress.IPv4Address, bool]]:
    return {key[0]: _decode(value) for key, value in maps.items(NAME)}


def remove(maps: MapWriter, ifindex: int) -> None:
    with contextlib.suppress(KeyError):
        maps.delete(NAME, (ifindex,))


def _decode(value: tuple[int, ...]) -> tuple[ipaddress.IPv4Address, bool]:
    return from_be32(value[0]), bool(value[1] & FLAG_FENCED)
