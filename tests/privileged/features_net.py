"""A minimal node + pods topology in network namespaces for the service and policy
tests (one "node" netns routing between pod netns over veths, the pods' host-side
veths in the node netns as the agent plumbs them), plus a server/prober process per
pod: TCP and UDP servers on the given ports that answer with the pod's name, and a
line protocol on stdin to run many probes in parallel. Everything created carries a
random suffix and is removed by :meth:`Topology.close`, even after failures.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from datapath.hooks import Endpoint
from demo.relay import listen_in_netns

GATEWAY = "169.254.1.1"

AGENT = r'''
import json, socket, sys, threading
from concurrent.futures import ThreadPoolExecutor
name = sys.argv[1]
ports = [int(p) for p in sys.argv[2].split(",")]
ready = []
def tcp_server(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); ready.append(1)
    while True:
        try:
            c, _ = s.accept()
        except OSError:  # reset before accept (benchmark clients close with RST)
            continue
        try: c.sendall(name.encode())
        except OSError: pass
        c.close()
def udp_server(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port)); ready.append(1)
    while True:
        data, peer = s.recvfrom(2048)
        try: s.sendto(name.encode(), peer)
        except OSError: pass
for p in ports:
    threading.Thread(target=tcp_server, args=(p,), daemon=True).start()
    threading.Thread(target=udp_server, args=(p,), daemon=True).start()
import time
while len(ready) < 2 * len(ports): time.sleep(0.01)
print(json.dumps({"ready": name}), flush=True)
lock = threading.Lock()
def probe(req):
    ip, port, proto, timeout = req["ip"], req["port"], req["proto"], req["timeout"]
    try:
        if proto == "tcp":
            s = socket.create_connection((ip, port), timeout=timeout)
            s.settimeout(timeout)
            data = s.recv(100); s.close()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
            if req.get("sport"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", req["sport"]))
            s.connect((ip, port)); s.send(b"ping"); data = s.recv(100); s.close()
        res = {"id": req["id"], "ok": True, "reply": data.decode()}
    except ConnectionRefusedError:
        res = {"id": req["id"], "ok": False, "reply": "refused"}
    except OSError as e:
        res = {"id": req["id"], "ok": False, "reply": type(e).__name__}
    with lock:
        sys.stdout.write(json.dumps(res) + "\n"); sys.stdout.flush()
pool = ThreadPoolExecutor(64)
for line in sys.stdin:
    pool.submit(probe, json.loads(line))
'''




class LoopbackRelay:
    """Makes a server on this process's 127.0.0.1:port reachable as 127.0.0.1:port
    inside other network namespaces (an agent in a node netns reaching the API
    stand-in, as a real node reaches its API server). One thread with its own event
    loop; :meth:`close` stops it and closes every socket."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"relay-{port}")
        self._thread.start()

    def add_netns(self, netns_path: str) -> None:
        sock = listen_in_netns(netns_path, "127.0.0.1", self.port)
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, sock=sock), self.loop)
        self._servers.append(fut.result(10))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except OSError:
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    def close(self) -> None:
        async def stop() -> None:
            for srv in self._servers:
                srv.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def sh(*args: str, check: bool = True) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def start_agent(prefix: list[str], name: str, ports: tuple[int, ...]
                ) -> subprocess.Popen[str]:
    """Start the server/prober of pod ``name`` under ``prefix`` (a netns exec)."""
    proc = subprocess.Popen([*prefix, sys.executable, "-u", "-c", AGENT, name,
                             ",".join(str(p) for p in ports)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"pod agent {name} did not start: {line!r}")
    return proc


def probe_many(probes: list[tuple[subprocess.Popen[str], str, int, str]], *,
               timeout: float = 0.6, sport: int = 0) -> list[tuple[bool, str]]:
    """Run (prober process, target ip, port, proto) probes in parallel."""
    by_proc: dict[int, list[int]] = {}
    procs: dict[int, subprocess.Popen[str]] = {}
    for i, (proc, ip, port, proto) in enumerate(probes):
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"id": i, "ip": ip, "port": port, "proto": proto,
                                     "timeout": timeout, "sport": sport}) + "\n")
        by_proc.setdefault(proc.pid, []).append(i)
        procs[proc.pid] = proc
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.flush()
    results: dict[int, tuple[bool, str]] = {}
    for pid, ids in by_proc.items():
        out = procs[pid].stdout
        assert out is not None
        for _ in ids:
            r = json.loads(out.readline())
            results[int(r["id"])] = (bool(r["ok"]), str(r["reply"]))
    return [results[i] for i in range(len(probes))]


#: what a probe reports when its packets were silently dropped (a policy denial),
#: as opposed to "refused" (a reset or ICMP unreachable: something answered)
DROPPED = "TimeoutError"


