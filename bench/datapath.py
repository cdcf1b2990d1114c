"""Service and policy datapath benchmark: new-connection latency (connect + close from
a client pod to the service matched last) through our eBPF programs, kube-proxy-style
iptables rules and a kube-proxy-nftables-style verdict map, at growing service
counts, all on one topology in one run; the time to apply one service change; the
eBPF policy cost at 10 vs 10,000 policy entries; and the same service lookup over
IPv6 (10 vs 10,000 IPv6 services, and IPv6 against IPv4 at 10,000).

Topology (network namespaces created here, removed at the end even on failure): a
"node" netns routing between a client pod netns and a backend pod netns, as the agent
plumbs pods. iptables and nftables rules live only in that node netns.

The machine is shared (2 cores, other jobs running): each figure is measured in
several rounds (eBPF rounds interleaved before, between and after the netfilter
runs) and the rows use the best round's median latency, the least disturbed one;
every round's median is kept in ``detail``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.common import Report, percentile
from datapath.features.services import ServiceManager
from datapath.features.services.translate import service_key
from datapath.loader import FeaturePrograms
from datapath.maps import fields, ipcache, policy_endpoints, policy_rules
from netbed.topology import Topology

SIZES = [int(s) for s in os.environ.get("STICKYIP_BENCH_SIZES", "10,1000,10000,50000").split(",")]
CONNS = int(os.environ.get("STICKYIP_BENCH_CONNS", "2000"))
ROUNDS = int(os.environ.get("STICKYIP_BENCH_ROUNDS", "4"))
WARMUP = 300
SETUP_BUDGET_S = float(os.environ.get("STICKYIP_BENCH_SETUP_BUDGET", "420"))
PORT = 80
VIP_BASE = int(ipaddress.IPv4Address("10.96.0.1"))
VIP6_BASE = int(ipaddress.IPv6Address("fd00:96::1"))

CLIENT = r'''
import json, socket, struct, sys, time
ip, port, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
linger = struct.pack("ii", 1, 0)
lat = []
t_start = None
for i in range(n + warm):
    if i == warm:
        t_start = time.perf_counter()
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    t0 = time.perf_counter_ns()
    s.connect((ip, port))
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


def measure(topo: Topology, client_ns: str, ip: str) -> dict[str, float]:
    out = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT, ip,
                          str(PORT), str(CONNS), str(WARMUP)],
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


def fill_policy(progs: FeaturePrograms, n: int, client: str, backend: str) -> None:
    """Client egress enforced; n policy entries and n ipcache entries, one of which
    allows the backend on the benchmark port."""
    for name in (policy_rules.NAME, ipcache.NAME, policy_endpoints.NAME):
        progs.clear(name)
    progs.update(ipcache.NAME, (0, 0), (ipcache.ID_WORLD,))
    progs.update(policy_endpoints.NAME, (fields.be32(client),),
                 (1, policy_endpoints.F_EGRESS_ENFORCED))
    base = int(ipaddress.IPv4Address("10.200.0.0"))
    for i in range(n - 1):
        ident = 1000 + i
        progs.update(ipcache.NAME, (32, fields.be32(ipaddress.IPv4Address(base + i))), (ident,))
        progs.update(policy_rules.NAME,
                     (96, 1, ident, policy_rules.DIR_EGRESS, 6, fields.be16(1000 + i % 5000)),
                     (i, 0))
    progs.update(ipcache.NAME, (32, fields.be32(backend)), (999,))
    progs.update(policy_rules.NAME, (96, 1, 999, policy_rules.DIR_EGRESS, 6, fields.be16(PORT)),
                 (n, 0))


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench-datapath needs root (network namespaces, eBPF, iptables)")
    report = Report("datapath")
    detail: dict[str, Any] = {"sizes": {}, "connections_per_run": CONNS, "notes": []}
    topo = Topology(subnet="10.81.0.0/24", subnet6="fd00:81::/120")
    progs = FeaturePrograms(pin_dir=f"/sys/fs/bpf/sipf-bench-{topo.tag}")
    node = topo.node
    table = f"sipbench_{topo.tag}"
    try:
        client = topo.add_pod("bench", "client", ports=(9,))
        backend_pod = topo.add_pod("bench", "backend", ports=(PORT,))
        backend = str(backend_pod.address)
        client_ns = client.netns
        progs.load()
        mgr = ServiceManager(progs, node_name="bench", node_addresses=[])
        ebpf_p50: dict[int, float] = {}
        ipt_p50: dict[int, float] = {}
        nft_p50: dict[int, float] = {}
        for n in SIZES:
            row: dict[str, Any] = {}
            last = vip(n - 1)
            t0 = time.perf_counter()
            grow_services(mgr, n, backend)
            row["ebpf_setup_s"] = time.perf_counter() - t0
            runs: dict[str, list[dict[str, float]]] = {"ebpf": [], "iptables": [], "nftables": []}
            failed: set[str] = set()

            def ebpf_round(out: list[dict[str, float]], target: str) -> None:
                # service programs attached, no netfilter rules in the node netns
                progs.attach(client.host_ifindex, policy=False, netns=f"/run/netns/{node}")
                try:
                    for _ in range(2):
                        out.append(measure(topo, client_ns, target))
                finally:
                    progs.detach(client.host_ifindex, policy=False, netns=f"/run/netns/{node}")

            # eBPF rounds before, between and after the netfilter runs, so that load
            # from other work on the machine spreads over all three datapaths
            ebpf_round(runs["ebpf"], last)
            try:
                t0 = time.perf_counter()
                run("ip", "netns", "exec", node, "iptables-restore", "-w",
                    stdin=iptables_rules(n, backend), timeout=SETUP_BUDGET_S)
                row["iptables_setup_s"] = time.perf_counter() - t0
                for _ in range(ROUNDS):
                    runs["iptables"].append(measure(topo, client_ns, last))
                if n == 10000:
                    times = []
                    for k in range(5):
                        rules = iptables_rules(n, backend, only=n // 2 + k)
                        t0 = time.perf_counter()
                        run("ip", "netns", "exec", node, "iptables-restore", "-w",
                            "--noflush", stdin=rules)
                        times.append((time.perf_counter() - t0) * 1000)
                    detail["iptables_update_ms_10k"] = statistics.median(times)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failed.add("iptables")
                row["iptables_error"] = str(e)[:300]
                detail["notes"].append(f"iptables at {n} services not measured: {str(e)[:200]}")
            finally:
                for flag in ("-F", "-X"):
                    subprocess.run(["ip", "netns", "exec", node, "iptables", "-w", "-t", "nat",
                                    flag], capture_output=True)
            ebpf_round(runs["ebpf"], last)
            try:
                t0 = time.perf_counter()
                run("ip", "netns", "exec", node, "nft", "-f", "-",
                    stdin=nft_ruleset(table, n, backend), timeout=SETUP_BUDGET_S)
                row["nft_setup_s"] = time.perf_counter() - t0
                for _ in range(ROUNDS):
                    runs["nftables"].append(measure(topo, client_ns, last))
                if n == 10000:
                    times = []
                    for k in range(5):
                        t0 = time.perf_counter()
                        run("ip", "netns", "exec", node, "nft", "-f", "-",
                            stdin=nft_update(table, n // 2 + k, backend))
                        times.append((time.perf_counter() - t0) * 1000)
                    detail["nftables_update_ms_10k"] = statistics.median(times)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failed.add("nftables")
                row["nft_error"] = str(e)[:300]
                detail["notes"].append(f"nftables at {n} services not measured: {str(e)[:200]}")
            finally:
                subprocess.run(["ip", "netns", "exec", node, "nft", "delete", "table", "ip",
                                table], capture_output=True)
            ebpf_round(runs["ebpf"], last)
            for mode, results in runs.items():
                if results and mode not in failed:
                    row[mode] = {k: statistics.median(r[k] for r in results)
                                 for k in results[0]}
                    row[mode]["rounds"] = len(results)
                    row[mode]["best_p50_us"] = min(r["p50_us"] for r in results)
                    row[mode]["round_p50s_us"] = [r["p50_us"] for r in results]
            ebpf_p50[n] = row["ebpf"]["best_p50_us"]
            if "iptables" in row:
                ipt_p50[n] = row["iptables"]["best_p50_us"]
            if "nftables" in row:
                nft_p50[n] = row["nftables"]["best_p50_us"]
            if n == 10000:
                times = []
                for k in range(5):
                    i = n // 2 + k
                    t0 = time.perf_counter()
                    mgr.set_slice(slice_obj(i, str(client.address)))
                    times.append((time.perf_counter() - t0) * 1000)
                    mgr.set_slice(slice_obj(i, backend))
                detail["ebpf_update_ms_10k"] = statistics.median(times)
            if n in ipt_p50:
                row["ratio_ours_over_iptables"] = ebpf_p50[n] / ipt_p50[n]
            if n in nft_p50:
                row["ratio_ours_over_nftables"] = ebpf_p50[n] / nft_p50[n]
            detail["sizes"][str(n)] = row
            print(f"{n:>6} services: ebpf p50 {ebpf_p50[n]:.1f} us, "
                  f"iptables {ipt_p50.get(n, float('nan')):.1f} us, "
                  f"nftables {nft_p50.get(n, float('nan')):.1f} us", flush=True)
        # our cost at the smallest vs the 10,000-service size, measured in alternating
        # rounds (shrinking and growing the maps through the manager in between), so
        # that both see the same machine load and the same netfilter state of the node
        # netns; the sweep above measured the sizes minutes apart
        small, big = min(SIZES), 10000 if 10000 in SIZES else max(SIZES)
        paired: dict[int, list[dict[str, float]]] = {small: [], big: []}
        progs.attach(client.host_ifindex, policy=False, netns=f"/run/netns/{node}")
        try:
            for _ in range(ROUNDS):
                for n in (small, big):
                    resize_services(mgr, n, backend)
                    paired[n].append(measure(topo, client_ns, vip(n - 1)))
        finally:
            progs.detach(client.host_ifindex, policy=False, netns=f"/run/netns/{node}")
        paired_p50 = {n: min(r["p50_us"] for r in rs) for n, rs in paired.items()}
        detail["ebpf_paired"] = {str(n): {"best_p50_us": paired_p50[n],
                                          "round_p50s_us": [r["p50_us"] for r in rs],
                                          "median_p99_us": statistics.median(
                                              r["p99_us"] for r in rs)}
                                 for n, rs in paired.items()}
        detail["ebpf_sweep_cost_ratio_10k_vs_10"] = ebpf_p50[big] / ebpf_p50[small]
        # spawn cost of a command, to read the iptables/nft update times against
        t0 = time.perf_counter()
        for _ in range(5):
            run("ip", "netns", "exec", node, "true")
        detail["process_spawn_ms"] = (time.perf_counter() - t0) * 1000 / 5
        # policy cost: client egress enforced, 10 vs 10,000 entries, direct to backend
        pol: dict[int, dict[str, float]] = {}
        progs.attach(client.host_ifindex, services=False, netns=f"/run/netns/{node}")
        pol_runs: dict[int, list[dict[str, float]]] = {10: [], 10000: []}
        for _ in range(ROUNDS):
            for n in (10, 10000):
                fill_policy(progs, n, str(client.address), backend)
                pol_runs[n].append(measure(topo, client_ns, backend))
        pol = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for n, rs in pol_runs.items()}
        for n, rs in pol_runs.items():
            pol[n]["best_p50_us"] = min(r["p50_us"] for r in rs)
        progs.detach(client.host_ifindex, services=False, netns=f"/run/netns/{node}")
        pol_none = measure(topo, client_ns, backend)
        detail["policy"] = {"10": pol[10], "10000": pol[10000], "no_policy_program": pol_none}

        # IPv6: the same lookup on the IPv6 maps, 10 vs 10,000 IPv6 services in
        # alternating rounds, and against IPv4 at 10,000 services (also alternating);
        # the direct connections (no service, no program) say how much of the IPv6/IPv4
        # difference is the kernel's own
        backend6 = str(backend_pod.address6)
        resize_services(mgr, big, backend)
        have6 = 0
        v6: dict[str, list[dict[str, float]]] = {"v6_small": [], "v6_big": [], "v4_big": []}
        progs.attach(client.host_ifindex, policy=False, netns=f"/run/netns/{node}")
        try:
            for _ in range(ROUNDS):
                have6 = resize_services6(mgr, have6, small, backend6)
                v6["v6_small"].append(measure(topo, client_ns, str(
                    ipaddress.IPv6Address(VIP6_BASE + small - 1))))
                have6 = resize_services6(mgr, have6, big, backend6)
                v6["v6_big"].append(measure(topo, client_ns, str(
                    ipaddress.IPv6Address(VIP6_BASE + big - 1))))
                v6["v4_big"].append(measure(topo, client_ns, vip(big - 1)))
        finally:
            progs.detach(client.host_ifindex, policy=False, netns=f"/run/netns/{node}")
        direct = {"v4": measure(topo, client_ns, backend),
                  "v6": measure(topo, client_ns, backend6)}
        v6_p50 = {k: min(r["p50_us"] for r in rs) for k, rs in v6.items()}
        detail["ipv6"] = {k: {"best_p50_us": v6_p50[k], "round_p50s_us": [r["p50_us"] for r in rs]}
                          for k, rs in v6.items()}
        detail["ipv6"]["direct_p50_us"] = {k: r["p50_us"] for k, r in direct.items()}
        detail["ipv6"]["v6_over_v4_10k"] = v6_p50["v6_big"] / v6_p50["v4_big"]
        detail["ipv6"]["direct_v6_over_v4"] = direct["v6"]["p50_us"] / direct["v4"]["p50_us"]
        print(f"IPv6: {small} services {v6_p50['v6_small']:.1f} us, {big} services "
              f"{v6_p50['v6_big']:.1f} us (IPv4 at {big}: {v6_p50['v4_big']:.1f} us; direct "
              f"v6 {direct['v6']['p50_us']:.1f} us, v4 {direct['v4']['p50_us']:.1f} us)",
              flush=True)

        report.row("ebpf_cost_ratio_10k_vs_10", paired_p50[big] / paired_p50[small], "x",
                   1.1, "lower")
        report.row("ebpf_v6_cost_ratio_10k_vs_10", v6_p50["v6_big"] / v6_p50["v6_small"], "x",
                   1.1, "lower")
        if big in ipt_p50:
            report.row("speedup_vs_iptables_10k", ipt_p50[big] / ebpf_p50[big], "x", 5, "higher")
        ratios = [ebpf_p50[n] / nft_p50[n] for n in nft_p50]
        if ratios:
            report.row("ratio_vs_nftables_worst", max(ratios), "x", 1.0, "lower")
        if "ebpf_update_ms_10k" in detail:
            report.row("service_update_ms_10k", detail["ebpf_update_ms_10k"], "ms", 5, "lower")
        report.row("policy_cost_ratio_10k_vs_10",
                   pol[10000]["best_p50_us"] / pol[10]["best_p50_us"], "x", 1.1, "lower")
        report.detail = detail
        report.write()
    finally:
        progs.close(unpin=True)
        topo.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
