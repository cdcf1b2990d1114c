"""``stickyip_affin`` and ``stickyip_affin6`` (LRU): (client, service id) -> backend and
last use, for ``sessionAffinity: ClientIP``. Written by ``lb.h`` only."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_affin"


class Key(ctypes.Structure):
    _fields_ = [("client", ctypes.c_uint32), ("svc_id", ctypes.c_uint32)]


class Value(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("last_ns", ctypes.c_uint64)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct lb_affinity_key",
                   c_value="struct lb_affinity_val")


#: the IPv6 twin: (IPv6 client, service id); same value
NAME6 = "stickyip_affin6"


class Key6(ctypes.Structure):
    _fields_ = [("client", ctypes.c_uint32 * 4), ("svc_id", ctypes.c_uint32)]


LAYOUT6 = MapLayout(NAME6, Key6, Value, c_key="struct lb_affinity6_key",
                    c_value="struct lb_affinity_val")
