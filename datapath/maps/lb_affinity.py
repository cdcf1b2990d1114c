"""``stickyip_affin`` (LRU): (client, service id) -> backend and last use, for
``sessionAffinity: ClientIP``. Written by ``lb.h`` only."""

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
                   c_value="struct lb_affinity_val", header="feat_maps.h")
