"""Host-side layouts of the eBPF maps the agent owns (keys and values as ctypes), kept
next to their C twins in ``bpf/lib/endpoint.h``; a unit test checks the sizes agree."""

from __future__ import annotations

import ctypes
import ipaddress

#: Map names (also their pin file names under the pin root).
ENDPOINTS_MAP = "stickyip_endpoints"
COUNTERS_MAP = "stickyip_ep_counters"

#: ``EndpointInfo.flags``: the endpoint is fenced, drop everything it sends.
FLAG_FENCED = 1


class EndpointKey(ctypes.Structure):
    """Key of both maps: the host-side veth ifindex."""

    _fields_ = [("ifindex", ctypes.c_uint32)]


class EndpointInfo(ctypes.Structure):
    """``struct stickyip_endpoint``: the one source address the pod may use."""

    _fields_ = [("addr", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class EndpointCounters(ctypes.Structure):
    """``struct stickyip_ep_counters``: drops per endpoint."""

    _fields_ = [
        ("spoofed_packets", ctypes.c_uint64),
        ("spoofed_bytes", ctypes.c_uint64),
        ("fenced_packets", ctypes.c_uint64),
        ("other_packets", ctypes.c_uint64),
    ]


def addr_to_be32(address: ipaddress.IPv4Address) -> int:
    """The u32 whose in-memory bytes (little-endian host) equal the address in network
    order, as ``iph->saddr`` reads it."""
    return int.from_bytes(address.packed, "little")


def be32_to_addr(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value.to_bytes(4, "little"))


def endpoint_info(address: ipaddress.IPv4Address, *, fenced: bool = False) -> EndpointInfo:
    return EndpointInfo(addr_to_be32(address), FLAG_FENCED if fenced else 0)
