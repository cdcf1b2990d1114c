"""eBPF loading with bcc (the only module importing it): compiles the tc programs of
``datapath/bpf/``, opens or creates their maps pinned under a directory (so an agent
restart keeps them), refuses to run when a map's C layout and its module in
:mod:`datapath.maps` disagree, and reads and writes map entries as the tuples of
:class:`datapath.maps.state.MapWriter`.

Two objects are built from it: :class:`AntispoofProgram` (the agent's own program,
prio 1) and :class:`FeaturePrograms` (services and policy, prio 10 and 20, attached
by the features hook).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from datapath import maps
from datapath.errors import BpfFailure
from datapath.hooks import PRIO_POLICY, PRIO_SERVICES
from datapath.maps.layout import MapLayout
from datapath.maps.state import Key, Value

log = logging.getLogger("stickyip.datapath")

TC_INGRESS = 0xFFFFFFF2
TC_EGRESS = 0xFFFFFFF3
DEFAULT_FEATURES_PIN_DIR = "/sys/fs/bpf/stickyip/features"

#: program names (one per hook and direction)
PROG_ANTISPOOF = "antispoof_ingress"
PROG_SVC_FROM_POD = "lxc_svc_from_pod"
PROG_SVC_TO_POD = "lxc_svc_to_pod"
PROG_POL_FROM_POD = "lxc_pol_from_pod"
PROG_POL_TO_POD = "lxc_pol_to_pod"
#: the IPv6 halves, tail-called from the programs above through ``stickyip_v6prog``,
#: in the order of its slots (``V6_*`` in feat_maps.h)
V6_PROG_ARRAY = "stickyip_v6prog"
V6_PROGRAMS = ("lxc_svc6_from_pod", "lxc_svc6_to_pod", "lxc_pol6_from_pod",
               "lxc_pol6_to_pod")


def bpf_dir() -> str:
    return str(resources.files("datapath") / "bpf")


def program_text(sources: Sequence[str]) -> str:
    """The programs as one translation unit with local headers inlined (bcc only
    rewrites map calls in its main text, not in included files)."""
    seen: set[str] = set()

    def inline(path: str) -> str:
        out = []
        with open(path) as f:
            for line in f:
                m = re.match(r'#include "(.+)"', line)
                if m:
                    inc = os.path.normpath(os.path.join(os.path.dirname(path), m.group(1)))
                    if inc not in seen:
                        seen.add(inc)
                        out.append(inline(inc))
                    continue
                out.append(line)
        return "".join(out)

    return "".join(inline(os.path.join(bpf_dir(), s)) for s in sources)


class BpfObject:
    """One compiled translation unit, its programs' fds and its pinned maps, which it
    reads and writes as a :class:`~datapath.maps.state.MapWriter`."""

    what = "eBPF programs"

    def __init__(self, *, sources: Sequence[str], programs: Sequence[str],
                 layouts: Sequence[MapLayout], pin_dir: str, pin_define: str,
                 defines: dict[str, int] | None = None,
                 tail_calls: dict[str, Sequence[str]] | None = None) -> None:
        self.sources = tuple(sources)
        self.programs = tuple(programs)
        #: program array -> the programs of its slots, filled right after loading
        self.tail_calls = {k: tuple(v) for k, v in (tail_calls or {}).items()}
        self.layouts = {m.name: m for m in layouts}
        self.pin_dir = pin_dir
        self.pin_define = pin_define
        self.defines = defines or {}
        self.fds: dict[str, int] = {}
        self._bpf: Any = None
        self._tables: dict[str, Any] = {}

    def load(self) -> None:
        try:
            from bcc import BPF
        except ImportError as e:
            raise BpfFailure("bcc is not installed (apt-get install python3-bpfcc)") from e
        try:
            os.makedirs(self.pin_dir, exist_ok=True)
        except OSError as e:
            raise BpfFailure(f"cannot create pin directory {self.pin_dir}: {e.strerror}") from e
        self.drop_outdated_pins()
        cflags = [f'-D{self.pin_define}="{self.pin_dir}"', "-Wno-macro-redefined"]
        cflags += [f"-D{k}={v}" for k, v in self.defines.items()]
        try:
            self._bpf = BPF(text=program_text(self.sources).encode(), cflags=cflags)
            for name in self.programs:
                self.fds[name] = int(self._bpf.load_func(name.encode(), BPF.SCHED_CLS).fd)
            for array, progs in self.tail_calls.items():
                table = self._bpf[array.encode()]
                for slot, name in enumerate(progs):
                    fd = int(self._bpf.load_func(name.encode(), BPF.SCHED_CLS).fd)
                    self.fds[name] = fd
                    table[ctypes.c_int(slot)] = ctypes.c_int(fd)
        except Exception as e:  # bcc raises plain Exception on compile/load errors
            raise BpfFailure(f"cannot load {self.what} ({', '.join(self.sources)}): {e}") from e
        self._tables = {name: self._bpf[name.encode()] for name in self.layouts}
        self.check_layouts()

    def drop_outdated_pins(self) -> None:
        """Unpin maps whose key or value size differs from today's layout (pinned by an
        older agent): bcc would reuse them as they are. The fresh map starts empty; the
        agent's restore and the managers' reconcile write every entry again, and tc
        filters still running the old program are replaced by the restore."""
        for name, layout in self.layouts.items():
            path = os.path.join(self.pin_dir, name)
            if not os.path.exists(path):
                continue
            sizes = pinned_sizes(path)
            want = (ctypes.sizeof(layout.key), ctypes.sizeof(layout.value))
            if sizes is not None and sizes != want:
                log.warning("pinned map has an old layout, recreating it",
                            extra={"map": path, "sizes": list(sizes), "want": list(want)})
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def tag_of(self, name: str) -> str:
        """The kernel's tag of a loaded program (a hash of its code; "" when unknown)."""
        fd = self.fds.get(name)
        return "" if fd is None else fdinfo(fd).get("prog_tag", "")

    def check_layouts(self) -> None:
        """Refuse to run when a C struct and its ctypes mirror disagree."""
        for name, layout in self.layouts.items():
            c_key, c_value = self.c_layout(name)
            for what, c_type, ours in (("key", c_key, layout.key),
                                       ("value", c_value, layout.value)):
                if ctypes.sizeof(c_type) != ctypes.sizeof(ours):
                    raise BpfFailure(f"map {name}: C {what} is {ctypes.sizeof(c_type)} bytes, "
                                     f"datapath/maps says {ctypes.sizeof(ours)}")
                if not hasattr(c_type, "_fields_"):
                    continue  # a scalar key (u32): the size is the whole layout
                c_fields = [f[0] for f in c_type._fields_]
                o_fields = [f[0] for f in ours._fields_]
                if c_fields != o_fields:
                    raise BpfFailure(f"map {name}: C {what} fields {c_fields} != {o_fields}")

    def c_layout(self, name: str) -> tuple[Any, Any]:
        """The key and value types bcc built from the C declaration."""
        t = self._table(name)
        return t.Key, t.Leaf

    def _table(self, name: str) -> Any:
        if self._bpf is None:
            raise BpfFailure(f"{self.what} are not loaded")
        return self._tables[name]

    # ---------------------------------------------------------------- MapWriter

    def update(self, name: str, key: Key, value: Value) -> None:
        layout = self.layouts[name]
        k, v = layout.pack_key(key), layout.pack_value(value)
        from bcc import libbcc

        if libbcc.lib.bpf_update_elem(self._table(name).map_fd, ctypes.byref(k),
                                      ctypes.byref(v), 0) < 0:
            err = ctypes.get_errno()
            raise BpfFailure(f"update {name}: {os.strerror(err)}")

    def delete(self, name: str, key: Key) -> None:
        k = self.layouts[name].pack_key(key)
        from bcc import libbcc

        libbcc.lib.bpf_delete_elem(self._table(name).map_fd, ctypes.byref(k))

    def lookup(self, name: str, key: Key) -> Value | None:
        layout = self.layouts[name]
        k, v = layout.pack_key(key), layout.value()
        from bcc import libbcc

        if libbcc.lib.bpf_lookup_elem(self._table(name).map_fd, ctypes.byref(k),
                                      ctypes.byref(v)) < 0:
            return None
        return layout.unpack_value(bytes(v))

    def items(self, name: str) -> list[tuple[Key, Value]]:
        layout = self.layouts[name]
        return [(layout.unpack_key(bytes(k)), layout.unpack_value(bytes(v)))
                for k, v in self._table(name).items()]

    def clear(self, name: str) -> None:
        for k, _ in self.items(name):
            self.delete(name, k)

    def map_fill(self) -> dict[str, tuple[int, int]]:
        """(entries, max_entries) of each of its pinned maps, for the fill-level
        gauges: the keys are walked in the kernel (no values copied), at most
        max_entries of them (a walk racing deletions restarts at the first key)."""
        from bcc import libbcc

        out: dict[str, tuple[int, int]] = {}
        for name in self.layouts:
            t = self._table(name)
            size, capacity = ctypes.sizeof(t.Key), int(t.max_entries)
            key, following = ctypes.create_string_buffer(size), ctypes.create_string_buffer(size)
            n = 0
            if libbcc.lib.bpf_get_first_key(t.map_fd, ctypes.byref(key), size) == 0:
                n = 1
                while n < capacity and libbcc.lib.bpf_get_next_key(
                        t.map_fd, ctypes.byref(key), ctypes.byref(following)) == 0:
                    n += 1
                    ctypes.memmove(key, following, size)
            out[name] = (n, capacity)
        return out

    def close(self, *, unpin: bool = False) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        if unpin:
            for name in self.layouts:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.pin_dir, name))
            with contextlib.suppress(OSError):
                os.rmdir(self.pin_dir)


