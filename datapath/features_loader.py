"""bcc loader for the service and policy programs (the only module of the features
that imports bcc): compiles ``bpf/lxc_services.c`` and ``bpf/lxc_policy.c`` into one
object whose maps are pinned under a directory (so an agent restart keeps them),
checks every map layout against :mod:`datapath.features_maps`, implements
:class:`datapath.features_state.MapWriter` over the real maps, and attaches the
programs to a pod's host-side veth with tc clsact (pyroute2).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
from importlib import resources
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from datapath import features_maps as fm
from datapath.errors import BpfFailure
from datapath.features_state import Key, Value
from datapath.hooks import PRIO_POLICY, PRIO_SERVICES

log = logging.getLogger("stickyip.datapath.features")

TC_INGRESS = 0xFFFFFFF2
TC_EGRESS = 0xFFFFFFF3
SOURCES = ("lxc_services.c", "lxc_policy.c")
DEFAULT_PIN_DIR = "/sys/fs/bpf/stickyip/features"


def _bpf_dir() -> str:
    return str(resources.files("datapath") / "bpf")


def program_text() -> str:
    """Both programs as one translation unit with local headers inlined (bcc only
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

    return "".join(inline(os.path.join(_bpf_dir(), s)) for s in SOURCES)


class FeaturePrograms:
    """The compiled feature programs, their pinned maps and tc attachment."""

    def __init__(self, *, pin_dir: str = DEFAULT_PIN_DIR,
                 defines: dict[str, int] | None = None) -> None:
        self.pin_dir = pin_dir
        self.defines = defines or {}
        self._bpf: Any = None
        self.fds: dict[str, int] = {}
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
        cflags = [f'-DPIN_DIR="{self.pin_dir}"', "-Wno-macro-redefined"]
        cflags += [f"-D{k}={v}" for k, v in self.defines.items()]
        try:
            self._bpf = BPF(text=program_text().encode(), cflags=cflags)
            for name in (fm.PROG_SVC_FROM_POD, fm.PROG_SVC_TO_POD,
                         fm.PROG_POL_FROM_POD, fm.PROG_POL_TO_POD):
                self.fds[name] = int(self._bpf.load_func(name.encode(), BPF.SCHED_CLS).fd)
        except Exception as e:  # bcc raises plain Exception on compile/load errors
            raise BpfFailure(f"cannot load service/policy programs: {e}") from e
        self._tables = {name: self._bpf[name.encode()] for name in fm.LAYOUTS}
        self.check_layouts()

    def check_layouts(self) -> None:
        """Refuse to run when a C struct and its ctypes mirror disagree."""
        for name, (key, value) in fm.LAYOUTS.items():
            t = self._tables[name]
            for what, c_type, ours in (("key", t.Key, key), ("value", t.Leaf, value)):
                if ctypes.sizeof(c_type) != ctypes.sizeof(ours):
                    raise BpfFailure(f"map {name}: C {what} is {ctypes.sizeof(c_type)} bytes, "
                                     f"features_maps.py says {ctypes.sizeof(ours)}")
                c_fields = [f[0] for f in c_type._fields_]
                o_fields = [f[0] for f in ours._fields_]
                if c_fields != o_fields:
                    raise BpfFailure(f"map {name}: C {what} fields {c_fields} != {o_fields}")

    def c_layout(self, name: str) -> tuple[Any, Any]:
        t = self._tables[name]
        return t.Key, t.Leaf

    # ---------------------------------------------------------------- MapWriter

    def update(self, name: str, key: Key, value: Value) -> None:
        k_t, v_t = fm.LAYOUTS[name]
        k, v = k_t(*key), v_t(*value)
        fd = self._tables[name].map_fd
        from bcc import libbcc

        if libbcc.lib.bpf_update_elem(fd, ctypes.byref(k), ctypes.byref(v), 0) < 0:
            err = ctypes.get_errno()
            raise BpfFailure(f"update {name}: {os.strerror(err)}")

    def delete(self, name: str, key: Key) -> None:
        k_t, _ = fm.LAYOUTS[name]
        k = k_t(*key)
        from bcc import libbcc

        libbcc.lib.bpf_delete_elem(self._tables[name].map_fd, ctypes.byref(k))

    def lookup(self, name: str, key: Key) -> Value | None:
        k_t, v_t = fm.LAYOUTS[name]
        k, v = k_t(*key), v_t()
        from bcc import libbcc

        if libbcc.lib.bpf_lookup_elem(self._tables[name].map_fd, ctypes.byref(k),
                                      ctypes.byref(v)) < 0:
            return None
        return tuple(int(getattr(v, f[0])) for f in v_t._fields_)

    def items(self, name: str) -> list[tuple[Key, Value]]:
        out = []
        for k, v in self._tables[name].items():
            out.append((tuple(int(getattr(k, f[0])) for f in k._fields_),
                        tuple(int(getattr(v, f[0])) for f in v._fields_)))
        return out

    def clear(self, name: str) -> None:
        for k, _ in self.items(name):
            self.delete(name, k)

    # ---------------------------------------------------------------- tc

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
                todo += [(TC_INGRESS, PRIO_SERVICES, fm.PROG_SVC_FROM_POD),
                         (TC_EGRESS, PRIO_SERVICES, fm.PROG_SVC_TO_POD)]
            if policy:
                todo += [(TC_INGRESS, PRIO_POLICY, fm.PROG_POL_FROM_POD),
                         (TC_EGRESS, PRIO_POLICY, fm.PROG_POL_TO_POD)]
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

    def close(self, *, unpin: bool = False) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        if unpin:
            for name in fm.LAYOUTS:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.pin_dir, name))
            with contextlib.suppress(OSError):
                os.rmdir(self.pin_dir)


class _ipr:
    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.ipr: Any = None

    def __enter__(self) -> Any:
        self.ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        return self.ipr

    def __exit__(self, *exc: object) -> None:
        self.ipr.close()
