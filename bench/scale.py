"""``make bench-scale``: the control plane at 5,000 nodes and 100,000 pods (issue 10),
written to bench/results/scale.json (docs/design.md §9) and printed as a table.

Each group of rows is one module with ``async def run(report: Report) -> None`` that
adds its rows (``report.row``) and its raw series under ``report.detail[GROUP]``;
list it in :data:`GROUPS`. Groups run one after the other in one process (each owns
its Redis servers and helper processes and stops them before returning), so every
figure comes from the same run. ``python -m bench.scale GROUP...`` runs only some
(the file then holds only their rows).

Rows and the group measuring them:

=============================================  =====================
``redis_cores_idle_5000_nodes``                ``bench.scale_follow``
``idle_cost_ratio_vs_polling_1000_nodes``      ``bench.scale_follow``
``change_fanout_p99_s_5000_nodes``             ``bench.scale_follow``
``redis_cores_10_changes_per_s_5000_nodes``    ``bench.scale_follow``
``scheduler_ready_s_100k_reservations``        ``bench.scale_sched``
``gc_stats_redis_cores_100k``                  ``bench.scale_sched``
=============================================  =====================
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
import traceback

from bench.common import Report

#: module name -> short name (the key of its detail); add your group here
GROUPS = {
    "bench.scale_follow": "follow",
    "bench.scale_sched": "sched",
}


async def main(argv: list[str]) -> int:
    chosen = [g for g in GROUPS if not argv or GROUPS[g] in argv or g in argv]
    unknown = [a for a in argv if a not in GROUPS and a not in GROUPS.values()]
    if unknown:
        print(f"unknown group(s) {unknown}; groups: {sorted(GROUPS.values())}",
              file=sys.stderr)
        return 2
    report = Report("scale")
    failed = []
    for module in chosen:
        name = GROUPS[module]
        t0 = time.monotonic()
        print(f"== {name} ({module})", flush=True)
        try:
            await importlib.import_module(module).run(report)
        except Exception as e:  # one broken group must not lose the others' rows
            traceback.print_exc()
            report.detail.setdefault(name, {})["error"] = repr(e)
            failed.append(name)
        report.detail.setdefault(name, {})["seconds"] = round(time.monotonic() - t0, 1)
    report.write()
    if failed:
        print(f"groups that failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
