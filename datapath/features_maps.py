"""Host-side layouts of every service and policy map (mirrors of
``datapath/bpf/lib/feat_maps.h``), their names, flags and byte-order helpers.

Addresses and ports are stored in network byte order exactly as the packet carries
them; :func:`be32` and :func:`be16` produce the integers that, written into a
little- or big-endian ``c_uint32``/``c_uint16``, leave those bytes in memory.
"""

from __future__ import annotations

import ctypes
import ipaddress
import sys

# map names (kernel object names are limited to 15 characters)
SVC_MAP = "stickyip_svc"
SLOT_MAP = "stickyip_slot"
MAGLEV_MAP = "stickyip_maglev"
BACKEND_MAP = "stickyip_bkend"
LBCT_MAP = "stickyip_lbct"
AFFINITY_MAP = "stickyip_affin"
IPCACHE_MAP = "stickyip_ipcach"
POLICY_EP_MAP = "stickyip_polep"
POLICY_MAP = "stickyip_pol"
POLICY_CT_MAP = "stickyip_polct"
DENY_MAP = "stickyip_deny"

# program names (one per hook and direction)
PROG_SVC_FROM_POD = "lxc_svc_from_pod"
PROG_SVC_TO_POD = "lxc_svc_to_pod"
PROG_POL_FROM_POD = "lxc_pol_from_pod"
PROG_POL_TO_POD = "lxc_pol_to_pod"

SVC_F_AFFINITY = 1
SVC_F_MAGLEV = 2
CT_DIR_FWD = 0
CT_DIR_REV = 1
CT_F_HAIRPIN = 1
POL_DIR_INGRESS = 1
POL_DIR_EGRESS = 2
EP_F_INGRESS_ENFORCED = 1
EP_F_EGRESS_ENFORCED = 2
ID_ANY = 0
ID_HOST = 1
ID_WORLD = 2
#: the source address hairpinned flows are SNATed to (a pod reaching itself)
HAIRPIN_ADDR = ipaddress.IPv4Address("169.254.42.1")
#: Maglev lookup-table size compiled into the program (a prime)
MAGLEV_M = 251
#: bits of the policy key before the port (ep_id, identity, dir, proto)
POLICY_PREFIX_BITS = 80

PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}


def be32(addr: ipaddress.IPv4Address | str) -> int:
    return int.from_bytes(ipaddress.IPv4Address(addr).packed, sys.byteorder)


def be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), sys.byteorder)


def from_be32(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value.to_bytes(4, sys.byteorder))


def from_be16(value: int) -> int:
    return int.from_bytes(value.to_bytes(2, sys.byteorder), "big")


class LbSvcKey(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint32), ("port", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class LbSvcVal(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("count", ctypes.c_uint16),
                ("flags", ctypes.c_uint16), ("affinity_timeout_s", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class LbSlotKey(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("slot", ctypes.c_uint32)]


class LbSlotVal(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32)]


class LbBackendKey(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32)]


class LbBackendVal(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint32), ("port", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class LbCtKey(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("dir", ctypes.c_uint8), ("pad", ctypes.c_uint16)]


class LbCtVal(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32), ("svc_id", ctypes.c_uint32),
                ("addr", ctypes.c_uint32), ("port", ctypes.c_uint16),
                ("flags", ctypes.c_uint16), ("client", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class LbAffinityKey(ctypes.Structure):
    _fields_ = [("client", ctypes.c_uint32), ("svc_id", ctypes.c_uint32)]


class LbAffinityVal(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("last_ns", ctypes.c_uint64)]


class IpcKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("addr", ctypes.c_uint32)]


class IpcVal(ctypes.Structure):
    _fields_ = [("identity", ctypes.c_uint32)]


class PolEpKey(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint32)]


class PolEpVal(ctypes.Structure):
    _fields_ = [("ep_id", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class PolKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("ep_id", ctypes.c_uint32),
                ("identity", ctypes.c_uint32), ("dir", ctypes.c_uint8),
                ("proto", ctypes.c_uint8), ("port", ctypes.c_uint16)]


class PolVal(ctypes.Structure):
    _fields_ = [("rule_id", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class PolCtKey(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad1", ctypes.c_uint8), ("pad2", ctypes.c_uint16)]


class PolCtVal(ctypes.Structure):
    _fields_ = [("last_ns", ctypes.c_uint64)]


class PolDenyKey(ctypes.Structure):
    _fields_ = [("ep_id", ctypes.c_uint32), ("dir", ctypes.c_uint32)]


class PolDenyVal(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64)]


#: map name -> (key layout, value layout); the loader checks these against the C.
LAYOUTS: dict[str, tuple[type[ctypes.Structure], type[ctypes.Structure]]] = {
    SVC_MAP: (LbSvcKey, LbSvcVal),
    SLOT_MAP: (LbSlotKey, LbSlotVal),
    MAGLEV_MAP: (LbSlotKey, LbSlotVal),
    BACKEND_MAP: (LbBackendKey, LbBackendVal),
    LBCT_MAP: (LbCtKey, LbCtVal),
    AFFINITY_MAP: (LbAffinityKey, LbAffinityVal),
    IPCACHE_MAP: (IpcKey, IpcVal),
    POLICY_EP_MAP: (PolEpKey, PolEpVal),
    POLICY_MAP: (PolKey, PolVal),
    POLICY_CT_MAP: (PolCtKey, PolCtVal),
    DENY_MAP: (PolDenyKey, PolDenyVal),
}
