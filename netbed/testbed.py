"""A reusable multi-node test bed for the datapath (root only).

N nodes are network namespaces joined by a bridge in a fabric namespace; each runs its
own ``stickyip agent`` (and BIRD 2 in ``bgp`` mode) against a private redis-server
reached over a unix socket. Pods are network namespaces wired by calling the real
``stickyip-cni`` binary with real netns paths, as a container runtime does. Every name
carries a random per-run suffix (other people run tests on this machine at the same
time) and :meth:`Testbed.close` removes namespaces, pins, processes and files even
after a failure. With ``relay``, each node reaches this process's loopback server
(an API stand-in) at the same 127.0.0.1 port.

Usage::

    async with Testbed(nodes=3) as tb:
        a = await tb.add_pod("node-1", "default", "web-a")
        b = await tb.add_pod("node-2", "default", "web-b")
        assert await tb.ping(a, b.address)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datapath.cni import call_agent
from ipam import PoolSpec, RedisIpam, open_ipam
from netbed.agents import agent_command, cni_env, pod_args
from netbed.fabric import Fabric, FabricNode
from netbed.lifecycle import Lifecycle
from netbed.relay import ThreadedRelay
from netbed.shell import BPFFS, Namespaces, netns_path, remove_pins, run
from tests.support.redis_server import RedisServer

BIN = Path(sys.executable).parent
FABRIC_NET = ipaddress.IPv4Network("192.168.250.0/24")
FABRIC_NET6 = ipaddress.IPv6Network("fd00:fab::/64")


@dataclass
class Node(FabricNode):
    socket: str
    pin_root: str
    agent: subprocess.Popen[bytes] | None = None
    bird: subprocess.Popen[bytes] | None = None
    agent_starts: int = 0

    @property
    def bird_config(self) -> str:
        return str(self.dir / "bird.conf")

    @property
    def bird_socket(self) -> str:
        return str(self.dir / "bird.ctl")

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def delete_queue(self) -> Path:
        """The node's CNI deletion queue (the agent's default: beside its state dir)."""
        return self.dir / "cni-delete-queue"


@dataclass
class Pod:
    node: str
    namespace: str
    name: str
    uid: str
    container_id: str
    ifname: str
    netns: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)

    @property
    def address(self) -> str:
        """The first address (IPv4 on a dual-stack pod)."""
        return str(self.result["ips"][0]["address"]).split("/")[0]

    @property
    def addresses(self) -> list[str]:
        return [str(ip["address"]).split("/")[0] for ip in self.result["ips"]]

    @property
    def address6(self) -> str:
        """The IPv6 address ("" for a pod without one)."""
        return next((a for a in self.addresses if ":" in a), "")


@dataclass
class CniCall:
    rc: int
    out: dict[str, Any] | None
    stderr: str


class Testbed(Lifecycle):
    """N nodes with agents on a fabric; see the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(self, *, nodes: int = 3, routing: str = "direct",
                 pool_cidr: str = "10.244.0.0/16", block_size: int = 26,
                 pool6_cidr: str = "", block_size6: int = 122,
                 hooks: Sequence[str] = (), agent_args: Sequence[str] = (),
                 sync_interval: float = 0.2, cni_version: str = "1.1.0",
                 installed_plugin: bool = False,
                 agent_env: dict[str, str] | None = None,
                 relay: ThreadedRelay | None = None, feed: bool = False) -> None:
        """``installed_plugin``: call the standalone plugin each agent installs into its
        node's CNI bin dir (as /opt/cni/bin in a cluster) instead of the console script.
        ``relay``: added to each node's namespace before its agent starts.
        ``pool6_cidr``: dual-stack: nodes get IPv6 fabric addresses and pods one address
        of each family (the IPv6 pool is ``tb6``, named after ``tb`` in the network
        config's ``pool``). ``feed``: the agents follow a routing feed (``stickyip feed``
        on a unix socket of the bed, as the DaemonSet's agents follow the feed Service)
        instead of the store."""
        self.run_id = secrets.token_hex(3)
        self.prefix = f"sip{self.run_id}"
        self.routing = routing
        self.pool = "tb"
        self.pool_spec = PoolSpec(name=self.pool, cidr=pool_cidr, block_size=block_size)
        self.pool6 = "tb6" if pool6_cidr else ""
        self.pool6_spec = (PoolSpec(name=self.pool6, cidr=pool6_cidr, block_size=block_size6)
                           if pool6_cidr else None)
        self.hooks = list(hooks)
        self.agent_args = list(agent_args)
        self.sync_interval = sync_interval
        self.cni_version = cni_version
        self.installed_plugin = installed_plugin
        #: extra environment of the agents (e.g. PYTHONPATH for hook modules in tests)
        self.agent_env = dict(agent_env or {})
        self.dir = Path(tempfile.mkdtemp(prefix=f"stickyip-tb-{self.run_id}-"))
        self.pin_base = f"{BPFFS}/stickyip-tb-{self.run_id}"
        self.namespaces = Namespaces()
        self.fabric = Fabric(self.namespaces, prefix=self.prefix, network=FABRIC_NET,
                             network6=FABRIC_NET6 if pool6_cidr else None)
        self.node_count = nodes
        self.relay = relay
        self._relayed: set[str] = set()
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._counter = itertools.count(1)
        self.redis: RedisServer | None = None
        self.redis_url = ""
        self.feed = feed
        self.feed_proc: subprocess.Popen[bytes] | None = None
        self._ipam: RedisIpam | None = None

    @property
    def ipam(self) -> RedisIpam:
        if self._ipam is None:
            raise RuntimeError("testbed not started")
        return self._ipam

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        sock = str(self.dir / "redis.sock")
        self.redis = RedisServer(extra=["--unixsocket", sock, "--unixsocketperm", "700"])
        self.redis.start()
        self.redis_url = f"unix://{sock}"
        self._ipam = await open_ipam(self.redis_url, actor="testbed")
        await self.ipam.apply_pool(self.pool_spec)
        if self.pool6_spec is not None:
            await self.ipam.apply_pool(self.pool6_spec)
        if self.feed:
            await self.start_feed()
        self.fabric.start()
        for _ in range(self.node_count):
            index, netns, address = self.fabric.add_node()
            name = f"node-{index}"
            d = self.dir / name
            d.mkdir()
            self.nodes[name] = Node(name=name, index=index, netns=netns, address=address,
                                    address6=self.fabric.address6_of(index),
                                    dir=d, socket=str(d / "agent.sock"),
                                    pin_root=f"{self.pin_base}/{name}")
        await asyncio.gather(*(self.start_agent(n) for n in self.nodes))
        if self.routing == "bgp":
            for node in self.nodes.values():
                self.start_bird(node.name)

    async def close(self) -> None:
        for node in self.nodes.values():
            for proc in (node.bird, node.agent):
                if proc is not None:
                    _stop(proc)
        for proc in self._procs:
            _stop(proc)
        self.stop_feed()
        self.namespaces.close()
        remove_pins(self.pin_base)
        if self._ipam is not None:
            with contextlib.suppress(Exception):
                await self._ipam.aclose()
            self._ipam = None
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ feed

    async def start_feed(self, *, within: float = 30) -> None:
        """(Re)start the bed's routing feed on a unix socket the agents reach from their
        namespaces; they follow it (STICKYIP_AGENT_FEED) from their next start."""
        sock, log = self._spawn_feed()
        proc = self.feed_proc
        assert proc is not None
        deadline = time.monotonic() + within
        while b"feed ready" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bed's feed did not start:\n"
                                   + log.read_text(errors="replace")[-3000:])
            await asyncio.sleep(0.05)
        self.agent_env["STICKYIP_AGENT_FEED"] = f"unix:{sock}"

    def _spawn_feed(self) -> tuple[Path, Path]:
        sock, log = self.dir / "feed.sock", self.dir / "feed.log"
        sock.unlink(missing_ok=True)
        with open(log, "wb") as out:
            self.feed_proc = subprocess.Popen(
                [str(BIN / "stickyip"), "--redis-url", self.redis_url, "--log-level", "info",
                 "feed", "--port", "-1", "--unix", str(sock), "--metrics-port", "0"],
                stdout=out, stderr=out)
        return sock, log

    def stop_feed(self) -> None:
        if self.feed_proc is not None:
            _stop(self.feed_proc)
            self.feed_proc = None

    # ---------------------------------------------------------------- agents

    def agent_command(self, node: Node) -> list[str]:
        return agent_command(
            [str(BIN / "stickyip")], netns_path=node.netns_path, redis_url=self.redis_url,
            node=node.name, address=node.address, routing=self.routing, socket=node.socket,
            pin_root=node.pin_root, state_dir=str(node.dir / "state"), metrics_port=9402,
            default_pool=self.pools, sync_interval=self.sync_interval, hooks=self.hooks,
            extra=["--bird-config", node.bird_config, "--bird-socket", node.bird_socket,
                   "--cni-bin-dir", str(node.dir / "cni-bin"),
                   *(["--node-address6", node.address6] if node.address6 else []),
                   *self.agent_args])

    @property
    def pools(self) -> str:
        """The pods' pools as the network config and the agent name them."""
        return f"{self.pool},{self.pool6}" if self.pool6 else self.pool

    def _spawn_agent(self, node: Node) -> None:
        node.agent_starts += 1
        with open(node.log, "ab") as log:
            log.write(f"--- start {node.agent_starts} ---\n".encode())
            log.flush()
            node.agent = subprocess.Popen(self.agent_command(node), stdout=log, stderr=log,
                                          env={**os.environ, **self.agent_env})

    async def start_agent(self, name: str, *, within: float = 60) -> None:
        """Start (or restart) the agent of ``name`` and wait until it serves."""
        node = self.nodes[name]
        if self.relay is not None and name not in self._relayed:
            self.relay.add_netns(node.netns_path)
            self._relayed.add(name)
        self._spawn_agent(node)
        assert node.agent is not None
        timeout = within
        marker = f"agent ready node={name}".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = node.log.read_bytes()
            tail = text[text.rfind(f"--- start {node.agent_starts} ---".encode()):]
            if marker in tail:
                return
            if node.agent.poll() is not None:
                raise RuntimeError(f"agent on {name} exited ({node.agent.returncode}):\n"
                                   + tail.decode(errors="replace")[-3000:])
            await asyncio.sleep(0.05)
        raise RuntimeError(f"agent on {name} not ready within {timeout}s:\n"
                           + node.log.read_text(errors="replace")[-3000:])

    def kill_agent(self, name: str, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[name]
        if node.agent is not None and node.agent.poll() is None:
            node.agent.send_signal(sig)
            node.agent.wait(timeout=30)
        node.agent = None

    def policy_drops(self) -> int:
        """Packets the agents' policy programs dropped so far, over every node."""
        from netbed.topology import pinned_policy_drops

        return sum(pinned_policy_drops(f"{node.pin_root}/features")
                   for node in self.nodes.values())

    def agent_log(self, name: str) -> str:
        return self.nodes[name].log.read_text(errors="replace")

    def agent_call(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """A raw request on the agent socket (e.g. ``{"command": "ENDPOINTS"}``)."""
        return call_agent(self.nodes[name].socket, request, timeout=30)

    def start_bird(self, name: str) -> None:
        node = self.nodes[name]
        deadline = time.monotonic() + 20
        while not os.path.exists(node.bird_config):
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent on {name} wrote no BIRD config")
            time.sleep(0.05)
        blog = open(node.dir / "bird.log", "ab")  # noqa: SIM115
        node.bird = subprocess.Popen(
            ["nsenter", f"--net={node.netns_path}", "--", "bird", "-f", "-c",
             node.bird_config, "-s", node.bird_socket, "-P", str(node.dir / "bird.pid")],
            stdout=blog, stderr=blog)
        blog.close()

    def birdc(self, name: str, *args: str) -> str:
        node = self.nodes[name]
        return run("birdc", "-s", node.bird_socket, *args, check=False).stdout.decode()

    # ------------------------------------------------------------------ pods

    def netconf(self, name: str, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"cniVersion": self.cni_version, "name": "stickyip",
                                "type": "stickyip-cni", "agentSocket": self.nodes[name].socket,
                                "deleteQueueDir": str(self.nodes[name].delete_queue),
                                "pool": self.pools}
        conf.update(extra)
        return conf

    def cni(self, node: str, command: str, *, container_id: str = "", netns: str = "",
            ifname: str = "eth0", args: str = "", conf: dict[str, Any] | None = None,
            stdin: bytes | None = None, env: dict[str, str] | None = None,
            drop_env: Sequence[str] = ()) -> CniCall:
        """Run the real ``stickyip-cni`` binary as a runtime would."""
        e = cni_env(command, container_id=container_id, netns=netns, ifname=ifname, args=args,
                    cni_path=str(BIN), extra=env, drop=drop_env)
        data = stdin if stdin is not None else json.dumps(conf or self.netconf(node)).encode()
        plugin = (self.nodes[node].dir / "cni-bin" / "stickyip-cni" if self.installed_plugin
                  else BIN / "stickyip-cni")
        proc = run(str(plugin), input=data, env=e, check=False, timeout=90)
        text = proc.stdout.decode(errors="replace").strip()
        out = json.loads(text) if text else None
        return CniCall(proc.returncode, out, proc.stderr.decode(errors="replace"))

    def new_pod_netns(self) -> str:
        """A fresh pod namespace (thread-safe: runtimes create them off the loop)."""
        return self.namespaces.add(f"{self.prefix}-p{next(self._counter)}")

    async def add_pod(self, node: str, namespace: str, name: str, *, uid: str = "",
                      ifname: str = "eth0", container_id: str = "",
                      netns: str = "") -> Pod:
        """Create the pod's netns and run CNI ADD on ``node``; raises on a CNI error."""
        netns = netns or self.new_pod_netns()
        cid = container_id or f"c{self.run_id}{secrets.token_hex(6)}"
        uid = uid or secrets.token_hex(8)
        call = await asyncio.to_thread(self.cni, node, "ADD", container_id=cid,
                                       netns=netns_path(netns), ifname=ifname,
                                       args=pod_args(namespace, name, uid))
        if call.rc != 0 or call.out is None:
            raise RuntimeError(f"CNI ADD of {namespace}/{name} on {node} failed: {call.out} "
                               f"{call.stderr}")
        pod = Pod(node=node, namespace=namespace, name=name, uid=uid, container_id=cid,
                  ifname=ifname, netns=netns, result=call.out)
        self.pods[f"{namespace}/{name}"] = pod
        return pod

    async def del_pod(self, pod: Pod, *, remove_netns: bool = True) -> CniCall:
        call = await asyncio.to_thread(self.cni, pod.node, "DEL",
                                       container_id=pod.container_id,
                                       netns=pod.netns_path, ifname=pod.ifname,
                                       args=pod_args(pod.namespace, pod.name, pod.uid))
        if remove_netns and pod.netns in self.namespaces.names:
            self.namespaces.delete(pod.netns)
        self.pods.pop(f"{pod.namespace}/{pod.name}", None)
        return call

    # ---------------------------------------------------------------- probes

    def exec_in(self, where: Pod | Node | str, cmd: Sequence[str], *, timeout: float = 30,
                check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd`` inside a pod's or node's network namespace."""
        path = self._ns_path(where)
        return run("nsenter", f"--net={path}", "--", *cmd, check=check, timeout=timeout)

    def popen_in(self, where: Pod | Node | str, cmd: Sequence[str]
                 ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["nsenter", f"--net={self._ns_path(where)}", "--", *cmd],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self._procs.append(proc)
        return proc

    def _ns_path(self, where: Pod | Node | str) -> str:
        if isinstance(where, Pod | Node):
            return where.netns_path
        return self.nodes[where].netns_path if where in self.nodes else netns_path(where)

    async def ping(self, src: Pod | Node | str, address: str, *, count: int = 1,
                   wait_s: int = 2) -> bool:
        proc = await asyncio.to_thread(self.exec_in, src, ["ping", "-n", "-q", "-c", str(count),
                                                           "-W", str(wait_s), address])
        return proc.returncode == 0

    async def wait_ping(self, src: Pod | Node | str, address: str, *,
                        within: float = 10) -> bool:
        """Ping until it answers or ``within`` seconds pass (routes converge async)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await self.ping(src, address, wait_s=1):
                return True
        return False

    def serve_tcp(self, pod: Pod, port: int) -> subprocess.Popen[bytes]:
        """An echo server in ``pod`` (one connection at a time, line based)."""
        proc = self.popen_in(pod, [sys.executable, "-u", "-c", _ECHO_SERVER, str(port)])
        line = proc.stdout.readline() if proc.stdout else b""
        if b"listening" not in line:
            raise RuntimeError(f"echo server in {pod.name} did not start: {line!r}")
        return proc

    async def tcp_echo(self, src: Pod, address: str, port: int, payload: str = "hello",
                       *, wait_s: float = 3) -> bool:
        timeout = wait_s
        proc = await asyncio.to_thread(
            self.exec_in, src, [sys.executable, "-c", _ECHO_ONCE, address, str(port), payload,
                                str(timeout)], timeout=timeout + 10)
        return proc.returncode == 0 and proc.stdout.decode().strip() == payload

    def tcp_session(self, src: Pod, address: str, port: int) -> TcpSession:
        """A long-lived TCP connection from ``src``; ``roundtrip`` proves it still works."""
        proc = self.popen_in(src, [sys.executable, "-u", "-c", _SESSION, address, str(port)])
        s = TcpSession(proc)
        if not s.roundtrip("hello"):
            raise RuntimeError(f"tcp session {src.name} -> {address}:{port} failed")
        return s

    def route(self, node: str, dst: str) -> str:
        """``ip route show exact DST`` in the node (all protocols)."""
        family = "-6" if ":" in dst else "-4"
        return run("ip", family, "-n", self.nodes[node].netns, "route", "show", "exact",
                   dst).stdout.decode().strip()

    async def wait_route(self, node: str, dst: str, contains: str, *,
                         within: float = 10) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if contains in self.route(node, dst):
                return True
            await asyncio.sleep(0.05)
        return False


async def eventually(check: Callable[[], bool], *, within: float = 10,
                     every: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(every)
    return check()


class TcpSession:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def roundtrip(self, text: str, timeout: float = 5) -> bool:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.poll() is not None:
            return False
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return False
        return self.proc.stdout.readline().decode().strip() == text

    def close(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_ECHO_SERVER = """
import socket, sys, threading
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # both families
s.bind(("::", int(sys.argv[1]))); s.listen(16)
print("listening", flush=True)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(line); f.flush()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

_ECHO_ONCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
c.sendall(sys.argv[3].encode() + b"\\n")
print(c.makefile("rb").readline().decode().strip())
"""

_SESSION = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
f = c.makefile("rwb")
for line in sys.stdin:
    f.write(line.encode()); f.flush()
    print(f.readline().decode().strip(), flush=True)
"""


@contextlib.asynccontextmanager
async def testbed(**kwargs: Any) -> AsyncIterator[Testbed]:
    """``async with testbed(nodes=2, routing="bgp") as tb:`` — same as the class."""
    async with Testbed(**kwargs) as tb:
        yield tb
