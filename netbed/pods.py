"""The program run inside every pod of a bed: TCP and UDP servers on the given ports
(both families: IPv6 sockets that take IPv4 too) that answer with the pod's name (so a
probe proves which pod it reached), and a prober reading ``{"id", "ip", "port",
"proto", "timeout", "sport"}`` lines on stdin and answering ``{"id", "ok", "reply"}``
lines, many probes in parallel."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence

PROGRAM = r'''
import json, socket, sys, threading
from concurrent.futures import ThreadPoolExecutor
name = sys.argv[1]
ports = [int(p) for p in sys.argv[2].split(",")]
ready = []
def dual(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s
def tcp_server(port):
    s = dual(socket.SOCK_STREAM)
    s.bind(("::", port)); s.listen(4096); ready.append(1)
    while True:
        try:
            c, _ = s.accept()
        except OSError:  # reset before accept (benchmark clients close with RST)
            continue
        try: c.sendall(name.encode())
        except OSError: pass
        c.close()
def udp_server(port):
    s = dual(socket.SOCK_DGRAM); s.bind(("::", port)); ready.append(1)
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
    ip, port, proto, timeout = req["ip"], req["port"], req.get("proto", "tcp"), req["timeout"]
    try:
        if proto == "tcp":
            if req.get("sport"):
                s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::" if ":" in ip else "0.0.0.0", req["sport"]))
                s.settimeout(timeout)
                s.connect((ip, port))
            else:
                s = socket.create_connection((ip, port), timeout=timeout)
            s.settimeout(timeout)
            data = s.recv(100); s.close()
        else:
            v6 = ":" in ip
            s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            if req.get("sport"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::" if v6 else "0.0.0.0", req["sport"]))
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

#: what a probe reports when its packets were silently dropped (a policy denial),
#: as opposed to "refused" (a reset or ICMP unreachable: something answered)
DROPPED = "TimeoutError"
#: what a probe expected to be denied reports when it timed out but the policy
#: programs dropped nothing for it: a slow connection, not a denial
NOT_DROPPED = "TimeoutError without a policy drop"


def program_command(name: str, ports: Sequence[int]) -> list[str]:
    """The pod program's command line (to run inside the pod's namespace)."""
    return [sys.executable, "-u", "-c", PROGRAM, name, ",".join(str(p) for p in ports)]


def start_program(prefix: list[str], name: str, ports: tuple[int, ...]
                  ) -> subprocess.Popen[str]:
    """Start the program of pod ``name`` under ``prefix`` (a netns exec)."""
    proc = subprocess.Popen([*prefix, *program_command(name, ports)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"pod program {name} did not start: {line!r}")
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


def probe_expecting(probes: list[tuple[subprocess.Popen[str], str, int, str]],
                    want: list[bool], *, timeout: float = 0.5, retries: int = 3,
                    sport: int = 0, denied: Callable[[], int] | None = None
                    ) -> list[tuple[bool, str]]:
    """Run probes in parallel, then re-run those expected to succeed that failed, each
    round with twice the timeout, at most ``retries`` times: on a loaded machine an
    allowed connection may be late, and a success is never spurious. A probe expected
    to fail runs once with the short timeout; callers check that it failed the way a
    denial fails (:data:`DROPPED`).

    ``denied``: the policy programs' count of dropped packets (summed over every node).
    A timeout then counts as a denial only if the policy dropped its packet: when the
    count rose by less than the number of expected denials that timed out, each of
    those runs again alone between two reads of the count, and one that times out with
    no drop reports :data:`NOT_DROPPED` (a slow connection, which callers reject)."""
    if len(want) != len(probes):
        raise ValueError("one expectation per probe")
    before = denied() if denied is not None else 0
    res = probe_many(probes, timeout=timeout, sport=sport)
    if denied is not None:
        timed_out = [i for i, (ok, reply) in enumerate(res)
                     if not want[i] and not ok and reply == DROPPED]
        if timed_out and denied() - before < len(timed_out):
            for i in timed_out:
                start = denied()
                (ok, reply), = probe_many([probes[i]], timeout=timeout, sport=sport)
                if not ok and reply == DROPPED and denied() == start:
                    reply = NOT_DROPPED
                res[i] = (ok, reply)
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
