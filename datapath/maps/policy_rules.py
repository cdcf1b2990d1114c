"""``stickyip_pol`` (LPM trie): (endpoint, peer identity, direction, protocol, port
prefix) -> the rule allowing it. Port ranges are a few prefix entries."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_pol"
#: ``Key.dir``: the pod's point of view
DIR_INGRESS = 1
DIR_EGRESS = 2
#: bits of the key before the port (ep_id, identity, dir, proto)
PREFIX_BITS = 80


class Key(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("ep_id", ctypes.c_uint32),
                ("identity", ctypes.c_uint32), ("dir", ctypes.c_uint8),
                ("proto", ctypes.c_uint8), ("port", ctypes.c_uint16)]


class Value(ctypes.Structure):
    _fields_ = [("rule_id", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct pol_key", c_value="struct pol_val")
