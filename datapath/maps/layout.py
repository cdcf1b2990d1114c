"""What every map module declares: the map's kernel name, its key and value as ctypes
structures, and the C types they mirror (a unit test compares the two)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from datapath.maps.state import Key, Value


@dataclass(frozen=True, slots=True)
class MapLayout:
    """One BPF map as the host sees it."""

    #: kernel object name, also the pin file name (at most 15 characters)
    name: str
    key: type[ctypes.Structure]
    value: type[ctypes.Structure]
    #: the C types in the ``BPF_TABLE_PINNED`` declaration (``u32`` or ``struct x``)
    c_key: str
    c_value: str
    #: header under ``datapath/bpf/lib/`` declaring the map (all but the
    #: anti-spoofing program's are declared together)
    header: str = "feat_maps.h"

    def pack_key(self, key: Key) -> ctypes.Structure:
        return _pack(self.key, key)

    def pack_value(self, value: Value) -> ctypes.Structure:
        return _pack(self.value, value)

    def unpack_key(self, raw: bytes) -> Key:
        return _fields(self.key.from_buffer_copy(raw))

    def unpack_value(self, raw: bytes) -> Value:
        return _fields(self.value.from_buffer_copy(raw))


def _pack(struct: type[ctypes.Structure], values: tuple[int, ...]) -> ctypes.Structure:
    """Scalars as they are; an array field (an IPv6 address) from the integer whose
    big-endian bytes it holds, so the bytes in memory are the address in packet order."""
    obj = struct()
    for f, v in zip(struct._fields_, values, strict=True):
        name, ctype = f[0], f[1]
        if issubclass(ctype, ctypes.Array):
            setattr(obj, name, ctype.from_buffer_copy(v.to_bytes(ctypes.sizeof(ctype), "big")))
        else:
            setattr(obj, name, v)
    return obj


def _fields(obj: ctypes.Structure) -> tuple[int, ...]:
    out = []
    for f in obj._fields_:
        name, ctype = f[0], f[1]
        v = getattr(obj, name)
        out.append(int.from_bytes(bytes(v), "big") if issubclass(ctype, ctypes.Array)
                   else int(v))
    return tuple(out)
