"""``stickyip_polct`` and ``stickyip_polct6`` (LRU): allowed flows, so replies pass the
policy of the other direction. Written by ``policy.h`` only."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_polct"


class Key(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad1", ctypes.c_uint8), ("pad2", ctypes.c_uint16)]


class Value(ctypes.Structure):
    _fields_ = [("last_ns", ctypes.c_uint64)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct pol_ct_key", c_value="struct pol_ct_val")


#: the IPv6 twin
NAME6 = "stickyip_polct6"


class Key6(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32 * 4), ("daddr", ctypes.c_uint32 * 4),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad1", ctypes.c_uint8), ("pad2", ctypes.c_uint16)]


LAYOUT6 = MapLayout(NAME6, Key6, Value, c_key="struct pol_ct6_key", c_value="struct pol_ct_val")
