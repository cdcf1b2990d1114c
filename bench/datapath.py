"""Service and policy datapath benchmark: new-connection latency (connect + close from
a client pod to a service) through our eBPF programs, kube-proxy-style iptables rules
and a kube-proxy-nftables-style verdict map, at growing service counts, in one run;
the time to apply one service change; the eBPF policy cost at 10 vs 10,000 policy
entries (realistic, mixed prefix lengths); and the same service lookup over IPv6.

Same treatment for every contender: each has its own topology (network namespaces
created here, removed at the end even on failure: a "node" netns routing between a
client pod netns and a backend pod netns, as the agent plumbs pods) holding the same
node baseline (NODE_BASELINE: kernel conntrack active, as on any Kubernetes node) and
its own service datapath only, never another contender's rules. Every contender gets
the same ``ROUNDS`` rounds, taking turns (the first of a round rotates), each round
``CONNS`` connections after ``WARMUP``, to the service matched last (the worst
position for a rule list) and to services at uniformly random positions (the same
random sequence for every contender). The statistic is the median over rounds of each
round's median latency; every round is in ``detail``, with the exact iptables
(backend and version), nft and kernel that ran.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import Report, median_of_medians, percentile, tool_version
from datapath.features.services import ServiceManager
from datapath.features.services.translate import service_key
from datapath.loader import FeaturePrograms
from datapath.maps import fields, ipcache, policy_endpoints, policy_rules
from netbed.topology import Topology

SIZES = [int(s) for s in os.environ.get("STICKYIP_BENCH_SIZES", "10,1000,10000,50000").split(",")]
CONNS = int(os.environ.get("STICKYIP_BENCH_CONNS", "2000"))
ROUNDS = int(os.environ.get("STICKYIP_BENCH_ROUNDS", "9"))
WARMUP = 300
SETUP_BUDGET_S = float(os.environ.get("STICKYIP_BENCH_SETUP_BUDGET", "420"))
#: nftables is loaded up to this many services: nft 1.0.6 takes about six minutes here to
#: load the 50,000-service kube-proxy-style ruleset (a chain per service and endpoint)
NFT_MAX = int(os.environ.get("STICKYIP_BENCH_NFT_MAX", "10000"))
PORT = 80
VIP_BASE = int(ipaddress.IPv4Address("10.96.0.1"))
VIP6_BASE = int(ipaddress.IPv6Address("fd00:96::1"))
CONTENDERS = ("ebpf", "iptables", "nftables")
POSITIONS = ("last", "random")

CLIENT = r'''
import ipaddress, json, random, socket, struct, sys, time
target, port, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if target.startswith("random:"):  # random:FIRST:COUNT:SEED -> uniformly among COUNT
    _, first, count, seed = target.split(":")
    rng = random.Random(int(seed))
    base = int(ipaddress.ip_address(first))
    ips = [str(ipaddress.ip_address(base + rng.randrange(int(count))))
           for _ in range(n + warm)]
else:
    ips = [target] * (n + warm)
family = socket.AF_INET6 if ":" in ips[0] else socket.AF_INET
linger = struct.pack("ii", 1, 0)
lat = []
t_start = None
for i in range(n + warm):
    if i == warm:
        t_start = time.perf_counter()
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    t0 = time.perf_counter_ns()
    s.connect((ips[i], port))
    s.close()
    t1 = time.perf_counter_ns()
    if i >= warm:
        lat.append((t1 - t0) / 1000.0)
elapsed = time.perf_counter() - t_start
print(json.dumps({"lat_us": lat, "elapsed": elapsed}))
'''


def vip(i: int) -> str:
    return str(ipaddress.IPv4Address(VIP_BASE + i))


def run(*args: str, stdin: str | None = None, timeout: float | None = None) -> None:
    r = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{args[0:4]}: {r.stderr.strip()[:500]}")


def measure(client_ns: str, target: str) -> dict[str, float]:
    """One round: CONNS timed connections (after WARMUP) from the client pod to
    ``target`` (an address, or ``random:FIRST:COUNT:SEED``)."""
    out = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT,
                          target, str(PORT), str(CONNS), str(WARMUP)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr.strip()[:500]}")
    data = json.loads(out.stdout)
    lat = data["lat_us"]
    return {"p50_us": percentile(lat, 50), "p99_us": percentile(lat, 99),
            "mean_us": statistics.fmean(lat), "conns_per_s": len(lat) / data["elapsed"],
            "over_100ms": float(sum(1 for v in lat if v > 100_000))}


# ---------------------------------------------------------------- iptables


def iptables_rules(n: int, backend: str, *, only: int | None = None) -> str:
    """kube-proxy's iptables layout: KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT.
    With ``only``, the partial restore kube-proxy writes when one service changed: the
    whole KUBE-SERVICES chain plus that service's chains."""
    lines = ["*nat", ":KUBE-SERVICES - [0:0]"]
    chains = range(n) if only is None else [only]
    for i in chains:
        lines += [f":KUBE-SVC-{i:06d} - [0:0]", f":KUBE-SEP-{i:06d} - [0:0]"]
    if only is None:
        lines.append("-A PREROUTING -m comment --comment \"kubernetes service portals\" "
                     "-j KUBE-SERVICES")
    for i in range(n):
        lines.append(f"-A KUBE-SERVICES -d {vip(i)}/32 -p tcp -m comment --comment "
                     f"\"bench/svc-{i}:http cluster IP\" -m tcp --dport {PORT} "
                     f"-j KUBE-SVC-{i:06d}")
    for i in chains:
        lines += [f"-A KUBE-SVC-{i:06d} -m comment --comment \"bench/svc-{i}:http -> "
                  f"{backend}:{PORT}\" -j KUBE-SEP-{i:06d}",
                  f"-A KUBE-SEP-{i:06d} -p tcp -m comment --comment \"bench/svc-{i}:http\" "
                  f"-m tcp -j DNAT --to-destination {backend}:{PORT}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- nftables


def nft_ruleset(table: str, n: int, backend: str) -> str:
    """kube-proxy's nftables layout: one verdict map keyed by address . proto . port,
    a chain per service choosing an endpoint chain, which DNATs."""
    out = [f"table ip {table} {{"]
    for i in range(n):
        out += [f"  chain endpoint-{i} {{", f"    meta l4proto tcp dnat to {backend}:{PORT}",
                "  }", f"  chain service-{i} {{",
                f"    numgen random mod 1 vmap {{ 0 : goto endpoint-{i} }}", "  }"]
    out += ["  map service-ips {", "    type ipv4_addr . inet_proto . inet_service : verdict"]
    if n:
        out.append("    elements = { " + ", ".join(
            f"{vip(i)} . tcp . {PORT} : goto service-{i}" for i in range(n)) + " }")
    out += ["  }",
            "  chain services {", "    ip daddr . meta l4proto . th dport vmap @service-ips",
            "  }",
            "  chain nat-prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            "    jump services", "  }", "}"]
    return "\n".join(out) + "\n"


