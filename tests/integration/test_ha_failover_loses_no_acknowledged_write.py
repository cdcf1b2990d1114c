"""Jepsen-style fault test of the Sentinel overlay's store (issue 16), on real processes
on loopback: three redis-server and three Sentinels configured by the overlay's own
script and command lines (tests/support/ha_store.py), and client processes allocating
ephemeral and sticky, IPv4 and dual-stack addresses through ``redis+sentinel://`` with
the overlay's STICKYIP_REDIS_REPLICAS, each logging every acknowledged allocation
(tests/support/ha_client.py). One fault per trial (tests/support/ha_trial.py):

- kill -9 of the master (then restarted, as the kubelet restarts a container);
- SIGSTOP of the master past ``down-after-milliseconds``, SIGCONT once the new master
  acknowledged a write: the old master wakes up believing it is the master;
- the same stall, SIGCONT the moment the Sentinels promoted a replica, while the other
  replica still follows the old master (the window that lost acknowledged writes);
- kill -9 of a replica under load (then restarted).

After the store healed: every acknowledged allocation is in the store with the
addresses acknowledged, no address has two owners (records and every block's owner
index), ``ipam check`` finds nothing, every server holds the same records, and writes
were refused no longer than the bound derived from the overlay's timings.
"""

from __future__ import annotations

import json

import pytest

from tests.support.ha_store import Overlay, Timings
from tests.support.ha_trial import FAULTS, LOAD, bounds, run_trial


@pytest.mark.parametrize("name", list(FAULTS))
async def test_no_acknowledged_allocation_is_lost_or_given_twice(name: str) -> None:
    fault = FAULTS[name]
    timings = Timings.of(Overlay.rendered())
    limit = bounds(timings)
    out = await run_trial(fault)
    detail = "\n".join([json.dumps(out.as_dict(), indent=1), *out.timeline])
    # the load was real: every client allocated before, through and after the fault
    assert out.acked >= LOAD.clients * (LOAD.before + LOAD.after), detail
    assert out.problems() == [], detail
    # callers only ever heard "store unavailable, retry (safe)", never a wrong answer
    assert set(out.errors) <= {"StoreUnavailable"}, detail
    assert out.unavailable_s is not None and out.all_resumed_s is not None, detail
    if fault.target == "master":
        # nobody wrote anywhere until the Sentinels had declared the master down ...
        assert out.unavailable_s >= timings.down_after_s, detail
        assert out.refused > 0, detail
        # ... and every client wrote again on the new master within the bound
        assert out.all_resumed_s <= limit.master_fault_s, detail
    else:
        assert out.longest_gap_s <= limit.replica_fault_s, detail
