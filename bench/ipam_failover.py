"""How long writes are refused around a failover of the Sentinel overlay's store
(rows of ``make bench-ipam``; issue 16).

Each round is one trial of tests/support/ha_trial.py (the fault test's own harness and
load: three redis-server and three Sentinels with the overlay's settings on loopback,
client processes allocating through ``redis+sentinel://`` with WAIT 1) with one
master fault: kill -9, a stall resumed after the failover, a stall resumed in the
middle of it. A round's figure is the time from the fault's start to the first
acknowledged write of a call sent after it (only the new master can acknowledge
one: the old master is dead or stopped, and clients are fenced off it).
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from bench.common import Report
from tests.support.ha_trial import FAULTS, run_trial

#: rounds per master fault
ROUNDS = 2
MASTER_FAULTS = [name for name, f in FAULTS.items() if f.target == "master"]


def rows(report: Report) -> None:
    """Run the rounds and add the failover rows (and every round) to ``report``."""
    rounds: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        for name in MASTER_FAULTS:
            out = asyncio.run(run_trial(FAULTS[name]))
            rounds.append({"round": i, **out.as_dict()})
            print(f"failover {name}: writes refused {out.unavailable_s:.2f} s, "
                  f"{out.acked} acknowledged, {len(out.lost)} lost, "
                  f"{len(out.duplicates)} duplicates", flush=True)
    refused = [r["unavailable_s"] for r in rounds]
    report.row("failover_write_unavailability_s", statistics.median(refused), "s", 10,
               "lower")
    report.row("failover_lost_acknowledged_allocations",
               sum(len(r["lost"]) + len(r["changed"]) for r in rounds), "count", 0, "lower")
    report.row("failover_duplicate_addresses",
               sum(len(r["duplicates"]) for r in rounds), "count", 0, "lower")
    report.detail["failover"] = {
        "rounds": rounds,
        "unavailable_s": {"median": statistics.median(refused), "max": max(refused),
                          "min": min(refused)},
        "notes": "one trial per round (tests/support/ha_trial.py): unavailable_s is from "
                 "the fault's start to the first acknowledged write sent after it; "
                 "lost/changed/duplicates are checked against every acknowledgement "
                 "the clients logged",
    }


if __name__ == "__main__":
    only = Report("ipam")
    rows(only)
    only.print_table()
