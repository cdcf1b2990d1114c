"""The Sentinel overlay's Redis, run for real on loopback: three "pods" (127.0.0.1-3
standing in for their nodes), each configured by the overlay's own ``configure.sh``
and running ``redis-server`` and the Sentinel with the StatefulSet's own command
lines. Only what a loopback test must change is changed: the ports (one free pair
shared by the three addresses, as every node uses 6379/26379), ``/data`` (a
directory per pod), the address each process binds to, and a log file.

Everything is read from the overlay as ``kubectl apply -k`` would send it, so the
fault tests, the failover benchmark and the manifests cannot drift apart.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.support.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "manifests" / "overlays" / "sentinel"
PODS = 3


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    if len(hits) != 1:
        raise AssertionError(f"the Sentinel overlay renders {len(hits)} {kind}/{name}*")
    return hits[0]


def parse_conf(text: str, service: str) -> dict[str, str]:
    """``directive value`` lines of a redis.conf or sentinel.conf; a Sentinel's
    per-service directives (``sentinel NAME SERVICE VALUE...``) as ``sentinel NAME``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "sentinel" and len(words) > 2 and words[2] == service:
            out[f"sentinel {words[1]}"] = " ".join(words[3:])
        elif words[0] == "sentinel" and len(words) > 1:
            out[f"sentinel {words[1]}"] = " ".join(words[2:])
        else:
            out[words[0]] = " ".join(words[1:])
    return out


@dataclass(frozen=True)
class Overlay:
    """What the Sentinel overlay deploys for the store, from its rendered objects."""

    script: str
    redis_cmd: tuple[str, ...]
    sentinel_cmd: tuple[str, ...]
    #: the components' STICKYIP_* settings (ConfigMap stickyip-config)
    component_env: dict[str, str]
    service: str

    @staticmethod
    @functools.cache
    def rendered() -> Overlay:
        from ipam.connection import parse_sentinel_url

        objs = render(OVERLAY)
        script = _one(objs, "ConfigMap", "stickyip-redis-sentinel-scripts")["data"][
            "configure.sh"]
        pod = _one(objs, "StatefulSet", "stickyip-redis")["spec"]["template"]["spec"]
        cmds = {c["name"]: (*c["command"], *c.get("args", [])) for c in pod["containers"]}
        env = dict(_one(objs, "ConfigMap", "stickyip-config-")["data"])
        service = parse_sentinel_url(env["STICKYIP_REDIS_URL"]).service
        return Overlay(script, cmds["redis"], cmds["sentinel"], env, service)

    def configs(self) -> tuple[dict[str, str], dict[str, str]]:
        """(redis.conf, sentinel.conf) settings the script writes for a first pod."""
        root = Path(os.environ.get("TMPDIR", "/tmp")) / f"stickyip-conf-{os.getpid()}"
        try:
            pods = HaStore(root, self)
            done = pods.configure(0, sentinel_host=None)
            if done.returncode != 0:
                raise AssertionError(f"configure.sh failed: {done.stderr}")
            conf = pods.data(0) / "conf"
            return (parse_conf((conf / "redis.conf").read_text(), self.service),
                    parse_conf((conf / "sentinel.conf").read_text(), self.service))
        finally:
            shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Timings:
    """The overlay's failure-detection figures the fault tests are sized by."""

    down_after_s: float
    failover_timeout_s: float
    max_lag_s: float

    @staticmethod
    def of(overlay: Overlay) -> Timings:
        redis_conf, sentinel_conf = overlay.configs()
        return Timings(
            down_after_s=int(sentinel_conf["sentinel down-after-milliseconds"]) / 1000,
            failover_timeout_s=int(sentinel_conf["sentinel failover-timeout"]) / 1000,
            max_lag_s=float(redis_conf["min-replicas-max-lag"]))