class AntispoofProgram(BpfObject):
    """The anti-spoofing program and its two per-endpoint maps, pinned under the
    agent's pin root. The agent attaches it itself (through its netlink adapter)."""

    what = "the anti-spoofing program"

    def __init__(self, pin_root: str) -> None:
        super().__init__(sources=("lxc_antispoof.c",), programs=(PROG_ANTISPOOF,),
                         layouts=maps.ANTISPOOF, pin_dir=pin_root, pin_define="PIN_ROOT")

    @property
    def name(self) -> str:
        """``antispoof_ingress-TAG-MAPID``: the tc filter name tells which code it runs
        and which endpoint map that code reads, so a restarted agent replaces the filters
        of another program (an upgrade) or of a map it recreated (an old layout)."""
        tag = self.tag_of(PROG_ANTISPOOF)
        if not tag or self._bpf is None:
            return PROG_ANTISPOOF
        map_id = fdinfo(self._table(maps.endpoints.NAME).map_fd).get("map_id", "")
        return f"{PROG_ANTISPOOF}-{tag}-{map_id}"

    @property
    def fd(self) -> int:
        return self.fds.get(PROG_ANTISPOOF, -1)


class FeaturePrograms(BpfObject):
    """The service and policy programs, their pinned maps and tc attachment."""

    what = "the service and policy programs"

    def __init__(self, *, pin_dir: str = DEFAULT_FEATURES_PIN_DIR,
                 defines: dict[str, int] | None = None) -> None:
        super().__init__(sources=("lxc_services.c", "lxc_policy.c"),
                         programs=(PROG_SVC_FROM_POD, PROG_SVC_TO_POD, PROG_POL_FROM_POD,
                                   PROG_POL_TO_POD),
                         layouts=maps.FEATURES, pin_dir=pin_dir, pin_define="PIN_DIR",
                         defines=defines, tail_calls={V6_PROG_ARRAY: V6_PROGRAMS})

    def attach(self, ifindex: int, *, services: bool = True, policy: bool = True,
               netns: str | None = None) -> None:
        """Attach at the hook contract's priorities on a host-side veth."""
        with _ipr(netns) as ipr:
            try:
                ipr.tc("add", "clsact", index=ifindex)
            except NetlinkError as e:
                if e.code != 17:  # EEXIST: the agent (or we) already added it
                    raise BpfFailure(f"clsact on {ifindex}: {e}") from e
            todo = []
            if services:
                todo += [(TC_INGRESS, PRIO_SERVICES, PROG_SVC_FROM_POD),
                         (TC_EGRESS, PRIO_SERVICES, PROG_SVC_TO_POD)]
            if policy:
                todo += [(TC_INGRESS, PRIO_POLICY, PROG_POL_FROM_POD),
                         (TC_EGRESS, PRIO_POLICY, PROG_POL_TO_POD)]
            for parent, prio, prog in todo:
                try:
                    ipr.tc("replace-filter", "bpf", index=ifindex, handle=1, fd=self.fds[prog],
                           name=prog, parent=parent, prio=prio, direct_action=True)
                except NetlinkError as e:
                    raise BpfFailure(f"attach {prog} to {ifindex}: {e}") from e

    def detach(self, ifindex: int, *, services: bool = True, policy: bool = True,
               netns: str | None = None) -> None:
        with _ipr(netns) as ipr:
            todo = []
            if services:
                todo += [(TC_INGRESS, PRIO_SERVICES), (TC_EGRESS, PRIO_SERVICES)]
            if policy:
                todo += [(TC_INGRESS, PRIO_POLICY), (TC_EGRESS, PRIO_POLICY)]
            for parent, prio in todo:
                with contextlib.suppress(NetlinkError):  # already gone with its link
                    ipr.tc("del-filter", "bpf", index=ifindex, handle=1, parent=parent,
                           prio=prio)


def fdinfo(fd: int) -> dict[str, str]:
    """The fields of ``/proc/self/fdinfo/FD`` (a BPF map's key and value size, a
    program's tag)."""
    out: dict[str, str] = {}
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def pinned_sizes(path: str) -> tuple[int, int] | None:
    """(key size, value size) of the map pinned at ``path``; None when unreadable."""
    try:
        from bcc import libbcc
    except ImportError:
        return None
    fd = int(libbcc.lib.bpf_obj_get(path.encode()))
    if fd < 0:
        return None
    try:
        info = fdinfo(fd)
    finally:
        os.close(fd)
    try:
        return int(info["key_size"]), int(info["value_size"])
    except (KeyError, ValueError):
        return None


class _ipr:
    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.ipr: Any = None

    def __enter__(self) -> Any:
        self.ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        return self.ipr

    def __exit__(self, *exc: object) -> None:
        self.ipr.close()
