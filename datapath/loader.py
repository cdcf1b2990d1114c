"""eBPF loading with bcc (the only module importing it): compiles the agent's tc
programs, opens or creates their maps pinned under the pin root, and reads/writes
map entries through the layouts in :mod:`datapath.maps`."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
from importlib import resources
from typing import Any

from datapath import maps
from datapath.errors import BpfFailure

ANTISPOOF_FUNC = "antispoof_ingress"


def bpf_dir() -> str:
    return str(resources.files("datapath") / "bpf")


class AntispoofProgram:
    """The anti-spoofing program and its two pinned per-endpoint maps."""

    def __init__(self, pin_root: str) -> None:
        self.pin_root = pin_root
        self._bpf: Any = None
        self.fd = -1
        self.name = ANTISPOOF_FUNC

    def load(self) -> None:
        try:
            from bcc import BPF
        except ImportError as e:
            raise BpfFailure("bcc is not installed (apt-get install python3-bpfcc)") from e
        try:
            os.makedirs(self.pin_root, exist_ok=True)
        except OSError as e:
            raise BpfFailure(f"cannot create pin directory {self.pin_root}: {e.strerror}") from e
        src = os.path.join(bpf_dir(), "antispoof.c")
        try:
            self._bpf = BPF(src_file=src.encode(), cflags=[
                f'-DPIN_ROOT="{self.pin_root}"', f"-I{bpf_dir()}", "-Wno-macro-redefined"])
            fn = self._bpf.load_func(ANTISPOOF_FUNC, BPF.SCHED_CLS)
        except Exception as e:  # bcc raises plain Exception on compile/load errors
            raise BpfFailure(f"cannot load {src}: {e}") from e
        self.fd = int(fn.fd)
        self._check_layouts()

    def _check_layouts(self) -> None:
        for name, ours in ((maps.ENDPOINTS_MAP, maps.EndpointInfo),
                           (maps.COUNTERS_MAP, maps.EndpointCounters)):
            leaf = self._bpf[name].Leaf
            if ctypes.sizeof(leaf) != ctypes.sizeof(ours):
                raise BpfFailure(f"map {name}: C value is {ctypes.sizeof(leaf)} bytes, "
                                 f"datapath/maps.py says {ctypes.sizeof(ours)}")

    def _table(self, name: str) -> Any:
        if self._bpf is None:
            raise BpfFailure("antispoof program is not loaded")
        return self._bpf[name]

    def set_endpoint(self, ifindex: int, address: ipaddress.IPv4Address, *,
                     fenced: bool = False) -> None:
        t = self._table(maps.ENDPOINTS_MAP)
        info = maps.endpoint_info(address, fenced=fenced)
        t[t.Key(ifindex)] = t.Leaf(info.addr, info.flags)

    def endpoint(self, ifindex: int) -> tuple[ipaddress.IPv4Address, bool] | None:
        t = self._table(maps.ENDPOINTS_MAP)
        try:
            v = t[t.Key(ifindex)]
        except KeyError:
            return None
        return maps.be32_to_addr(int(v.addr)), bool(int(v.flags) & maps.FLAG_FENCED)

    def endpoints(self) -> dict[int, tuple[ipaddress.IPv4Address, bool]]:
        t = self._table(maps.ENDPOINTS_MAP)
        return {int(k.value): (maps.be32_to_addr(int(v.addr)),
                               bool(int(v.flags) & maps.FLAG_FENCED)) for k, v in t.items()}

    def delete_endpoint(self, ifindex: int) -> None:
        for name in (maps.ENDPOINTS_MAP, maps.COUNTERS_MAP):
            t = self._table(name)
            with contextlib.suppress(KeyError):
                del t[t.Key(ifindex)]

    def counters(self) -> dict[int, dict[str, int]]:
        t = self._table(maps.COUNTERS_MAP)
        return {int(k.value): {f[0]: int(getattr(v, f[0])) for f in maps.EndpointCounters._fields_}
                for k, v in t.items()}

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
