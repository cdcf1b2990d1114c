"""What ships is what is measured: the scheduler rows of make bench-scale run the
command, arguments and literal settings of the rendered Deployment."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.scale_sched import deployed_scheduler
from tests.unit.manifests.conftest import find, rendered


def test_the_bench_reads_what_kustomize_renders(tmp_path: Path) -> None:
    deploy = find(rendered("default"), "Deployment", "stickyip-scheduler")
    (tmp_path / "scheduler.yaml").write_text(yaml.safe_dump(deploy))
    ours = deployed_scheduler()
    assert deployed_scheduler(tmp_path / "scheduler.yaml") == ours
    args, _ = ours
    assert args[args.index("scheduler") + 1:] == ["--name", "stickyip-scheduler"]
