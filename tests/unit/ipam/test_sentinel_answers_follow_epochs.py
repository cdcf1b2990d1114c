"""Finding the master by configuration epoch (ipam/sentinels.py): the answers below are
what real Sentinels said during the fault test's failovers (SENTINEL MASTER and
GET-MASTER-ADDR-BY-NAME, tests/integration/test_ha_failover_loses_no_acknowledged_write.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ipam.sentinels import EpochFence, NoMaster, judge

A, B = ("127.0.0.1", 6379), ("127.0.0.2", 6379)


def state(flags: str, epoch: int, **extra: Any) -> dict[str, Any]:
    return {"flags": flags, "config-epoch": epoch, "failover-timeout": 10000, **extra}


def test_a_sentinel_names_a_usable_master_only() -> None:
    assert judge("s", state("master", 0), A).address == A
    assert judge("s", state("master,disconnected", 0), A).address == A  # a reconnect
    assert judge("s", state("s_down,master", 0), A).address is None
    assert judge("s", state("s_down,o_down,master", 0), A).why == "the master is down"
    assert judge("s", None, None).address is None
    # the Sentinel running the failover: nobody until it has promoted the replica ...
    for step in ("wait_start", "select_slave", "send_slaveof_noone", "wait_promotion"):
        got = judge("s", state("s_down,o_down,master,failover_in_progress", 0,
                               **{"failover-state": step}), A)
        assert got.address is None and "failover" in got.why
    # ... then the promoted replica, at the failover's epoch
    got = judge("s", state("s_down,o_down,master,failover_in_progress", 1,
                           **{"failover-state": "reconf_slaves"}), B)
    assert (got.address, got.epoch, got.failover_timeout_s) == (B, 1, 10.0)


def test_the_highest_epoch_wins_and_the_client_never_goes_back() -> None:
    fence = EpochFence()
    # the old master woke up: a Sentinel that missed the failover says it is healthy
    stale = judge("s0", state("master", 0), A)
    new = judge("s1", state("master", 1), B)
    assert fence.choose("svc", [stale, new], now=0.0) == B
    with pytest.raises(NoMaster, match=r"s0: .*127\.0\.0\.1.* at epoch 0"):
        fence.choose("svc", [stale], now=1.0)
    assert fence.failover_timeout_s == 10.0


def test_from_a_vote_until_its_result_no_master_is_used() -> None:
    fence = EpochFence()
    fence.failover_timeout_s = 10.0
    assert fence.choose("svc", [judge("s0", state("master", 0), A)], now=0.0) == A
    assert fence.vote(1, now=5.0)
    assert not fence.vote(1, now=5.1)  # the other Sentinels' votes: no news
    # the only Sentinel this client reaches has not heard the result, and the old
    # master, resumed, answers its pings
    with pytest.raises(NoMaster, match="failover of epoch 1 is under way"):
        fence.choose("svc", [judge("s0", state("master", 0), A)], now=6.0)
    assert fence.choose("svc", [judge("s0", state("master", 1), B)], now=6.1) == B
    assert fence.floor(now=6.2) == 1
    # an old vote is no news once its epoch is in use
    assert not fence.vote(1, now=7.0)


def test_a_failover_that_fails_gives_the_old_master_back_after_its_timeout() -> None:
    fence = EpochFence()
    fence.failover_timeout_s = 10.0
    fence.choose("svc", [judge("s0", state("master", 0), A)], now=0.0)
    assert fence.vote(1, now=1.0)
    with pytest.raises(NoMaster):
        fence.choose("svc", [judge("s0", state("master", 0), A)], now=10.9)
    assert fence.choose("svc", [judge("s0", state("master", 0), A)], now=11.1) == A
    # a later election is news again
    assert fence.vote(2, now=12.0) and fence.floor(now=12.0) == 2
