"""The demo's nodes (root only): a fabric namespace with a bridge, one network namespace
per node with its own ``stickyip agent`` (veths, /32 routes, direct routing between
node blocks, eBPF anti-spoofing), and pods as network namespaces wired by the real
``stickyip-cni`` binary, as a container runtime would. Each pod runs a small program
that answers TCP on port 8080 with its pod name and runs probes on request.

Every name carries the run's random id; :meth:`Datapath.close` removes namespaces,
processes and bpffs pins even after a failure. Built from the same pieces as the
privileged tests' bed (:mod:`netbed`), but sharing the demo's Redis and driven by the
demo kubelet."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.errors import ComponentFailed, DemoError
from demo.kubelet import RunningPod
from demo.procs import Component, Supervisor, cni_command, stickyip_command
from netbed.agents import agent_command, cni_env, pod_args
from netbed.deployed import deployed_agent
from netbed.fabric import Fabric, FabricNode
from netbed.pods import program_command
from netbed.relay import LoopbackRelay
from netbed.shell import BPFFS, Namespaces, NetbedError, netns_path, remove_pins, sh

FABRIC_NET = ipaddress.IPv4Network("192.168.251.0/24")
FABRIC_NET6 = ipaddress.IPv6Network("fd00:fab:251::/64")
#: every pod runs :mod:`netbed.pods`' program: it answers TCP (and UDP) on this port
#: with its name and runs probes on request
POD_PORT = 8080

@dataclass
class Node(FabricNode):
    socket_dir: Path
    agent: Component | None = None

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
    address6: str = ""
    proc: asyncio.subprocess.Process | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _next: int = 0

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)

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
        """``ping`` (IPv4) or ``ping -6``: one echo, answered or not."""
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={self.netns_path}", "--", "ping", "-n", "-q", "-c", "1",
            "-W", str(wait_s), ip, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait() == 0


class Datapath:
    def __init__(self, *, fast: bool = False, service_policy: bool = True) -> None:
        self.run_id = secrets.token_hex(3)
        #: The agent as the DaemonSet runs it: hooks, flags, settings.
        self.deployed = deployed_agent()
        #: Agents load the eBPF service and policy programs (the DaemonSet's hooks).
        self.service_policy = service_policy
        self.relay: LoopbackRelay | None = None
        self.api_url = ""
        #: Why the agents run without the service/policy hook ("" when they have it).
        self.features_error = ""
        self.prefix = f"sipd{self.run_id}"
        self.fast = fast
        self.namespaces = Namespaces()
        self.fabric = Fabric(self.namespaces, prefix=self.prefix, network=FABRIC_NET,
                             network6=FABRIC_NET6)
        self.pin_base = f"{BPFFS}/stickyip-demo-{self.run_id}"
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, PodSandbox] = {}
        self.redis_url = ""
        self.pool = ""
        self._counter = 0
        self._sup: Supervisor | None = None
        self._env: dict[str, str] = {}
        #: Called first on close (e.g. to unload the service/policy programs).
        self.closers: list[Callable[[], None]] = []

    # ------------------------------------------------------------ lifecycle

    async def start(self, names: list[str], redis_url: str, pool: str, *,
                    env: dict[str, str], sup: Supervisor, work: Path, sockets: Path,
                    api_url: str, note: Callable[[str], None] = lambda s: None) -> None:
        self.redis_url, self.pool, self._sup, self.api_url = redis_url, pool, sup, api_url
        self._env = env | self.agent_env(api_url)
        self.relay = LoopbackRelay(int(api_url.rsplit(":", 1)[1]))
        try:
            self.fabric.start()
            for name in names:
                d = work / name
                d.mkdir(exist_ok=True)
                index, netns, address = self.fabric.add_node()
                self.nodes[name] = Node(name, index, netns, address, d, sockets,
                                        address6=self.fabric.address6_of(index))
        except NetbedError as e:
            raise DemoError(f"cannot set up the node namespaces: {e}") from e
        for node in self.nodes.values():
            await self.relay.add_netns(node.netns_path)
        if self.deployed.feed:
            await self._start_feed(sockets, note)
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

    async def _start_feed(self, sockets: Path, note: Callable[[str], None]) -> None:
        """The DaemonSet's agents follow the routing feed (the ``stickyip feed``
        Deployment): the demo runs one on a unix socket the agents reach from their
        namespaces, and its agents follow it as the shipped ones do."""
        assert self._sup is not None
        sock = sockets / "feed.sock"
        sock.unlink(missing_ok=True)
        comp = self._sup.start("feed", [
            *stickyip_command(), "--redis-url", self.redis_url, "--log-level", "info",
            "feed", "--port", "-1", "--unix", str(sock), "--metrics-port", "0"], env=self._env)
        await self._sup.wait_until(comp, lambda: "feed ready" in comp.tail(100000),
                                   within=60, what="serving the routing feed")
        self._env["STICKYIP_AGENT_FEED"] = f"unix:{sock}"
        note(f"routing feed: pid {comp.proc.pid} on {sock} (the agents follow it)")

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
            note(f"{node.name}: namespace {node.netns}, addresses {node.address} and "
                 f"{node.address6}, agent pid {comp.proc.pid} ready ({progs} loaded)")

    def agent_env(self, api_url: str) -> dict[str, str]:
        """The agents run as the DaemonSet runs them (netbed.deployed): its settings, so
        they read pods (and, with the features hook, Services, EndpointSlices and
        NetworkPolicies) from the API, relayed into their namespaces."""
        return self.deployed.env | {"STICKYIP_KUBE_HOST": api_url}

    def _agent_command(self, node: Node) -> list[str]:
        settings = self.deployed.settings()
        return agent_command(
            stickyip_command(), netns_path=node.netns_path, redis_url=self.redis_url,
            node=node.name, address=node.address, routing="direct", socket=node.socket,
            pin_root=f"{self.pin_base}/{node.name}", state_dir=str(node.dir / "state"),
            default_pool=self.pool, metrics_port=settings.metrics_port,
            # --fast shortens the story's waits, the poll interval included.
            sync_interval=0.2 if self.fast else settings.sync_interval,
            hooks=self.deployed.hooks if self.service_policy else (),
            extra=[*self.deployed.flags, "--node-address6", node.address6])

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
        self.namespaces.delete(node.netns)

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
        self.namespaces.close()
        remove_pins(self.pin_base)

    # ------------------------------------------------------------------ pods

    def netconf(self, node: str) -> dict[str, Any]:
        # the deletion queue the agent keeps beside its state dir (the CNI default is
        # the node's /var/lib/stickyip/cni-delete-queue)
        return {"cniVersion": "1.1.0", "name": "stickyip", "type": "stickyip-cni",
                "agentSocket": self.nodes[node].socket, "pool": self.pool,
                "deleteQueueDir": str(self.nodes[node].dir / "cni-delete-queue")}

    async def cni(self, node: str, command: str, pod: PodSandbox) -> dict[str, Any] | None:
        env = cni_env(command, container_id=pod.container_id, netns=pod.netns_path,
                      args=pod_args(pod.namespace, pod.name, pod.uid),
                      cni_path=str(Path(sys.executable).parent),
                      extra={"PYTHONPATH": self._env.get("PYTHONPATH", "")})
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
        try:
            self.namespaces.add(sandbox.netns)
            sh("ip", "-n", sandbox.netns, "link", "set", "lo", "up")
            result = await self.cni(node, "ADD", sandbox)
            if not result or not result.get("ips"):
                raise DemoError(f"CNI ADD of {sandbox.name} returned no address: {result}")
            ips = [str(ip["address"]).split("/")[0] for ip in result["ips"]]
            sandbox.address = next((a for a in ips if ":" not in a), "")
            sandbox.address6 = next((a for a in ips if ":" in a), "")
            await self._start_program(sandbox)
        except NetbedError as e:
            await self._remove_sandbox(sandbox)
            raise DemoError(f"cannot start pod {sandbox.name}: {e}") from e
        except BaseException:
            with contextlib.suppress(Exception):
                await self.cni(node, "DEL", sandbox)
            await self._remove_sandbox(sandbox)
            raise
        self.pods[uid] = sandbox
        return ",".join(a for a in (sandbox.address, sandbox.address6) if a)

    async def _start_program(self, pod: PodSandbox) -> None:
        pod.proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={pod.netns_path}", "--",
            *program_command(pod.name, (POD_PORT,)), stdin=asyncio.subprocess.PIPE,
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
        self.namespaces.delete(pod.netns)

    def squat(self, address: str) -> tuple[str, str]:
        """Another host on the node network holding ``address`` (a forgotten VM, a host
        configured by hand): a namespace on the fabric; returns (namespace, its MAC)."""
        _, netns, _ = self.fabric.add_node()
        if ":" in address:
            sh("ip", "-n", netns, "-6", "addr", "add", f"{address}/128", "dev", "fab0", "nodad")
        else:
            sh("ip", "-n", netns, "addr", "add", f"{address}/32", "dev", "fab0")
        mac = json.loads(sh("ip", "-j", "-n", netns, "link", "show", "fab0"))[0]["address"]
        return netns, str(mac)

    def unsquat(self, netns: str) -> None:
        self.namespaces.delete(netns)

    def agent_call(self, node: str, request: dict[str, Any]) -> dict[str, Any]:
        """A raw request on a node agent's socket (e.g. ``{"command": "RECHECK"}``)."""
        from datapath.cni import call_agent

        return call_agent(self.nodes[node].socket, request, timeout=30)

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
