"""Field encodings shared by the map layouts: network byte order (the one set of
byte-order helpers) and IP protocol numbers.

Addresses and ports sit in the maps in network byte order, exactly as the packet
carries them, so the programs never swap bytes. :func:`be32` and :func:`be16` give
the integers that, stored in a host-order ``c_uint32``/``c_uint16``, leave those bytes
in memory; ``from_be32``/``from_be16`` read them back.

An IPv6 address is a ``__be32 addr[4]`` array in C and a ``c_uint32 * 4`` field here;
in a key or value tuple it is one integer, :func:`be128` (the address as a number:
``int(IPv6Address)``), which :class:`~datapath.maps.layout.MapLayout` stores as the 16
bytes of the address in packet order.
"""

from __future__ import annotations

import ctypes
import ipaddress
import sys
from typing import Any

PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

#: address, port, protocol and padding: the layout of a service frontend
#: (``lb_svc_key``) and of a backend (``lb_backend_val``) alike
L4_ADDRESS: tuple[tuple[str, Any], ...] = (
    ("addr", ctypes.c_uint32), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
    ("pad", ctypes.c_uint8))
#: the same with an IPv6 address (``lb_svc6_key``, ``lb_backend6_val``)
L4_ADDRESS6: tuple[tuple[str, Any], ...] = (
    ("addr", ctypes.c_uint32 * 4), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
    ("pad", ctypes.c_uint8))


def be32(addr: ipaddress.IPv4Address | str) -> int:
    return int.from_bytes(ipaddress.IPv4Address(addr).packed, sys.byteorder)


def be128(addr: ipaddress.IPv6Address | str) -> int:
    """The tuple form of an IPv6 address field (see the module docstring)."""
    return int(ipaddress.IPv6Address(addr))


def from_be128(value: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(value)


def be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), sys.byteorder)


def from_be32(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value.to_bytes(4, sys.byteorder))


def from_be16(value: int) -> int:
    return int.from_bytes(value.to_bytes(2, sys.byteorder), "big")
