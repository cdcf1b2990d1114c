"""A client process of the fault tests: allocates through the store as the components
do (``open_ipam`` with ``IpamSettings`` from the environment, as the overlay sets them)
and appends every acknowledged allocation to its log file before it counts it.

Usage: python -m tests.support.ha_client URL NAME LOG V4POOL V6POOL TASKS

Each of TASKS concurrent loops takes the next owner and allocates in turn: an
ephemeral IPv4 lease, an ephemeral dual-stack lease, a sticky IPv4 reservation, a
sticky dual-stack reservation. A refused call is retried for the same owner (as a
kubelet retries a CNI ADD, as the scheduler retries a claim): scripts are idempotent.
SIGTERM ends the loops after their current call. Stdout carries one line per outcome
(``A <sent> <acked>``, ``E <time> <error>``) for the test to wait on, and a last line
``DONE <json summary>``; the log file is the record of what was acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

KINDS = ("eph4", "eph46", "sts4", "sts46")


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged allocation: owner, its addresses, call start and reply time
    (``time.monotonic()``, one clock for every process of the machine)."""

    owner: str
    addresses: tuple[str, ...]
    kind: str
    sent: float
    acked: float

    def line(self) -> str:
        return json.dumps({"o": self.owner, "a": list(self.addresses), "k": self.kind,
                           "s": self.sent, "t": self.acked}) + "\n"

    @staticmethod
    def parse(line: str) -> Ack:
        d = json.loads(line)
        return Ack(d["o"], tuple(d["a"]), d["k"], d["s"], d["t"])


def read_acks(path: Path) -> list[Ack]:
    return [Ack.parse(line) for line in path.read_text().splitlines() if line.strip()]


async def main(url: str, name: str, log: TextIO, v4: str, v6: str, tasks: int) -> int:
    from ipam import IpamError, ReservationKey, ephemeral_owner, open_ipam
    from ipam.config import IpamSettings

    settings = IpamSettings()
    ipam = await open_ipam(url, actor=name, settings=settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counter = iter(range(1 << 62))
    summary: dict[str, Any] = {"acked": 0, "refused": 0, "errors": {}}

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    async def one(i: int, task: int) -> tuple[str, tuple[str, ...]]:
        kind = KINDS[i % len(KINDS)]
        node = f"{name}-n{task % 2}"
        pools = [v4, v6] if kind.endswith("46") else [v4]
        if kind.startswith("eph"):
            owner = ephemeral_owner(f"{name}-{i}")
            lease = await ipam.allocate(node=node, owner=owner, pools=pools)
            return str(owner), tuple(str(a.address) for a in lease.addresses)
        key = ReservationKey.of("ha", name, i)
        res = await ipam.claim(key, pools=pools, node=node)
        return str(key.owner), tuple(str(a.address) for a in res.addresses)

    async def loop(task: int) -> None:
        while not stop.is_set():
            i = next(counter)
            while True:
                sent = time.monotonic()
                try:
                    owner, addresses = await one(i, task)
                except IpamError as e:
                    summary["refused"] += 1
                    kind = type(e).__name__
                    summary["errors"][kind] = summary["errors"].get(kind, 0) + 1
                    say(f"E {time.monotonic()} {kind} {str(e)[:200]!r}")
                    if stop.is_set():
                        return
                    # pace the retries of a refused call (MasterNotFound is instant)
                    await asyncio.sleep(0.05)
                    continue
                acked = time.monotonic()
                log.write(Ack(owner, addresses, KINDS[i % len(KINDS)], sent, acked).line())
                summary["acked"] += 1
                say(f"A {sent} {acked}")
                break

    try:
        await asyncio.gather(*(loop(t) for t in range(tasks)))
    finally:
        await ipam.aclose()
    say("DONE " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    url, name, log_path, v4, v6, tasks = sys.argv[1:7]
    with open(log_path, "a", buffering=1) as log:  # one line each, written at once
        code = asyncio.run(main(url, name, log, v4, v6, int(tasks)))
    sys.exit(code)
