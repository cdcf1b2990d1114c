"""``stickyip_lbct`` and ``stickyip_lbct6`` (LRU): service conntrack per family. The
forward entry (client tuple -> backend) keeps a flow on its backend; the reverse entry
rewrites replies back to the service address. Written by ``lb.h`` only."""

from __future__ import annotations

import ctypes
import ipaddress

from datapath.maps.layout import MapLayout

NAME = "stickyip_lbct"
#: ``Key.dir``
DIR_FWD = 0
DIR_REV = 1
#: ``Value.flags``: the flow is hairpinned (a backend reaching itself via its service)
F_HAIRPIN = 1
#: the source address hairpinned flows are SNATed to (``HAIRPIN_ADDR`` in C)
HAIRPIN_ADDR = ipaddress.IPv4Address("169.254.42.1")


class Key(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("dir", ctypes.c_uint8), ("pad", ctypes.c_uint16)]


class Value(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32), ("svc_id", ctypes.c_uint32),
                ("addr", ctypes.c_uint32), ("port", ctypes.c_uint16),
                ("flags", ctypes.c_uint16), ("client", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct lb_ct_key", c_value="struct lb_ct_val")


#: the IPv6 twin (same directions and flags)
NAME6 = "stickyip_lbct6"
#: the source address hairpinned IPv6 flows are SNATed to (``HAIRPIN6_W*`` in C): the
#: last /64 of the ULA range, which no pool should use
HAIRPIN_ADDR6 = ipaddress.IPv6Address("fdff:ffff:ffff:ffff::2a01")


class Key6(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32 * 4), ("daddr", ctypes.c_uint32 * 4),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("dir", ctypes.c_uint8), ("pad", ctypes.c_uint16)]


class Value6(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32), ("svc_id", ctypes.c_uint32),
                ("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16),
                ("flags", ctypes.c_uint16), ("client", ctypes.c_uint32 * 4)]


LAYOUT6 = MapLayout(NAME6, Key6, Value6, c_key="struct lb_ct6_key", c_value="struct lb_ct6_val")
