"""Shared benchmark plumbing: results in docs/design.md §9 format, a table, percentiles."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Report:
    area: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def row(self, name: str, value: float, unit: str, target: float, better: str) -> None:
        assert better in ("higher", "lower")
        self.rows.append({"name": name, "value": round(float(value), 4), "unit": unit,
                          "target": target, "better": better})

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = {
            "area": self.area,
            "machine": {"nproc": os.cpu_count(), "kernel": platform.release(),
                        "python": platform.python_version()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": self.rows,
            "detail": self.detail,
        }
        path = RESULTS / f"{self.area}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        self.print_table()
        print(f"\nwritten {path}")
        return path

    def print_table(self) -> None:
        print(f"\n{self.area} benchmark")
        w = max(len(r["name"]) for r in self.rows) if self.rows else 10
        print(f"{'row'.ljust(w)}  {'value':>12}  {'unit':<5} {'target':>9}  better  ok")
        for r in self.rows:
            ok = r["value"] >= r["target"] if r["better"] == "higher" else (
                r["value"] <= r["target"])
            print(f"{r['name'].ljust(w)}  {r['value']:>12.4g}  {r['unit']:<5} "
                  f"{r['target']:>9.4g}  {r['better']:<6}  {'yes' if ok else 'NO'}")


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def median_of_medians(rounds: list[list[float]]) -> float:
    """The statistic every contender gets: each round's median, then their median."""
    return float(statistics.median(statistics.median(r) for r in rounds))


def tool_version(cmd: list[str]) -> str:
    """The first line a tool prints about its version (e.g. ``["nft", "--version"]``),
    recorded with the results so that a baseline says exactly what ran."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else f"no output (exit {done.returncode})"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, every thread (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu(ipam: Any) -> float:
    """The redis-server's CPU seconds so far (INFO ``used_cpu_user`` + ``used_cpu_sys``);
    ``ipam``: a RedisIpam (its client's server)."""
    info = await ipam.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
