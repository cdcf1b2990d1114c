"""``stickyip_ep_counters``: host-side veth ifindex -> packets the anti-spoofing
program dropped for that endpoint, by reason. Written by ``lxc_antispoof.c``."""

from __future__ import annotations

import contextlib
import ctypes

from datapath.maps.endpoints import Key
from datapath.maps.layout import MapLayout
from datapath.maps.state import MapWriter

NAME = "stickyip_ep_counters"


class Value(ctypes.Structure):
    """``struct stickyip_ep_counters``."""

    _fields_ = [
        ("spoofed_packets", ctypes.c_uint64),
        ("spoofed_bytes", ctypes.c_uint64),
        ("fenced_packets", ctypes.c_uint64),
        ("other_packets", ctypes.c_uint64),
    ]


LAYOUT = MapLayout(NAME, Key, Value, c_key="u32", c_value="struct stickyip_ep_counters",
                   header="endpoint.h")
#: counter names in field order
COUNTERS = tuple(f[0] for f in Value._fields_)


def read_all(maps: MapWriter) -> dict[int, dict[str, int]]:
    return {key[0]: dict(zip(COUNTERS, value, strict=True))
            for key, value in maps.items(NAME)}


def remove(maps: MapWriter, ifindex: int) -> None:
    with contextlib.suppress(KeyError):
        maps.delete(NAME, (ifindex,))
