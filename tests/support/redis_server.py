"""A real redis-server on loopback for tests and benchmarks, with AOF, that can be
killed with SIGKILL and restarted from its AOF. Removes its directory afterwards.
Also a real Sentinel monitoring one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, *, appendfsync: str = "everysec", port: int | None = None,
                 extra: list[str] | None = None, password: str = "") -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed; run 'make setup' (apt-get "
                               "install redis-server)")
        self.exe = exe
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stickyip-redis-"))
        self.appendfsync = appendfsync
        self.extra = extra or []
        #: requirepass: clients must AUTH (the URL carries it)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        # A port picked by free_port() can be taken by another process before
        # redis-server binds it (several test runs share this machine): try again
        # on a fresh port when the port was ours to choose.
        for attempt in range(3):
            try:
                return self._start_once()
            except RuntimeError:
                if self._fixed_port or attempt == 2:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> RedisServer:
        args = [
            self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
            "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
            *(["--requirepass", self.password] if self.password else []), *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"redis-server exited: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if self.password:
                        s.sendall(f"AUTH {self.password}\r\n".encode())
                        s.recv(64)
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.kill9()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 30 s")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def sentinel_command(port: int, *args: str) -> bytes:
    """Send one command to the Sentinel on ``port``; its raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(" ".join(args).encode() + b"\r\n")
        return s.recv(4096)


@contextmanager
def running_sentinel(master: RedisServer, *config: str, ready: tuple[str, ...],
                     names: RedisServer, within: float) -> Iterator[int]:
    """A Sentinel on a free port monitoring ``master`` as ``stickyip`` with quorum 1
    (``config``: more sentinel.conf lines); yields its port once its reply to the
    command ``ready`` names the port of ``names``, and stops it afterwards."""
    port = free_port()
    conf = master.dir / "sentinel.conf"
    conf.write_text("".join(line + "\n" for line in (
        f"port {port}", "bind 127.0.0.1", f"dir {master.dir}",
        f"sentinel monitor stickyip 127.0.0.1 {master.port} 1", *config)))
    proc = subprocess.Popen([master.exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + within
        while True:
            try:
                if str(names.port).encode() in sentinel_command(port, *ready):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the sentinel did not name port {names.port} in its "
                                     f"answer to {' '.join(ready)} within {within:g} s")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def processes_in(directory: Path) -> list[int]:
    """PIDs of processes whose working directory is ``directory`` or below it (an
    embedded redis-server runs in the directory of its database file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cwd == directory or directory in cwd.parents:
            found.append(int(entry.name))
    return found
