"""Commands, network namespaces and bpffs pins a bed creates, each recorded so that
it is removed again even after a failure."""

from __future__ import annotations

import contextlib
import os
import subprocess

BPFFS = "/sys/fs/bpf"


class NetbedError(Exception):
    """Root of the test bed's errors."""


class CommandFailed(NetbedError):
    """A command the bed ran exited non-zero."""


def run(*cmd: str, check: bool = True, timeout: float = 30, input: bytes | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input, env=env)
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(cmd)} failed ({proc.returncode}): "
                            f"{proc.stderr.decode(errors='replace').strip()}")
    return proc


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> str:
    """:func:`run`, returning standard output as text."""
    return run(*cmd, check=check, timeout=timeout).stdout.decode(errors="replace")


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


class Namespaces:
    """Network namespaces created by one bed; :meth:`close` deletes them, newest first."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.names.append(name)
        return name

    def delete(self, name: str) -> None:
        sh("ip", "netns", "del", name, check=False)
        with contextlib.suppress(ValueError):
            self.names.remove(name)

    def close(self) -> None:
        for name in reversed(list(self.names)):
            self.delete(name)


def remove_pins(path: str) -> None:
    """Remove a bpffs directory of pins (bpffs has no recursive rmdir: bottom-up)."""
    if not path.startswith(BPFFS + "/") or not os.path.isdir(path):
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, f))
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, d))
    with contextlib.suppress(OSError):
        os.rmdir(path)