def nft_update(table: str, i: int, backend: str) -> str:
    return (f"flush chain ip {table} endpoint-{i}\n"
            f"add rule ip {table} endpoint-{i} meta l4proto tcp dnat to {backend}:{PORT}\n")


# ---------------------------------------------------------------- eBPF


def service_obj(i: int) -> Any:
    return {"metadata": {"name": f"svc-{i}", "namespace": "bench"},
            "spec": {"clusterIP": vip(i), "clusterIPs": [vip(i)], "type": "ClusterIP",
                     "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}]}}


def slice_obj(i: int, backend: str) -> Any:
    return {"metadata": {"name": f"svc-{i}-a", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [backend], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}]}


def service6_obj(i: int) -> Any:
    vip6 = str(ipaddress.IPv6Address(VIP6_BASE + i))
    return {"metadata": {"name": f"svc6-{i}", "namespace": "bench"},
            "spec": {"clusterIP": vip6, "clusterIPs": [vip6], "ipFamilies": ["IPv6"],
                     "ipFamilyPolicy": "SingleStack", "type": "ClusterIP",
                     "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}]}}


def slice6_obj(i: int, backend6: str) -> Any:
    out = slice_obj(i, backend6)
    out["metadata"] = {"name": f"svc6-{i}-a", "namespace": "bench",
                       "labels": {"kubernetes.io/service-name": f"svc6-{i}"}}
    out["addressType"] = "IPv6"
    return out


def resize_services6(mgr: ServiceManager, have: int, n: int, backend6: str) -> int:
    """Exactly IPv6 services 0..n-1 in the maps (``have`` there now); returns n."""
    for i in range(n, have):
        mgr.delete_slice(slice6_obj(i, backend6))
        mgr.delete_service(service_key(service6_obj(i)))
    for i in range(have, n):
        mgr.set_service(service6_obj(i))
        mgr.set_slice(slice6_obj(i, backend6))
    return n


def grow_services(mgr: ServiceManager, upto: int, backend: str) -> None:
    for i in range(len(mgr.services), upto):
        mgr.set_service(service_obj(i))
        mgr.set_slice(slice_obj(i, backend))


def resize_services(mgr: ServiceManager, n: int, backend: str) -> None:
    """Exactly services 0..n-1 in the maps."""
    for i in range(n, len(mgr.services)):
        mgr.delete_slice(slice_obj(i, backend))
        mgr.delete_service(service_key(service_obj(i)))
    grow_services(mgr, n, backend)


#: Prefix lengths of a realistic ipcache (share of entries): pod addresses (/32), node
#: pod blocks (/26), and the CIDRs of NetworkPolicy ipBlocks (/8 to /28).
PREFIX_MIX = ((32, 0.70), (26, 0.15), (24, 0.06), (28, 0.03), (20, 0.02), (16, 0.02),
              (12, 0.01), (8, 0.01))


def policy_prefixes(n: int, rng: random.Random) -> list[tuple[int, int]]:
    """``n`` distinct (prefix length, network address) ipcache entries drawn from
    PREFIX_MIX over 10.0.0.0/8 and 172.16.0.0/12 (so CIDR entries cover pod /32s,
    as ipBlocks do), deterministic for a given ``rng``."""
    lengths = [p for p, _ in PREFIX_MIX]
    weights = [w for _, w in PREFIX_MIX]
    spaces = [ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("172.16.0.0/12")]
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    while len(out) < n:
        plen = rng.choices(lengths, weights)[0]
        space = spaces[rng.randrange(2)]
        plen = max(plen, space.prefixlen)
        host_bits = 32 - plen
        addr = int(space.network_address) + (rng.randrange(space.num_addresses) >> host_bits
                                             << host_bits)
        if (plen, addr) not in seen:
            seen.add((plen, addr))
            out.append((plen, addr))
    return out


def fill_policy(progs: FeaturePrograms, n: int, client: str, backend: str) -> dict[str, int]:
    """Client egress enforced; n policy entries and n ipcache entries of mixed prefix
    lengths (PREFIX_MIX, the same sequence for every size), one of which allows the
    backend on the benchmark port. Returns the count per prefix length."""
    for name in (policy_rules.NAME, ipcache.NAME, policy_endpoints.NAME):
        progs.clear(name)
    progs.update(ipcache.NAME, (0, 0), (ipcache.ID_WORLD,))
    progs.update(policy_endpoints.NAME, (fields.be32(client),),
                 (1, policy_endpoints.F_EGRESS_ENFORCED))
    counts: dict[str, int] = {}
    for i, (plen, addr) in enumerate(policy_prefixes(n - 1, random.Random(7))):
        ident = 1000 + i
        progs.update(ipcache.NAME, (plen, fields.be32(ipaddress.IPv4Address(addr))), (ident,))
        progs.update(policy_rules.NAME,
                     (96, 1, ident, policy_rules.DIR_EGRESS, 6, fields.be16(1000 + i % 5000)),
                     (i, 0))
        counts[f"/{plen}"] = counts.get(f"/{plen}", 0) + 1
    progs.update(ipcache.NAME, (32, fields.be32(backend)), (999,))
    progs.update(policy_rules.NAME, (96, 1, 999, policy_rules.DIR_EGRESS, 6, fields.be16(PORT)),
                 (n, 0))
    counts["/32"] = counts.get("/32", 0) + 1
    return counts


def summarise(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """A contender's rounds: the statistic (median of the rounds' medians) and every
    round."""
    return {"median_of_medians_us": median_of_medians([[r["p50_us"]] for r in rounds]),
            "rounds": len(rounds), "round_p50s_us": [r["p50_us"] for r in rounds],
            "median_p99_us": statistics.median(r["p99_us"] for r in rounds),
            "round_detail": rounds}


def baselines() -> dict[str, str]:
    """Exactly what ran: iptables (its version names the backend, nf_tables or legacy),
    nft, the kernel."""
    ipt = tool_version(["iptables", "--version"])
    return {"iptables": ipt,
            "iptables_backend": ("nf_tables" if "nf_tables" in ipt else
                                 "legacy" if "legacy" in ipt else "unknown"),
            "iptables_restore": tool_version(["iptables-restore", "--version"]),
            "nft": tool_version(["nft", "--version"]),
            "kernel": platform.release()}


#: What a Kubernetes node's network namespace holds before any service datapath, in
#: every contender's node netns alike: kernel connection tracking on the forward path
#: (kubelet's and the container runtime's netfilter rules make it active on every node;
#: here one rule that needs it, the conntrack-INVALID drop kube-proxy and kubelet set).
NODE_BASELINE = """table inet {table} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state invalid drop
  }}
}}
"""


class Bed:
    """One contender's topology: a node netns, a client pod and a backend pod."""

    def __init__(self, mode: str, index: int) -> None:
        self.mode = mode
        self.topo = Topology(subnet=f"10.8{index}.0.0/24",
                             subnet6=f"fd00:8{index}::/120" if mode == "ebpf" else "")
        try:
            self.client = self.topo.add_pod("bench", "client", ports=(9,))
            self.backend_pod = self.topo.add_pod("bench", "backend", ports=(PORT,))
            self.backend = str(self.backend_pod.address)
            self.node = self.topo.node
            self.netns = f"/run/netns/{self.node}"
            self.table = f"sipbench_{self.topo.tag}"
            self.base_table = f"sipbench_base_{self.topo.tag}"
            self.exec("nft", "-f", "-", stdin=NODE_BASELINE.format(table=self.base_table))
        except BaseException:
            self.topo.close()  # its namespaces hold the tables: they go with them
            raise

    def measure(self, target: str) -> dict[str, float]:
        return measure(self.client.netns, target)

    def exec(self, *args: str, stdin: str | None = None, timeout: float | None = None) -> None:
        run("ip", "netns", "exec", self.node, *args, stdin=stdin, timeout=timeout)

    def load(self, n: int) -> None:
        """This contender's n services (the eBPF maps are filled by the caller)."""
        if self.mode == "iptables":
            self.exec("iptables-restore", "-w", stdin=iptables_rules(n, self.backend),
                      timeout=SETUP_BUDGET_S)
        elif self.mode == "nftables":
            self.exec("nft", "-f", "-", stdin=nft_ruleset(self.table, n, self.backend),
                      timeout=SETUP_BUDGET_S)

    def unload(self) -> None:
        if self.mode == "iptables":
            for flag in ("-F", "-X"):
                subprocess.run(["ip", "netns", "exec", self.node, "iptables", "-w", "-t", "nat",
                                flag], capture_output=True)
        elif self.mode == "nftables":
            subprocess.run(["ip", "netns", "exec", self.node, "nft", "delete", "table", "ip",
                            self.table], capture_output=True)

    def update_ms(self, n: int, mgr: ServiceManager, other: str) -> list[float]:
        """The time to change one service's endpoints, five times (kube-proxy's partial
        iptables-restore, an nft chain flush and add, our map write)."""
        times = []
        for k in range(5):
            i = n // 2 + k
            t0 = time.perf_counter()
            if self.mode == "iptables":
                self.exec("iptables-restore", "-w", "--noflush",
                          stdin=iptables_rules(n, self.backend, only=i))
            elif self.mode == "nftables":
                self.exec("nft", "-f", "-", stdin=nft_update(self.table, i, self.backend))
            else:
                mgr.set_slice(slice_obj(i, other))
            times.append((time.perf_counter() - t0) * 1000)
            if self.mode == "ebpf":
                mgr.set_slice(slice_obj(i, self.backend))
        return times

    def close(self) -> None:
        self.unload()
        subprocess.run(["ip", "netns", "exec", self.node, "nft", "delete", "table", "inet",
                        self.base_table], capture_output=True)
        self.topo.close()


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench-datapath needs root (network namespaces, eBPF, iptables)")
    report = Report("datapath")
    detail: dict[str, Any] = {
        "sizes": {}, "connections_per_round": CONNS, "warmup_connections": WARMUP,
        "rounds": ROUNDS, "statistic": "median over rounds of each round's median latency",
        "baselines": baselines(), "notes": [],
        "treatment": "each contender in its own node netns holding the same node baseline "
                     "(kernel conntrack active on the forward path: one 'ct state invalid "
                     "drop' rule, as on any Kubernetes node) and its own service datapath "
                     "only (eBPF: our programs and maps; iptables, nftables: their NAT "
                     "rules); the same rounds, taking turns, first of each round rotating; "
                     "the same targets (the last service, and uniformly random services "
                     "from the same seeds)",
        "node_baseline": NODE_BASELINE.format(table="sipbench_base_TAG")}
    beds: dict[str, Bed] = {}
    progs: FeaturePrograms | None = None
    try:
        for i, mode in enumerate(CONTENDERS, start=1):
            beds[mode] = Bed(mode, i)
        eb = beds["ebpf"]
        progs = FeaturePrograms(pin_dir=f"/sys/fs/bpf/sipf-bench-{eb.topo.tag}")
        progs.load()
        mgr = ServiceManager(progs, node_name="bench", node_addresses=[])
        # the service programs stay attached to the eBPF bed's client for the sweep
        progs.attach(eb.client.host_ifindex, policy=False, netns=eb.netns)
        stat: dict[tuple[str, str, int], float] = {}
        for n in SIZES:
            row: dict[str, Any] = {"setup_s": {}}
            loaded: list[str] = []
            for mode in CONTENDERS:
                if mode == "nftables" and n > NFT_MAX:
                    detail["notes"].append(f"nftables at {n} services not measured (above "
                                           f"STICKYIP_BENCH_NFT_MAX={NFT_MAX})")
                    continue
                t0 = time.perf_counter()
                try:
                    if mode == "ebpf":
                        grow_services(mgr, n, eb.backend)
                    else:
                        beds[mode].load(n)
                    loaded.append(mode)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    row[f"{mode}_error"] = str(e)[:300]
                    detail["notes"].append(f"{mode} at {n} services not measured (setup "
                                           f"failed or exceeded {SETUP_BUDGET_S:.0f} s): "
                                           f"{str(e)[:200]}")
                    beds[mode].unload()
                row["setup_s"][mode] = round(time.perf_counter() - t0, 3)
            runs: dict[str, dict[str, list[dict[str, float]]]] = {
                m: {p: [] for p in POSITIONS} for m in loaded}
            for r in range(ROUNDS):
                order = loaded[r % len(loaded):] + loaded[:r % len(loaded)]
                for mode in order:
                    runs[mode]["last"].append(beds[mode].measure(vip(n - 1)))
                    runs[mode]["random"].append(beds[mode].measure(
                        f"random:{vip(0)}:{n}:{1000 + r}"))
            if n == 10000:
                row["update_ms"] = {m: beds[m].update_ms(n, mgr, str(eb.client.address))
                                    for m in loaded}
            for mode in loaded:
                row[mode] = {p: summarise(runs[mode][p]) for p in POSITIONS}
                for p in POSITIONS:
                    stat[(mode, p, n)] = row[mode][p]["median_of_medians_us"]
            for mode in loaded:
                if mode != "ebpf":
                    beds[mode].unload()
            detail["sizes"][str(n)] = row
            print(f"{n:>6} services (median of {ROUNDS} round medians, last / random): "
                  + ", ".join(f"{m} {stat[(m, 'last', n)]:.1f} / {stat[(m, 'random', n)]:.1f} us"
                              for m in loaded), flush=True)
        progs.detach(eb.client.host_ifindex, policy=False, netns=eb.netns)

        big = 10000 if 10000 in SIZES else max(SIZES)
        small = min(SIZES)
        # the 10,000-service speed-up, per round too (its spread says how stable it is)
        if ("iptables", "last", big) in stat:
            per_round = {}
            for p in POSITIONS:
                ipt = detail["sizes"][str(big)]["iptables"][p]["round_p50s_us"]
                ours = detail["sizes"][str(big)]["ebpf"][p]["round_p50s_us"]
                ratios = [a / b for a, b in zip(ipt, ours, strict=True)]
                per_round[p] = {"per_round": ratios, "min": min(ratios), "max": max(ratios),
                                "spread_max_over_min": max(ratios) / min(ratios)}
            detail["speedup_vs_iptables_10k_rounds"] = per_round

        # our cost at the smallest vs the 10,000-service size, in alternating rounds
        # (maps shrunk and grown through the manager in between): the same load for both
        paired: dict[int, list[dict[str, float]]] = {small: [], big: []}
        progs.attach(eb.client.host_ifindex, policy=False, netns=eb.netns)
        try:
            for _ in range(ROUNDS):
                for n in (small, big):
                    resize_services(mgr, n, eb.backend)
                    paired[n].append(eb.measure(vip(n - 1)))
        finally:
            progs.detach(eb.client.host_ifindex, policy=False, netns=eb.netns)
        detail["ebpf_paired"] = {str(n): summarise(rs) for n, rs in paired.items()}
        paired_mm = {n: detail["ebpf_paired"][str(n)]["median_of_medians_us"] for n in paired}

        # spawn cost of a command, to read the iptables/nft update times against
        t0 = time.perf_counter()
        for _ in range(5):
            eb.exec("true")
        detail["process_spawn_ms"] = (time.perf_counter() - t0) * 1000 / 5

        # policy cost: client egress enforced, 10 vs 10,000 entries of mixed prefix
        # lengths, direct to the backend, alternating rounds
        pol_runs: dict[int, list[dict[str, float]]] = {10: [], 10000: []}
        mix: dict[int, dict[str, int]] = {}
        progs.attach(eb.client.host_ifindex, services=False, netns=eb.netns)
        try:
            for _ in range(ROUNDS):
                for n in (10, 10000):
                    mix[n] = fill_policy(progs, n, str(eb.client.address), eb.backend)
                    pol_runs[n].append(eb.measure(eb.backend))
        finally:
            progs.detach(eb.client.host_ifindex, services=False, netns=eb.netns)
        no_program = [eb.measure(eb.backend) for _ in range(ROUNDS)]
        detail["policy"] = {"10": summarise(pol_runs[10]), "10000": summarise(pol_runs[10000]),
                            "no_policy_program": summarise(no_program),
                            "ipcache_prefix_lengths": {str(k): v for k, v in mix.items()},
                            "prefix_mix": {f"/{p}": w for p, w in PREFIX_MIX}}
        pol_mm = {n: detail["policy"][str(n)]["median_of_medians_us"] for n in (10, 10000)}

        # IPv6: the same lookup on the IPv6 maps, 10 vs 10,000 IPv6 services in
        # alternating rounds, and against IPv4 at 10,000 services (also alternating);
        # the direct connections (no service, no program) say how much of the IPv6/IPv4
        # difference is the kernel's own
        backend6 = str(eb.backend_pod.address6)
        resize_services(mgr, big, eb.backend)
        have6 = 0
        v6: dict[str, list[dict[str, float]]] = {"v6_small": [], "v6_big": [], "v4_big": []}
        direct: dict[str, list[dict[str, float]]] = {"v4": [], "v6": []}
        for _ in range(ROUNDS):
            progs.attach(eb.client.host_ifindex, policy=False, netns=eb.netns)
            try:
                have6 = resize_services6(mgr, have6, small, backend6)
                v6["v6_small"].append(eb.measure(str(
                    ipaddress.IPv6Address(VIP6_BASE + small - 1))))
                have6 = resize_services6(mgr, have6, big, backend6)
                v6["v6_big"].append(eb.measure(str(ipaddress.IPv6Address(VIP6_BASE + big - 1))))
                v6["v4_big"].append(eb.measure(vip(big - 1)))
            finally:
                progs.detach(eb.client.host_ifindex, policy=False, netns=eb.netns)
            direct["v4"].append(eb.measure(eb.backend))
            direct["v6"].append(eb.measure(backend6))
        v6_mm = {k: median_of_medians([[r["p50_us"]] for r in rs]) for k, rs in v6.items()}
        direct_mm = {k: median_of_medians([[r["p50_us"]] for r in rs])
                     for k, rs in direct.items()}
        detail["ipv6"] = {k: summarise(rs) for k, rs in v6.items()}
        detail["ipv6"]["direct"] = {k: summarise(rs) for k, rs in direct.items()}
        detail["ipv6"]["v6_over_v4_10k"] = v6_mm["v6_big"] / v6_mm["v4_big"]
        detail["ipv6"]["direct_v6_over_v4"] = direct_mm["v6"] / direct_mm["v4"]
        print(f"IPv6: {small} services {v6_mm['v6_small']:.1f} us, {big} services "
              f"{v6_mm['v6_big']:.1f} us (IPv4 at {big}: {v6_mm['v4_big']:.1f} us; direct "
              f"v6 {direct_mm['v6']:.1f} us, v4 {direct_mm['v4']:.1f} us)", flush=True)

        report.row("ebpf_cost_ratio_10k_vs_10", paired_mm[big] / paired_mm[small], "x",
                   1.1, "lower")
        report.row("ebpf_v6_cost_ratio_10k_vs_10", v6_mm["v6_big"] / v6_mm["v6_small"], "x",
                   1.1, "lower")
        if ("iptables", "last", big) in stat:
            report.row("speedup_vs_iptables_10k", stat[("iptables", "last", big)]
                       / stat[("ebpf", "last", big)], "x", 5, "higher")
            report.row("speedup_vs_iptables_10k_avg_position", stat[("iptables", "random", big)]
                       / stat[("ebpf", "random", big)], "x", 3, "higher")
        nft_ratios = {f"{n}_{p}": stat[("ebpf", p, n)] / stat[("nftables", p, n)]
                      for (m, p, n) in stat if m == "nftables"}
        if nft_ratios:
            detail["ratio_vs_nftables"] = nft_ratios
            report.row("ratio_vs_nftables_worst", max(nft_ratios.values()), "x", 1.0, "lower")
        if "update_ms" in detail["sizes"].get(str(big), {}):
            upd = detail["sizes"][str(big)]["update_ms"]
            detail["update_ms_10k_median"] = {m: statistics.median(v) for m, v in upd.items()}
            report.row("service_update_ms_10k", statistics.median(upd["ebpf"]), "ms", 5, "lower")
        report.row("policy_cost_ratio_10k_vs_10", pol_mm[10000] / pol_mm[10], "x", 1.1, "lower")
        report.detail = detail
        report.write()
    finally:
        if progs is not None:
            progs.close(unpin=True)
        for bed in beds.values():
            bed.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
