"""``stickyip_bkend`` (IPv4) and ``stickyip_bkend6`` (IPv6): backend id -> backend
address, port and protocol (the DNAT target of ``lb.h``)."""

from __future__ import annotations

import ctypes

from datapath.maps.fields import L4_ADDRESS, L4_ADDRESS6
from datapath.maps.layout import MapLayout

NAME = "stickyip_bkend"


class Key(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32)]


class Value(ctypes.Structure):
    _fields_ = L4_ADDRESS


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct lb_backend_key",
                   c_value="struct lb_backend_val")


#: the IPv6 twin: backend id -> IPv6 address, port, protocol
NAME6 = "stickyip_bkend6"


class Value6(ctypes.Structure):
    _fields_ = L4_ADDRESS6


LAYOUT6 = MapLayout(NAME6, Key, Value6, c_key="struct lb_backend_key",
                    c_value="struct lb_backend6_val")
