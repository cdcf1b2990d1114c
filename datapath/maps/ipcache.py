"""``stickyip_ipcach`` (LPM trie): address prefix -> security identity, the policy
program's view of who an address is."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_ipcach"
#: reserved identities
ID_ANY = 0
ID_HOST = 1
ID_WORLD = 2


class Key(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32)]


class Value(ctypes.Structure):
    _fields_ = [("identity", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct ipc_key", c_value="struct ipc_val",
                   header="feat_maps.h")