def free_port_on_every_pod() -> int:
    """A port free on 127.0.0.1 .. 127.0.0.N alike."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for i in range(2, PODS + 1):
                with socket.socket() as s:
                    s.bind((f"127.0.0.{i}", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every loopback pod address")


def ping(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Proc:
    ordinal: int
    kind: str  # "redis" | "sentinel"
    args: list[str]
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False


@dataclass
class SentinelEvent:
    at: float  # time.monotonic()
    ordinal: int
    channel: str
    data: str


class HaStore:
    """Three pods of the overlay's StatefulSet on loopback; see the module doc.

    The processes are this object's children; :meth:`close` ends every one of them
    (by PID) and removes the pods' directories."""

    def __init__(self, root: Path, overlay: Overlay | None = None) -> None:
        self.root = root
        self.overlay = overlay or Overlay.rendered()
        self.service = self.overlay.service
        self.redis_port = free_port_on_every_pod()
        self.sentinel_port = free_port_on_every_pod()
        while self.sentinel_port == self.redis_port:
            self.sentinel_port = free_port_on_every_pod()
        # 26379 first: "6379" is inside it
        self.script = (self.overlay.script.replace("26379", "\0S")
                       .replace("6379", str(self.redis_port))
                       .replace("\0S", str(self.sentinel_port)))
        self.procs: dict[tuple[int, str], Proc] = {}
        self.events: list[SentinelEvent] = []
        self._event_cond: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = 0

    # ----------------------------------------------------------------- pods

    @staticmethod
    def ip(ordinal: int) -> str:
        return f"127.0.0.{ordinal + 1}"

    def data(self, ordinal: int) -> Path:
        return self.root / f"pod-{ordinal}"

    def url(self, ordinals: tuple[int, ...] = tuple(range(PODS))) -> str:
        hosts = ",".join(f"{self.ip(i)}:{self.sentinel_port}" for i in ordinals)
        return f"redis+sentinel://{hosts}/{self.service}"

    def redis_url(self, ordinal: int) -> str:
        return f"redis://{self.ip(ordinal)}:{self.redis_port}/0"

    def configure(self, ordinal: int,
                  sentinel_host: str | None) -> subprocess.CompletedProcess[str]:
        """The init container: run the overlay's configure.sh for one pod."""
        data = self.data(ordinal)
        data.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "POD_NAME": f"stickyip-redis-{ordinal}",
               "POD_IP": self.ip(ordinal)}
        if sentinel_host is not None:
            env["STICKYIP_STORE_SERVICE_HOST"] = sentinel_host
        return subprocess.run(["sh", "-c", self.script.replace("/data", str(data))], env=env,
                              capture_output=True, text=True, timeout=30)

    def _args(self, ordinal: int, kind: str) -> list[str]:
        data = str(self.data(ordinal))
        cmd = self.overlay.redis_cmd if kind == "redis" else self.overlay.sentinel_cmd
        port = self.redis_port if kind == "redis" else self.sentinel_port
        return [*(a.replace("/data", data) for a in cmd), "--port", str(port),
                "--bind", self.ip(ordinal), "--logfile", f"{data}/{kind}.log"]

    def start(self, ordinal: int, kind: str) -> None:
        """Start (or, as the kubelet restarts a container, restart with the same command
        line) one container's process and wait until it answers PING."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed; run 'make setup'")
        proc = self.procs.get((ordinal, kind)) or Proc(ordinal, kind, self._args(ordinal, kind))
        if proc.popen is not None and proc.popen.poll() is None:
            raise AssertionError(f"pod {ordinal}'s {kind} is running already")
        proc.popen = subprocess.Popen(proc.args, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        proc.paused = False
        self.procs[(ordinal, kind)] = proc
        port = self.redis_port if kind == "redis" else self.sentinel_port
        deadline = time.monotonic() + 20
        while not ping(self.ip(ordinal), port):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{proc.args} did not start: {self.log_tail(ordinal, kind)}")
            time.sleep(0.02)

    def log_tail(self, ordinal: int, kind: str, lines: int = 30) -> str:
        path = self.data(ordinal) / f"{kind}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def pid(self, ordinal: int, kind: str = "redis") -> int:
        proc = self.procs[(ordinal, kind)]
        assert proc.popen is not None and proc.popen.poll() is None, (ordinal, kind)
        return proc.popen.pid

    def kill9(self, ordinal: int, kind: str = "redis") -> None:
        proc = self.procs[(ordinal, kind)]
        assert proc.popen is not None
        os.kill(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()

    def pause(self, ordinal: int, kind: str = "redis") -> None:
        os.kill(self.pid(ordinal, kind), signal.SIGSTOP)
        self.procs[(ordinal, kind)].paused = True

    def resume(self, ordinal: int, kind: str = "redis") -> None:
        os.kill(self.pid(ordinal, kind), signal.SIGCONT)
        self.procs[(ordinal, kind)].paused = False

    async def boot(self, *, within: float = 60.0) -> int:
        """Start the three pods as the StatefulSet does (pod 0 first, the others
        configured through a Sentinel) and wait until the store is healthy; returns
        the master's ordinal."""
        for ordinal in range(PODS):
            done = self.configure(ordinal, sentinel_host=None if ordinal == 0 else self.ip(0))
            if done.returncode != 0:
                raise AssertionError(f"configure.sh failed for pod {ordinal}: {done.stderr}")
            self.start(ordinal, "redis")
            self.start(ordinal, "sentinel")
        await self.start_events()
        return await self.wait_healthy(within=within)

    def close(self) -> None:
        for proc in self.procs.values():
            p = proc.popen
            if p is None or p.poll() is not None:
                continue
            if proc.paused:
                os.kill(p.pid, signal.SIGCONT)
            # thrown away: no graceful shutdown (a master would wait for replicas)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        if not os.environ.get("HA_TRIAL_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.close()

    # ------------------------------------------------------------- what they say

    async def _ask(self, ordinal: int, kind: str, *command: Any) -> Any:
        port = self.redis_port if kind == "redis" else self.sentinel_port
        r = aioredis.Redis(host=self.ip(ordinal), port=port, socket_timeout=1.0,
                           socket_connect_timeout=1.0, decode_responses=True)
        try:
            return await r.execute_command(*command)
        finally:
            await r.aclose()

    def running(self, ordinal: int, kind: str = "redis") -> bool:
        proc = self.procs.get((ordinal, kind))
        return bool(proc and proc.popen and proc.popen.poll() is None and not proc.paused)

    async def replication(self, ordinal: int) -> dict[str, Any]:
        info = await self._ask(ordinal, "redis", "INFO", "replication")
        if isinstance(info, str):
            return dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return dict(info)

    async def sentinel_master(self, ordinal: int) -> dict[str, str]:
        return _pairs(await self._ask(ordinal, "sentinel", "SENTINEL", "MASTER", self.service))

    async def sentinel_replicas(self, ordinal: int) -> list[dict[str, str]]:
        rows = await self._ask(ordinal, "sentinel", "SENTINEL", "REPLICAS", self.service)
        return [_pairs(r) for r in rows]

    def ordinal_of(self, ip: str) -> int:
        return int(ip.rsplit(".", 1)[1]) - 1

    async def healthy(self, *, sentinels_know_replicas: bool = True) -> int | None:
        """The master's ordinal when every pod runs, the master has every replica
        online, and every Sentinel names that master and knows the other Sentinels
        (and, with ``sentinels_know_replicas``, sees every replica healthy: what a
        failover needs; Sentinels refresh it only every 10 s); else None."""
        if not all(self.running(i, k) for i in range(PODS) for k in ("redis", "sentinel")):
            return None
        try:
            roles = [await self.replication(i) for i in range(PODS)]
            masters = [i for i, r in enumerate(roles) if r.get("role") == "master"]
            if len(masters) != 1:
                return None
            (m,) = masters
            if int(roles[m].get("connected_slaves", 0)) != PODS - 1:
                return None
            for i, r in enumerate(roles):
                if i != m and (r.get("master_host") != self.ip(m)
                               or r.get("master_link_status") != "up"):
                    return None
            for s in range(PODS):
                view = await self.sentinel_master(s)
                if (view["ip"] != self.ip(m) or view["flags"] != "master"
                        or int(view["num-other-sentinels"]) != PODS - 1):
                    return None
                if not sentinels_know_replicas:
                    continue
                if int(view["num-slaves"]) != PODS - 1:
                    return None
                for rep in await self.sentinel_replicas(s):
                    if rep["flags"] != "slave" or rep.get("master-link-status") != "ok":
                        return None
            return m
        except (OSError, aioredis.RedisError):
            return None

    async def wait_healthy(self, *, within: float, sentinels_know_replicas: bool = True) -> int:
        found: list[int] = []

        async def check() -> bool:
            m = await self.healthy(sentinels_know_replicas=sentinels_know_replicas)
            if m is not None:
                found.append(m)
            return m is not None

        await until(check, "the store to be healthy (one master, two replicas online, "
                    "three Sentinels agreeing)", within=within, diagnose=self.diagnose)
        return found[-1]

    def diagnose(self) -> str:
        return "\n".join(f"--- pod {i} {k}\n{self.log_tail(i, k, 12)}"
                         for i in range(PODS) for k in ("redis", "sentinel"))

    # ------------------------------------------------------------- Sentinel events

    async def start_events(self) -> None:
        """Record every event every Sentinel publishes (``+sdown``, ``+promoted-slave``,
        ``+switch-master``, ``+convert-to-slave``...), to wait on them."""
        self._event_cond = asyncio.Condition()
        ready = asyncio.Event()
        for i in range(PODS):
            self._tasks.append(asyncio.create_task(self._follow(i, ready)))
        await asyncio.wait_for(self._all_subscribed(ready), 10)

    async def _all_subscribed(self, ready: asyncio.Event) -> None:
        while self.subscribed < PODS:
            await ready.wait()
            ready.clear()

    async def _follow(self, ordinal: int, ready: asyncio.Event) -> None:
        r = aioredis.Redis(host=self.ip(ordinal), port=self.sentinel_port,
                           decode_responses=True)
        try:
            async with r.pubsub() as ps:
                await ps.psubscribe("*")
                self.subscribed += 1
                ready.set()
                while True:
                    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if msg is None or msg["type"] != "pmessage":
                        continue
                    assert self._event_cond is not None
                    async with self._event_cond:
                        self.events.append(SentinelEvent(time.monotonic(), ordinal,
                                                         msg["channel"], msg["data"]))
                        self._event_cond.notify_all()
        finally:
            await r.aclose()

    async def event(self, channel: str, *, since: float, within: float,
                    where: Callable[[SentinelEvent], bool] | None = None) -> SentinelEvent:
        """The first event on ``channel`` (from any Sentinel) at or after ``since``."""
        assert self._event_cond is not None

        def found() -> SentinelEvent | None:
            return next((e for e in self.events if e.channel == channel and e.at >= since
                         and (where is None or where(e))), None)

        async def wait() -> SentinelEvent:
            assert self._event_cond is not None
            async with self._event_cond:
                while (hit := found()) is None:
                    await self._event_cond.wait()
                return hit

        try:
            return await asyncio.wait_for(wait(), within)
        except TimeoutError:
            seen = [f"{e.at - since:+.2f}s s{e.ordinal} {e.channel} {e.data}"
                    for e in self.events if e.at >= since]
            raise AssertionError(f"no Sentinel published {channel} within {within} s; "
                                 f"seen: {seen}") from None


def _pairs(reply: Any) -> dict[str, str]:
    """A Sentinel state reply (redis-py may have parsed it into a dict) as strings."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}


async def until(check: Callable[[], Awaitable[bool]], what: str, *, within: float,
                diagnose: Callable[[], str] | None = None) -> None:
    """Wait for a condition the servers report (roles, replication links)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {within} s waiting for {what}{extra}")
        await asyncio.sleep(0.05)

