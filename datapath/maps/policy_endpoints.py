"""``stickyip_polep``: local pod address -> policy endpoint id and which directions a
policy enforces on it."""

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


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct pol_ep_key", c_value="struct pol_ep_val",
                   header="feat_maps.h")
