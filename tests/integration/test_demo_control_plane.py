"""The demo's control-plane story (no datapath, short timers) keeps its promises: a
deleted pod comes back at the same address on the same node, a lost node's replica is
re-homed with the same address and a newer epoch, and scaling down then up within
``retain`` gives every ordinal its address back. Also: nothing is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from demo.config import DemoSettings
from demo.report import by_ordinal
from demo.story import NoProbes, Story
from demo.system import Progress, System


async def test_control_plane_story_keeps_addresses_nodes_and_epochs(tmp_path: Path) -> None:
    settings = DemoSettings(datapath="off", fast=True, work_dir=str(tmp_path),
                            step_timeout=30)
    lines: list[str] = []
    async with System(settings, progress=Progress(lines.append)) as system:
        pids = [c.proc.pid for c in system.sup.components]
        results = await Story(system, settings, NoProbes("test"), out=lines.append).run()
        workdir = system.dir
    assert [r.title.split(".")[0] for r in results] == ["1", "2", "3", "4", "5"]
    created, deleted, failover, down, up = (by_ordinal(r.rows) for r in results)

    # 1: three replicas, three nodes, three addresses, each pod at its reservation.
    assert len(created) == 3
    assert len({r.node for r in created.values()}) == 3
    assert len({r.address for r in created.values()}) == 3
    assert all(r.ready and r.address == r.reserved and r.epoch == 1 for r in created.values())

    # 2: web-1 was deleted and re-created: same address, same node, same epoch.
    assert (deleted[1].address, deleted[1].node, deleted[1].epoch) == \
        (created[1].address, created[1].node, created[1].epoch)

    # 3: the lost node's replica moved elsewhere, kept its address, got a newer epoch.
    lost = {r.node for r in created.values()} - {r.node for r in failover.values()}
    assert len(lost) == 1
    moved = [o for o, r in deleted.items() if r.node in lost]
    assert moved
    for o in moved:
        assert failover[o].node not in lost
        assert failover[o].address == deleted[o].address
        assert failover[o].epoch > deleted[o].epoch
    for o in set(deleted) - set(moved):
        assert failover[o] == deleted[o]

    # 4: scaled to 1: ordinals 1 and 2 have no pod; their addresses are retained.
    assert down[0].pod == "web-0" and down[0].address == failover[0].address
    for o in (1, 2):
        assert down[o].pod == "" and down[o].state == "retained"
        assert down[o].address == failover[o].address

    # 5: scaled back to 3 within retain: every ordinal at its old address and node.
    for o in (0, 1, 2):
        assert up[o].ready and up[o].pod == f"web-{o}"
        assert (up[o].address, up[o].node) == (failover[o].address, failover[o].node)

    assert all(r.passed for r in results), [c for r in results for c in r.checks if not c.ok]
    assert any("[ok] web-1 came back with the same address" in x for x in lines)
    # Clean-up: every component process ended, the temporary directory is gone.
    for pid in pids:
        assert not _alive(pid), f"process {pid} still runs"
    assert not workdir.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (reaped by Popen.wait already in practice).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


async def test_without_root_the_cli_plays_the_control_plane_and_says_why(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    from demo import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code = await cli.run(DemoSettings(fast=True, work_dir=str(tmp_path), step_timeout=30))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "datapath skipped: not running as root" in out
    assert "5 steps in" in out and ", 0 failed" in out
    assert "skipped: live probes (pod-to-pod, Service VIP, NetworkPolicy): control plane " \
        "only (not running as root" in out
    assert os.listdir(tmp_path) == [], "the demo's temporary directory is removed"

