"""A minimal node + pods topology in network namespaces for the service and policy
tests (one "node" netns routing between pod netns over veths, the pods' host-side
veths in the node netns as the agent plumbs them), plus a server/prober process per
pod: TCP and UDP servers on the given ports that answer with the pod's name, and a
line protocol on stdin to run many probes in parallel. Everything created carries a
random suffix and is removed by :meth:`Topology.close`, even after failures.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from datapath.hooks import Endpoint

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


def sh(*args: str, check: bool = True) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: dict[int, dict[str, object]] = field(default_factory=dict)

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
                ports: tuple[int, ...] = (80, 81)) -> Pod:
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
        pod.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-u", "-c", AGENT, name,
             ",".join(str(p) for p in ports)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert pod.proc.stdout is not None
        line = pod.proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"pod agent {pod.key} did not start: {line!r}")
        self.pods[pod.key] = pod
        return pod

    def probe_many(self, probes: list[tuple[Pod, str, int, str]], timeout: float = 0.6,
                   sport: int = 0) -> list[tuple[bool, str]]:
        """Run (source pod, target ip, port, proto) probes in parallel (UDP probes from
        ``sport`` when given)."""
        by_pod: dict[str, list[int]] = {}
        for i, (src, ip, port, proto) in enumerate(probes):
            assert src.proc is not None and src.proc.stdin is not None
            src.proc.stdin.write(json.dumps({"id": i, "ip": ip, "port": port, "proto": proto,
                                             "timeout": timeout, "sport": sport}) + "\n")
            by_pod.setdefault(src.key, []).append(i)
        for key in by_pod:
            stdin = self.pods[key].proc.stdin  # type: ignore[union-attr]
            assert stdin is not None
            stdin.flush()
        results: dict[int, tuple[bool, str]] = {}
        for key, ids in by_pod.items():
            out = self.pods[key].proc.stdout  # type: ignore[union-attr]
            assert out is not None
            for _ in ids:
                r = json.loads(out.readline())
                results[int(r["id"])] = (bool(r["ok"]), str(r["reply"]))
        return [results[i] for i in range(len(probes))]

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
