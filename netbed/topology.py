"""A minimal node + pods topology in network namespaces for the service and policy
tests and benchmarks (one "node" netns routing between pod netns over veths, the pods'
host-side veths in the node netns as the agent plumbs them), each pod running the
program of :mod:`netbed.pods`. With ``subnet6`` every pod is dual-stack, plumbed as
the agent does (a /128 without DAD, default route via fe80::1 with a permanent
neighbour). Everything created carries a random suffix and is removed by
:meth:`Topology.close`, even after failures."""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datapath.hooks import Endpoint
from datapath.maps import policy_denied
from netbed.pods import probe_expecting, probe_many, start_program
from netbed.shell import Namespaces, netns_path, sh


def policy_drops(programs: Any) -> int:
    """Packets the policy programs of ``programs`` (a loaded
    :class:`datapath.loader.FeaturePrograms`) dropped so far, over every endpoint."""
    return sum(int(value[0]) for _, value in programs.items(policy_denied.NAME))


def pinned_policy_drops(pin_dir: str) -> int:
    """The same, read from the policy drop map pinned under ``pin_dir`` by another
    process (an agent's features hook): 0 while it does not exist."""
    path = f"{pin_dir}/{policy_denied.NAME}"
    done = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", path],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return 0
    total = 0
    for entry in json.loads(done.stdout or "[]"):
        value = entry.get("formatted", entry).get("value")
        if isinstance(value, dict):
            total += int(value["packets"])
        else:
            total += int.from_bytes(bytes(int(x, 16) for x in value[:8]), "little")
    return total


GATEWAY = "169.254.1.1"
GATEWAY6 = "fe80::1"


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
    address6: ipaddress.IPv6Address | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return (self.address,) if self.address6 is None else (self.address, self.address6)

    def endpoint(self) -> Endpoint:
        return Endpoint(container_id=self.netns, ifname="eth0", host_ifname=self.host_ifname,
                        host_ifindex=self.host_ifindex, address=self.address,
                        addresses=self.addresses, namespace=self.namespace, pod=self.name,
                        labels=dict(self.labels), netns=netns_path(self.netns))


class Topology:
    """One node netns and pods attached to it."""

    def __init__(self, subnet: str = "10.77.0.0/24", subnet6: str = "") -> None:
        self.tag = secrets.token_hex(3)
        self.node = f"sipf-node-{self.tag}"
        self.pods: dict[str, Pod] = {}
        self._hosts = ipaddress.IPv4Network(subnet).hosts()
        next(self._hosts)
        self._hosts6 = ipaddress.IPv6Network(subnet6).hosts() if subnet6 else None
        if self._hosts6 is not None:
            next(self._hosts6)
        self.namespaces = Namespaces()
        self.namespaces.add(self.node)
        self.node_exec("ip", "link", "set", "lo", "up")
        self.node_exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
        if subnet6:
            self.node_exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")

    def node_exec(self, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.node, *args, check=check)

    def add_pod(self, namespace: str, name: str, labels: dict[str, str] | None = None,
                ports: tuple[int, ...] = (80, 81), answer: str = "") -> Pod:
        """A pod whose servers answer with ``answer`` (default: its name)."""
        idx = len(self.pods)
        netns = f"sipf-{self.tag}-{idx}"
        host_if = f"sf{self.tag}{idx}"
        addr = next(self._hosts)
        self.namespaces.add(netns)
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
        addr6 = next(self._hosts6) if self._hosts6 is not None else None
        if addr6 is not None:
            sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
            sh("ip", "-n", netns, "-6", "addr", "add", f"{addr6}/128", "dev", "eth0", "nodad")
            sh("ip", "-n", netns, "-6", "neigh", "add", GATEWAY6, "lladdr",
               host_mac["address"], "dev", "eth0", "nud", "permanent")
            sh("ip", "-n", netns, "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0")
            sh("ip", "-n", self.node, "-6", "neigh", "add", str(addr6), "lladdr",
               pod_mac["address"], "dev", host_if, "nud", "permanent")
            sh("ip", "-n", self.node, "-6", "route", "add", f"{addr6}/128", "dev", host_if)
        pod = Pod(namespace=namespace, name=name, address=addr, netns=netns,
                  host_ifname=host_if, host_ifindex=int(host_mac["ifindex"]),
                  labels=dict(labels or {}), address6=addr6)
        pod.proc = start_program(["ip", "netns", "exec", netns], answer or name, ports)
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
                        timeout: float = 0.5, sport: int = 0,
                        denied: Callable[[], int] | None = None) -> list[tuple[bool, str]]:
        """:func:`probe_expecting` from pods (``denied``: the policy drop count)."""
        return probe_expecting(self._procs(probes), want, timeout=timeout, sport=sport,
                               denied=denied)

    def close(self) -> None:
        for pod in self.pods.values():
            if pod.proc is not None:
                pod.proc.kill()
                pod.proc.wait()
        self.namespaces.close()
