"""The demo's nodes (root only): a fabric namespace with a bridge, one network namespace
per node with its own ``stickyip agent`` (veths, /32 routes, direct routing between
node blocks, eBPF anti-spoofing), and pods as network namespaces wired by the real
``stickyip-cni`` binary, as a container runtime would. Each pod runs a small program
that answers TCP on port 8080 with its pod name and runs probes on request.

Every name carries the run's random id; :meth:`Datapath.close` removes namespaces,
processes and bpffs pins even after a failure. Like ``tests/privileged/testbed.py``,
but sharing the demo's Redis and driven by the demo kubelet."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.errors import ComponentFailed, DemoError
from demo.kubelet import RunningPod
from demo.procs import Component, Supervisor, cni_command, stickyip_command
from demo.relay import LoopbackRelay

FABRIC_NET = ipaddress.IPv4Network("192.168.251.0/24")
BPFFS = "/sys/fs/bpf"
POD_PORT = 8080

#: The program inside every pod: a TCP server on POD_PORT answering with the pod's
#: name, and a prober reading {"id", "ip", "port", "timeout"} lines on stdin.
POD_PROGRAM = r'''
import json, socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(64)
def serve():
    while True:
        c, _ = srv.accept()
        try: c.sendall(name.encode())
        except OSError: pass
        c.close()
threading.Thread(target=serve, daemon=True).start()
print(json.dumps({"ready": name}), flush=True)
lock = threading.Lock()
def probe(req):
    try:
        s = socket.create_connection((req["ip"], req["port"]), timeout=req["timeout"])
        s.settimeout(req["timeout"]); data = s.recv(100); s.close()
        res = {"id": req["id"], "ok": True, "reply": data.decode()}
    except ConnectionRefusedError:
        res = {"id": req["id"], "ok": False, "reply": "connection refused"}
    except OSError as e:
        res = {"id": req["id"], "ok": False, "reply": type(e).__name__}
    with lock:
        sys.stdout.write(json.dumps(res) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    threading.Thread(target=probe, args=(json.loads(line),), daemon=True).start()
'''


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> str:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, text=True)
    if check and proc.returncode != 0:
        raise DemoError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Node:
    name: str
    index: int
    netns: str
    address: str
    dir: Path
    socket_dir: Path
    agent: Component | None = None

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def socket(self) -> str:
        return str(self.socket_dir / f"{self.name}.sock")


@dataclass
class PodSandbox:
    uid: str
    namespace: str
    name: str
    node: str
    netns: str
    container_id: str
    address: str = ""
    proc: asyncio.subprocess.Process | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _next: int = 0

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    async def connect(self, ip: str, port: int, wait_s: float = 1.5) -> tuple[bool, str]:
        """A TCP connection from this pod; (connected, reply or error)."""
        if self.proc is None or self.proc.stdin is None or self.proc.stdout is None:
            return False, "pod program not running"
        async with self._lock:
            self._next += 1
            req = {"id": self._next, "ip": ip, "port": port, "timeout": wait_s}
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait_s + 5)
        res = json.loads(line)
        return bool(res["ok"]), str(res["reply"])

    async def ping(self, ip: str, wait_s: int = 1) -> bool:
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={self.netns_path}", "--", "ping", "-n", "-q", "-c", "1",
            "-W", str(wait_s), ip, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait() == 0


class Datapath:
    def __init__(self, *, fast: bool = False, service_policy: bool = True) -> None:
        self.run_id = secrets.token_hex(3)
        #: Agents load the eBPF service and policy programs (datapath.features.hook).
        self.service_policy = service_policy
        self.relay: LoopbackRelay | None = None
        self.api_url = ""
        #: Why the agents run without the service/policy hook ("" when they have it).
        self.features_error = ""
        self.prefix = f"sipd{self.run_id}"
        self.fast = fast
        self.fabric = f"{self.prefix}-fab"
        self.pin_base = f"{BPFFS}/stickyip-demo-{self.run_id}"
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, PodSandbox] = {}
        self.redis_url = ""
        self.pool = ""
        self._netns: list[str] = []
        self._counter = 0
        self._sup: Supervisor | None = None
        self._env: dict[str, str] = {}
        #: Called first on close (e.g. to unload the service/policy programs).
        self.closers: list[Callable[[], None]] = []

    # ------------------------------------------------------------ lifecycle

    def _add_netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._netns.append(name)

    async def start(self, names: list[str], redis_url: str, pool: str, *,
                    env: dict[str, str], sup: Supervisor, work: Path, sockets: Path,
                    api_url: str, note: Callable[[str], None] = lambda s: None) -> None:
        self.redis_url, self.pool, self._sup, self.api_url = redis_url, pool, sup, api_url
        # Agents read pods (and, with the features hook, Services, EndpointSlices and
        # NetworkPolicies) from the API, relayed into their namespaces.
        self._env = env | {"STICKYIP_AGENT_KUBE": "true", "STICKYIP_KUBE_HOST": api_url}
        self.relay = LoopbackRelay(int(api_url.rsplit(":", 1)[1]))
        self._add_netns(self.fabric)
        sh("ip", "-n", self.fabric, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.fabric, "link", "set", "br0", "up")
        for i, name in enumerate(names, start=1):
            d = work / name
            d.mkdir(exist_ok=True)
            node = Node(name, i, f"{self.prefix}-n{i}",
                        str(FABRIC_NET.network_address + 10 + i), d, sockets)
            self.nodes[name] = node
            self._add_netns(node.netns)
            port = f"p{i}"
            sh("ip", "-n", self.fabric, "link", "add", port, "type", "veth", "peer", "name",
               "fab0", "netns", node.netns)
            sh("ip", "-n", self.fabric, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", node.netns, "link", "set", "lo", "up")
            sh("ip", "-n", node.netns, "addr", "add",
               f"{node.address}/{FABRIC_NET.prefixlen}", "dev", "fab0")
            sh("ip", "-n", node.netns, "link", "set", "fab0", "up")
        for node in self.nodes.values():
            await self.relay.add_netns(node.netns_path)
        try:
            await self._start_agents(note)
        except ComponentFailed as e:
            if not self.service_policy:
                raise
            # A feature not ready is skipped, not faked: run the agents without it.
            self.features_error = str(e).splitlines()[-1][:300]
            note(f"! the agents did not start with the service/policy hook "
                 f"({self.features_error}); starting them without it")
            for node in self.nodes.values():
                if node.agent is not None:
                    sup.stop(node.agent)
            self.service_policy = False
            await self._start_agents(note)

    async def _start_agents(self, note: Callable[[str], None]) -> None:
        assert self._sup is not None
        sup = self._sup
        for node in self.nodes.values():
            node.agent = sup.start(f"agent-{node.name}", self._agent_command(node),
                                   env=self._env)
        for node in self.nodes.values():
            assert node.agent is not None
            marker = f"agent ready node={node.name}"
            comp = node.agent
            await sup.wait_until(comp, lambda c=comp, m=marker: m in c.tail(100000),  # type: ignore[misc]
                                 within=180, what="serving CNI requests")
            progs = "anti-spoofing, service and policy programs" if self.service_policy \
                else "anti-spoofing program"
            note(f"{node.name}: namespace {node.netns}, address {node.address}, agent "
                 f"pid {comp.proc.pid} ready ({progs} loaded)")

    def _agent_command(self, node: Node) -> list[str]:
        return ["nsenter", f"--net={node.netns_path}", "--", *stickyip_command(),
                "--redis-url", self.redis_url, "--log-level", "info",
                "agent", "--node", node.name, "--node-address", node.address,
                "--routing", "direct", "--socket", node.socket,
                "--pin-root", f"{self.pin_base}/{node.name}",
                "--state-dir", str(node.dir / "state"), "--metrics-port", "0",
                "--default-pool", self.pool,
                "--sync-interval", "0.2" if self.fast else "0.5",
                *(["--hook", "datapath.features.hook:hook"] if self.service_policy else [])]

    def node_address(self, name: str) -> str:
        return self.nodes[name].address

    def runtime(self) -> NetnsRuntime:
        return NetnsRuntime(self)

    async def kill_node(self, name: str) -> None:
        """The machine loses power: its agent stops, its namespace (with every pod veth
        and route in it) disappears."""
        node = self.nodes.pop(name)
        if node.agent is not None and self._sup is not None:
            self._sup.stop(node.agent)
        for key, pod in list(self.pods.items()):
            if pod.node == name:
                await self._remove_sandbox(pod)
                self.pods.pop(key, None)
        self._del_netns(node.netns)

    def _del_netns(self, name: str) -> None:
        sh("ip", "netns", "del", name, check=False)
        with contextlib.suppress(ValueError):
            self._netns.remove(name)

    async def close(self) -> None:
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()
        self.closers.clear()
        for pod in list(self.pods.values()):
            await self._remove_sandbox(pod)
        self.pods.clear()
        if self._sup is not None:
            for node in self.nodes.values():
                if node.agent is not None:
                    self._sup.stop(node.agent)
        if self.relay is not None:
            with contextlib.suppress(Exception):
                await self.relay.close()
        for ns in reversed(list(self._netns)):
            self._del_netns(ns)
        _rm_bpffs(self.pin_base)

    # ------------------------------------------------------------------ pods

    def netconf(self, node: str) -> dict[str, Any]:
        return {"cniVersion": "1.1.0", "name": "stickyip", "type": "stickyip-cni",
                "agentSocket": self.nodes[node].socket, "pool": self.pool}

    async def cni(self, node: str, command: str, pod: PodSandbox) -> dict[str, Any] | None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": pod.container_id, "CNI_NETNS": pod.netns_path,
               "CNI_IFNAME": "eth0", "CNI_PATH": str(Path(sys.executable).parent),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};"
                           f"K8S_POD_NAME={pod.name};K8S_POD_UID={pod.uid}",
               "PYTHONPATH": self._env.get("PYTHONPATH", "")}
        proc = await asyncio.create_subprocess_exec(
            *cni_command(), env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(
            proc.communicate(json.dumps(self.netconf(node)).encode()), 90)
        text = out.decode(errors="replace").strip()
        result = json.loads(text) if text else None
        if proc.returncode != 0:
            msg = (result or {}).get("msg") or err.decode(errors="replace").strip()
            raise DemoError(f"stickyip-cni {command} on {node} failed: {msg}")
        return result if isinstance(result, dict) else None

    async def start_pod(self, pod: dict[str, Any], node: str) -> str:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        if node not in self.nodes:
            raise DemoError(f"node {node} is not running")
        self._counter += 1
        sandbox = PodSandbox(uid=uid, namespace=str(meta["namespace"]), name=str(meta["name"]),
                             node=node, netns=f"{self.prefix}-p{self._counter}",
                             container_id=f"demo{self.run_id}{uid.replace('-', '')[:20]}")
        self._add_netns(sandbox.netns)
        try:
            sh("ip", "-n", sandbox.netns, "link", "set", "lo", "up")
            result = await self.cni(node, "ADD", sandbox)
            if not result or not result.get("ips"):
                raise DemoError(f"CNI ADD of {sandbox.name} returned no address: {result}")
            sandbox.address = str(result["ips"][0]["address"]).split("/")[0]
            await self._start_program(sandbox)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.cni(node, "DEL", sandbox)
            await self._remove_sandbox(sandbox)
            raise
        self.pods[uid] = sandbox
        return sandbox.address

    async def _start_program(self, pod: PodSandbox) -> None:
        pod.proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={pod.netns_path}", "--", sys.executable, "-u", "-c",
            POD_PROGRAM, pod.name, str(POD_PORT), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True)
        assert pod.proc.stdout is not None
        line = await asyncio.wait_for(pod.proc.stdout.readline(), 30)
        if b"ready" not in line:
            raise ComponentFailed(f"the program in pod {pod.name} did not start: {line!r}")

    async def stop_pod(self, running: RunningPod) -> None:
        pod = self.pods.get(running.uid)
        if pod is None:
            return
        if pod.node in self.nodes:
            await self.cni(pod.node, "DEL", pod)
        await self._remove_sandbox(pod)
        self.pods.pop(running.uid, None)

    async def forget_node(self, node: str, pods: list[RunningPod]) -> None:
        for r in pods:
            pod = self.pods.pop(r.uid, None)
            if pod is not None:
                await self._remove_sandbox(pod)

    async def _remove_sandbox(self, pod: PodSandbox) -> None:
        if pod.proc is not None and pod.proc.returncode is None:
            pod.proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pod.proc.wait(), 10)
        self._del_netns(pod.netns)

    def sandbox(self, namespace: str, name: str) -> PodSandbox | None:
        for pod in self.pods.values():
            if (pod.namespace, pod.name) == (namespace, name):
                return pod
        return None

    async def wait_sandbox(self, namespace: str, name: str, within: float = 30
                           ) -> PodSandbox:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pod = self.sandbox(namespace, name)
            if pod is not None:
                return pod
            await asyncio.sleep(0.1)
        raise ComponentFailed(f"pod {namespace}/{name} did not start within {within:.0f}s")


class NetnsRuntime:
    """The kubelet's runtime in datapath mode (see :class:`demo.kubelet.PodRuntime`)."""

    def __init__(self, datapath: Datapath) -> None:
        self.dp = datapath

    async def start_pod(self, pod: dict[str, Any], node: str) -> str:
        return await self.dp.start_pod(pod, node)

    async def stop_pod(self, running: RunningPod) -> None:
        await self.dp.stop_pod(running)

    async def forget_node(self, node: str, pods: list[RunningPod]) -> None:
        await self.dp.forget_node(node, pods)


def _rm_bpffs(path: str) -> None:
    """bpffs has no recursive rmdir: unlink pins bottom-up."""
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
