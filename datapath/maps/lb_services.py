"""``stickyip_svc`` (IPv4) and ``stickyip_svc6`` (IPv6): service frontend (address,
port, protocol) -> service id, backend count, flags and ClientIP affinity timeout.
Read first by ``lb.h`` for a new flow."""

from __future__ import annotations

import ctypes

from datapath.maps.fields import L4_ADDRESS, L4_ADDRESS6
from datapath.maps.layout import MapLayout

NAME = "stickyip_svc"
#: ``Value.flags``
F_AFFINITY = 1
F_MAGLEV = 2


class Key(ctypes.Structure):
    _fields_ = L4_ADDRESS


class Value(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("count", ctypes.c_uint16),
                ("flags", ctypes.c_uint16), ("affinity_timeout_s", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct lb_svc_key", c_value="struct lb_svc_val")


#: the IPv6 twin: frontend (IPv6 address, port, protocol); same value
NAME6 = "stickyip_svc6"


class Key6(ctypes.Structure):
    _fields_ = L4_ADDRESS6


LAYOUT6 = MapLayout(NAME6, Key6, Value, c_key="struct lb_svc6_key", c_value="struct lb_svc_val")
