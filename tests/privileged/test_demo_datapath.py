"""The full demo as root: three node namespaces with their agents, pods wired by the
real stickyip-cni, and live probes after every story step. Each dual-stack replica
answers ping and TCP at both its reserved addresses from the client (the reply names
the pod, so the address reached the right pod), across nodes and after the failover
re-homed a replica; the Service VIP of each family is answered only by live
replicas; the intruder is refused by the NetworkPolicy while the client gets through;
another host taking a replica's IPv6 address is found by the agent's re-check and
keeps the re-created pod from starting until it is gone. Afterwards no namespace, pin
or process of the run is left."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from demo.config import DemoSettings
from demo.datapath import Datapath
from demo.probes import LiveProbes
from demo.report import by_ordinal
from demo.story import Story
from demo.system import Progress, System


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
    assert len(results) == 6
    for step in results:
        live = [r for r in step.rows if r.pod]
        assert all(r.address6 for r in step.rows), step.title  # dual-stack throughout
        reach = [p for p in step.probes if p.text.startswith("client (")]
        assert len(reach) == 2 * len(live), step.title
        for p in reach:
            assert p.outcome == "ok", (step.title, p)
        # The reply names the pod at that address, over each family.
        for r in live:
            for where in (f"{r.address}:", f"[{r.address6}]:"):
                assert any(f"-> {r.pod} {where}" in p.text and f"answered by {r.pod}"
                           in p.detail for p in reach), (step.title, r, where)
        names = {r.pod for r in live}
        svc = [p for p in step.probes if "Service VIP" in p.text]
        assert len(svc) == 2 and all(p.outcome == "ok" for p in svc), (step.title, svc)
        assert any("[fd00:" in p.text for p in svc), svc  # the IPv6 cluster IP
        for p in svc:
            answered = {part.split(" x")[0] for part in
                        p.detail.split("answered by ", 1)[1].split(", ")}
            assert answered <= names, (step.title, p.detail)
        pol = [p for p in step.probes if "NetworkPolicy" in p.text]
        assert len(pol) == 1 and pol[0].outcome == "denied", (step.title, pol)
        assert "(dropped), while client still connects" in pol[0].detail
        assert all(p.passed for p in step.probes), step.title
        assert all(c.ok for c in step.checks), step.title
    # After the failover the moved replica answers on its new node at its old addresses.
    before, after = by_ordinal(results[1].rows), by_ordinal(results[2].rows)
    moved = [o for o in after if after[o].node != before[o].node]
    assert moved and all((after[o].address, after[o].address6)
                         == (before[o].address, before[o].address6) for o in moved)
    # The conflict: found while running (Event), refused at ADD, the pod back after.
    conflict = [c.text for c in results[5].checks if "conflict" in c.text]
    assert len(conflict) >= 2 and all(c.ok for c in results[5].checks), results[5].checks
    assert any(line.startswith("   [ok] conflict") for line in lines)
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
