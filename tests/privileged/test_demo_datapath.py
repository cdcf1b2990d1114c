"""The full demo as root: three node namespaces with their agents, pods wired by the
real stickyip-cni, and live probes after every story step. Each replica answers ping
and TCP at its reserved address from the client (the reply names the pod, so the
address reached the right pod), across nodes and after the failover re-homed a
replica; the Service VIP is answered only by live replicas; the intruder is refused by
the NetworkPolicy while the client gets through. Afterwards no namespace, pin or
process of the run is left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from demo.config import DemoSettings
from demo.datapath import Datapath
from demo.probes import LiveProbes
from demo.report import by_ordinal
from demo.story import Story
from demo.system import Progress, System

pytestmark = [pytest.mark.privileged,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, eBPF)")]


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


async def test_full_demo_probes_every_replica_through_the_story(tmp_path: Path) -> None:
    settings = DemoSettings(datapath="on", fast=True, work_dir=str(tmp_path),
                            step_timeout=60)
    datapath = Datapath(fast=True, service_policy=True)
    prober = LiveProbes(datapath)
    lines: list[str] = []
    async with System(settings, datapath=datapath, progress=Progress(lines.append)) as system:
        pids = [c.proc.pid for c in system.sup.components]
        results = await Story(system, settings, prober, out=lines.append).run()
        assert prober.features is not None, prober.features_skip
        ours = {ns for ns in _netns() if ns.startswith(datapath.prefix)}
        assert len(ours) >= 1 + 3, "fabric and node namespaces exist while running"
    assert len(results) == 5
    for step in results:
        live = [r for r in step.rows if r.pod]
        reach = [p for p in step.probes if p.text.startswith("client (")]
        assert len(reach) == len(live), step.title
        for p in reach:
            assert p.outcome == "ok", (step.title, p)
        # The reply names the pod at that address.
        for r in live:
            assert any(f"-> {r.pod} {r.address}:" in p.text and f"answered by {r.pod}"
                       in p.detail for p in reach), (step.title, r)
        names = {r.pod for r in live}
        svc = [p for p in step.probes if "Service VIP" in p.text]
        assert len(svc) == 1 and svc[0].outcome == "ok", (step.title, svc)
        answered = {part.split(" x")[0] for part in
                    svc[0].detail.split("answered by ", 1)[1].split(", ")}
        assert answered <= names, (step.title, svc[0].detail)
        pol = [p for p in step.probes if "NetworkPolicy" in p.text]
        assert len(pol) == 1 and pol[0].outcome == "denied", (step.title, pol)
        assert "(dropped), while client still connects" in pol[0].detail
        assert all(p.passed for p in step.probes), step.title
        assert all(c.ok for c in step.checks), step.title
    # After the failover the moved replica answers on its new node at its old address.
    before, after = by_ordinal(results[1].rows), by_ordinal(results[2].rows)
    moved = [o for o in after if after[o].node != before[o].node]
    assert moved and all(after[o].address == before[o].address for o in moved)
    # Clean-up.
    assert not {ns for ns in _netns() if ns.startswith(datapath.prefix)}
    assert not _exists(datapath.pin_base)
    for pid in pids:
        assert not _alive(pid), f"process {pid} still runs"


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
