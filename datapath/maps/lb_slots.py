"""``stickyip_slot``: (service id, slot 1..count) -> backend id, for the random
backend choice of ``lb.h``."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_slot"


class Key(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("slot", ctypes.c_uint32)]


class Value(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct lb_slot_key", c_value="struct lb_slot_val")
