"""``stickyip_deny``: (policy endpoint id, direction) -> packets the policy program
dropped, reported per policy by the policy manager."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_deny"


class Key(ctypes.Structure):
    _fields_ = [("ep_id", ctypes.c_uint32), ("dir", ctypes.c_uint32)]


class Value(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct pol_deny_key", c_value="struct pol_deny_val")