def probe_expecting(probes: list[tuple[subprocess.Popen[str], str, int, str]],
                    want: list[bool], *, timeout: float = 0.5, retries: int = 3,
                    sport: int = 0) -> list[tuple[bool, str]]:
    """Run probes in parallel, then re-run those expected to succeed that failed, each
    round with twice the timeout, at most ``retries`` times: on a loaded machine an
    allowed connection may be late, and a success is never spurious. A probe expected
    to fail runs once with the short timeout; callers check that it failed the way a
    denial fails (:data:`DROPPED`), so a slow machine cannot pass for a policy."""
    if len(want) != len(probes):
        raise ValueError("one expectation per probe")
    res = probe_many(probes, timeout=timeout, sport=sport)
    t = timeout
    for _ in range(retries):
        again = [i for i, (ok, _) in enumerate(res) if want[i] and not ok]
        if not again:
            break
        t *= 2
        for i, r in zip(again, probe_many([probes[i] for i in again], timeout=t,
                                          sport=sport), strict=True):
            res[i] = r
    return res


@dataclass
class Pod:
    namespace: str
    name: str
    address: ipaddress.IPv4Address
    netns: str
    host_ifname: str
    host_ifindex: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def endpoint(self) -> Endpoint:
        return Endpoint(container_id=self.netns, ifname="eth0", host_ifname=self.host_ifname,
                        host_ifindex=self.host_ifindex, address=self.address,
                        namespace=self.namespace, pod=self.name, labels=dict(self.labels),
                        netns=f"/run/netns/{self.netns}")


class Topology:
    """One node netns and pods attached to it."""

    def __init__(self, subnet: str = "10.77.0.0/24") -> None:
        self.tag = secrets.token_hex(3)
        self.node = f"sipf-node-{self.tag}"
        self.pods: dict[str, Pod] = {}
        self._hosts = ipaddress.IPv4Network(subnet).hosts()
        next(self._hosts)
        self._nets: list[str] = []
        sh("ip", "netns", "add", self.node)
        self._nets.append(self.node)
        self.node_exec("ip", "link", "set", "lo", "up")
        self.node_exec("sysctl", "-qw", "net.ipv4.ip_forward=1")

    def node_exec(self, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.node, *args, check=check)

    def add_pod(self, namespace: str, name: str, labels: dict[str, str] | None = None,
                ports: tuple[int, ...] = (80, 81), answer: str = "") -> Pod:
        """A pod whose servers answer with ``answer`` (default: its name)."""
        idx = len(self.pods)
        netns = f"sipf-{self.tag}-{idx}"
        host_if = f"sf{self.tag}{idx}"
        addr = next(self._hosts)
        sh("ip", "netns", "add", netns)
        self._nets.append(netns)
        sh("ip", "-n", self.node, "link", "add", host_if, "type", "veth", "peer", "name",
           "eth0", "netns", netns)
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        sh("ip", "-n", netns, "addr", "add", f"{addr}/32", "dev", "eth0")
        sh("ip", "-n", self.node, "link", "set", host_if, "up")
        host_mac = json.loads(sh("ip", "-j", "-n", self.node, "link", "show", host_if))[0]
        pod_mac = json.loads(sh("ip", "-j", "-n", netns, "link", "show", "eth0"))[0]
        sh("ip", "-n", netns, "neigh", "add", GATEWAY, "lladdr", host_mac["address"], "dev",
           "eth0", "nud", "permanent")
        sh("ip", "-n", netns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
        sh("ip", "-n", netns, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        sh("ip", "-n", self.node, "neigh", "add", str(addr), "lladdr", pod_mac["address"],
           "dev", host_if, "nud", "permanent")
        sh("ip", "-n", self.node, "route", "add", f"{addr}/32", "dev", host_if)
        pod = Pod(namespace=namespace, name=name, address=addr, netns=netns,
                  host_ifname=host_if, host_ifindex=int(host_mac["ifindex"]),
                  labels=dict(labels or {}))
        pod.proc = start_agent(["ip", "netns", "exec", netns], answer or name, ports)
        self.pods[pod.key] = pod
        return pod

    def probe_many(self, probes: list[tuple[Pod, str, int, str]], timeout: float = 0.6,
                   sport: int = 0) -> list[tuple[bool, str]]:
        """Run (source pod, target ip, port, proto) probes in parallel (UDP probes from
        ``sport`` when given)."""
        return probe_many(self._procs(probes), timeout=timeout, sport=sport)

    @staticmethod
    def _procs(probes: list[tuple[Pod, str, int, str]]
               ) -> list[tuple[subprocess.Popen[str], str, int, str]]:
        out = []
        for p, ip, port, proto in probes:
            if p.proc is None:
                raise RuntimeError(f"pod {p.key} has no prober")
            out.append((p.proc, ip, port, proto))
        return out

    def probe_expecting(self, probes: list[tuple[Pod, str, int, str]], want: list[bool],
                        timeout: float = 0.5, sport: int = 0) -> list[tuple[bool, str]]:
        """:func:`probe_expecting` from pods."""
        return probe_expecting(self._procs(probes), want, timeout=timeout, sport=sport)

    def close(self) -> None:
        for pod in self.pods.values():
            if pod.proc is not None:
                pod.proc.kill()
                pod.proc.wait()
        for ns in reversed(self._nets):
            sh("ip", "netns", "del", ns, check=False)
        self._nets.clear()


def running_as_root() -> bool:
    return os.geteuid() == 0
