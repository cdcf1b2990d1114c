"""``stickyip_polep`` (IPv4) and ``stickyip_polep6`` (IPv6): local pod address -> policy
endpoint id (one per pod: both addresses of a dual-stack pod share it) and which
directions a policy enforces on it."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_polep"
#: ``Value.flags``
F_INGRESS_ENFORCED = 1
F_EGRESS_ENFORCED = 2


class Key(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint32)]


class Value(ctypes.Structure):
    _fields_ = [("ep_id", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct pol_ep_key", c_value="struct pol_ep_val")


#: the IPv6 twin: local pod IPv6 address -> the same endpoint id and flags
NAME6 = "stickyip_polep6"


class Key6(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint32 * 4)]


LAYOUT6 = MapLayout(NAME6, Key6, Value, c_key="struct pol_ep6_key", c_value="struct pol_ep_val")
