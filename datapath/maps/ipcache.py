"""``stickyip_ipcach`` (IPv4) and ``stickyip_ipc6`` (IPv6), LPM tries: address prefix
-> security identity, the policy program's view of who an address is."""

from __future__ import annotations

import ctypes

from datapath.maps.layout import MapLayout

NAME = "stickyip_ipcach"
#: reserved identities
ID_ANY = 0
ID_HOST = 1
ID_WORLD = 2
#: IPv6 addresses nothing else names: a world of its own, so an IPv4 ipBlock such as
#: 0.0.0.0/0 never admits IPv6 traffic (Cilium's world-ipv6)
ID_WORLD6 = 3


class Key(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32)]


class Value(ctypes.Structure):
    _fields_ = [("identity", ctypes.c_uint32)]


LAYOUT = MapLayout(NAME, Key, Value, c_key="struct ipc_key", c_value="struct ipc_val")


#: the IPv6 twin (LPM trie over 128-bit addresses); same value
NAME6 = "stickyip_ipc6"


class Key6(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32 * 4)]


LAYOUT6 = MapLayout(NAME6, Key6, Value, c_key="struct ipc6_key", c_value="struct ipc_val")
