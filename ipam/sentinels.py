"""Which master a Sentinel-managed store has, decided the way the Sentinels decide
(pure: the connection code in ``ipam/connection.py`` asks, this module judges).

Sentinels agree on a configuration through epochs: a failover is won in a new epoch,
and a configuration of a higher epoch replaces any of a lower one. A client that takes
the first answer it gets (as redis-py does) can be sent back to a demoted master by a
Sentinel that has not heard of the failover yet, or, while a failover is under way,
to the old master that has just woken up and still has a replica the failover has not
reconfigured yet: that replica confirms the writes (WAIT), and the failover then
discards them. Two rules close that window:

- the answer of the highest configuration epoch wins, and this client never goes back
  to an epoch lower than one it has used (:class:`EpochFence`);
- once any Sentinel has voted in a failover election of a newer epoch, the client
  uses no master until a Sentinel names one of that epoch, or until the failover
  timeout has passed (the failover failed and the old configuration stands).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Failover states in which the Sentinel running the failover has promoted the
#: replica: it then names the new master, and its configuration epoch is the new one.
PROMOTED_STATES = frozenset({"reconf_slaves", "update_config"})
#: Sentinel's own default, until a Sentinel tells us the configured one.
DEFAULT_FAILOVER_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class SentinelAnswer:
    """What one Sentinel says: the master's address (None: no usable master), the
    configuration epoch of that answer, and why it is unusable."""

    sentinel: str
    address: tuple[str, int] | None
    epoch: int
    failover_timeout_s: float | None = None
    why: str = ""


def judge(sentinel: str, state: Mapping[str, Any] | None,
          current: tuple[str, int] | None) -> SentinelAnswer:
    """One Sentinel's ``SENTINEL MASTER`` state and ``GET-MASTER-ADDR-BY-NAME`` reply
    (``current``: the master, or the promoted replica during the last failover
    steps) as an answer."""
    if state is None or current is None:
        return SentinelAnswer(sentinel, None, -1, why="does not know the service")
    flags = set(str(state.get("flags", "")).split(","))
    epoch = int(state.get("config-epoch", 0))
    timeout_ms = state.get("failover-timeout")
    timeout = int(timeout_ms) / 1000 if timeout_ms is not None else None
    if "failover_in_progress" in flags:
        step = str(state.get("failover-state", ""))
        if step in PROMOTED_STATES:
            return SentinelAnswer(sentinel, current, epoch, timeout)
        return SentinelAnswer(sentinel, None, epoch, timeout,
                              why=f"a failover is under way ({step or 'starting'})")
    if "master" not in flags:
        return SentinelAnswer(sentinel, None, epoch, timeout, why=f"flags {sorted(flags)}")
    if flags & {"s_down", "o_down"}:
        return SentinelAnswer(sentinel, None, epoch, timeout, why="the master is down")
    return SentinelAnswer(sentinel, current, epoch, timeout)


class NoMaster(Exception):
    """No Sentinel names a master this client may use (the message says why)."""


class EpochFence:
    """The configuration epochs this client has seen (see the module doc)."""

    def __init__(self) -> None:
        #: the highest epoch of a master this client has used
        self.used = -1
        #: a failover election of a newer epoch, and until when to wait for its result
        self.pending = -1
        self.pending_until = 0.0
        self.failover_timeout_s = DEFAULT_FAILOVER_TIMEOUT_S

    def floor(self, now: float) -> int:
        """The lowest epoch a master may be taken from now."""
        if self.pending > self.used and now < self.pending_until:
            return self.pending
        return self.used

    def vote(self, epoch: int, now: float) -> bool:
        """A Sentinel voted in a failover election of ``epoch``. True when that is news
        (the caller then drops every connection to the master it has)."""
        if epoch <= max(self.used, self.pending if now < self.pending_until else -1):
            return False
        self.pending = epoch
        self.pending_until = now + self.failover_timeout_s
        return True

    def choose(self, service: str, answers: list[SentinelAnswer],
               now: float) -> tuple[str, int]:
        """The master to use: the usable answer of the highest epoch, never below
        :meth:`floor`. Raises :class:`NoMaster` otherwise."""
        for a in answers:
            if a.failover_timeout_s is not None:
                self.failover_timeout_s = a.failover_timeout_s
        usable = [a for a in answers if a.address is not None]
        floor = self.floor(now)
        best = max(usable, key=lambda a: a.epoch, default=None)
        if best is None or best.epoch < floor:
            said = "; ".join(f"{a.sentinel}: " + (a.why or f"{a.address} at epoch {a.epoch}")
                             for a in answers)
            wait = (f"a failover of epoch {floor} is under way, waiting for a master of "
                    "that epoch; " if floor > self.used else "")
            raise NoMaster(f"no Sentinel names a master for {service!r} ({wait}{said})")
        assert best.address is not None
        self.used = max(self.used, best.epoch)
        return best.address
