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
    #: header under ``datapath/bpf/lib/`` declaring the map
    header: str

    def pack_key(self, key: Key) -> ctypes.Structure:
        return self.key(*key)

    def pack_value(self, value: Value) -> ctypes.Structure:
        return self.value(*value)

    def unpack_key(self, raw: bytes) -> Key:
        return _fields(self.key.from_buffer_copy(raw))

    def unpack_value(self, raw: bytes) -> Value:
        return _fields(self.value.from_buffer_copy(raw))


def _fields(obj: ctypes.Structure) -> tuple[int, ...]:
    return tuple(int(getattr(obj, f[0])) for f in obj._fields_)
