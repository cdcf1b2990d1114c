"""One Jepsen-style trial on the Sentinel overlay's store (tests/support/ha_store.py):
client processes allocate through a ``redis+sentinel://`` URL with the overlay's
settings and log every acknowledgement; one fault is injected; the store heals; then
the history is checked against what the store holds.

Used by tests/integration/test_ha_failover_loses_no_acknowledged_write.py and
bench/ipam_failover.py. Every size and bound is set here, in :data:`LOAD` and
:func:`bounds`, from the overlay's own timings.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import redis.asyncio as aioredis

from ipam import PoolSpec, RedisIpam, check_and_repair, layout
from ipam.config import IpamSettings
from tests.support.ha_client import Ack, read_acks
from tests.support.ha_store import PODS, HaStore, Timings, until

ROOT = Path(__file__).resolve().parents[2]
V4 = PoolSpec(name="ha4", cidr="10.64.0.0/14", block_size=26)
V6 = PoolSpec(name="ha6", cidr="fd00:64::/64", block_size=122)


@dataclass(frozen=True)
class Load:
    """The sizes of a trial (the fault tests and the benchmark use these)."""

    #: client processes; the first names only the failing pod's Sentinel in its URL
    #: (as a Service address may lead there), the others every Sentinel
    clients: int = 4
    #: concurrent calls per process (several ride one pipeline and one WAIT)
    tasks: int = 4
    #: acknowledgements per client before the fault, and after the store healed
    before: int = 200
    after: int = 200


LOAD = Load()


@dataclass(frozen=True)
class Fault:
    name: str
    doc: str
    #: "master" or "replica"
    target: str
    #: "kill" (SIGKILL, then restarted as the kubelet restarts a container) or
    #: "stall" (SIGSTOP, then SIGCONT)
    action: str
    #: a stall ends on this: "writes-resumed" (the new master acknowledged a write)
    #: or a Sentinel event (e.g. "+promoted-slave": in the middle of the failover)
    resume_on: str = ""


FAULTS = {f.name: f for f in (
    Fault("kill-master", "kill -9 of the master, restarted after the failover",
          "master", "kill"),
    Fault("stall-master", "SIGSTOP of the master until the new master acknowledged a "
          "write, then SIGCONT: it wakes up believing it is the master", "master", "stall",
          resume_on="writes-resumed"),
    Fault("stall-master-mid-failover", "SIGSTOP of the master until the Sentinels "
          "promoted a replica, then SIGCONT while the failover is still going on",
          "master", "stall", resume_on="+promoted-slave"),
    Fault("replica-down", "kill -9 of a replica under load, restarted later",
          "replica", "kill"),
)}


@dataclass(frozen=True)
class Bounds:
    #: writes refused at most this long after a master fault starts
    master_fault_s: float
    #: no gap between acknowledgements longer than this while a replica is down
    replica_fault_s: float
    #: the store is healthy again (old master a replica, Sentinels agreeing) within
    heal_s: float


def bounds(t: Timings) -> Bounds:
    """From the overlay's timings: a master is declared down after ``down-after``; the
    vote, the promotion and the clients' switch take a few seconds more (measured ~2 s
    here, docs/ipam.md). Healing includes the Sentinels' 8 s wait before converting a
    returning master and a full resync."""
    return Bounds(master_fault_s=t.down_after_s + 5.0,
                  replica_fault_s=3.0,
                  heal_s=t.down_after_s + t.failover_timeout_s + 30.0)


@dataclass
class Client:
    name: str
    log: Path
    proc: asyncio.subprocess.Process
    #: (sent, acknowledged) of every acknowledged call, in the order reported (so
    #: by acknowledgement time: ``acked`` holds those times, for bisecting)
    acks: list[tuple[float, float]] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    reader: asyncio.Task[None] | None = None


@dataclass
class Outcome:
    fault: str
    acked: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: acknowledged owners missing from the store, or holding other addresses
    lost: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    #: address -> owners, where more than one record holds it
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    #: owner-index entries that disagree with the records
    index_problems: list[str] = field(default_factory=list)
    check_findings: list[str] = field(default_factory=list)
    #: servers whose records differ from the master's once replication caught up
    diverged: list[int] = field(default_factory=list)
    #: fault start -> first acknowledged write (master faults: on the new master)
    unavailable_s: float | None = None
    #: fault start -> every client had a write acknowledged again
    all_resumed_s: float | None = None
    #: longest gap between two acknowledgements from the fault to the healed store
    longest_gap_s: float = 0.0
    #: fault start -> store healthy again
    healed_s: float = 0.0
    #: how long the trial's phases took (s)
    phases: dict[str, float] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged allocations missing: {self.lost[:5]}")
        if self.changed:
            out.append(f"{len(self.changed)} acknowledged allocations changed: "
                       f"{self.changed[:5]}")
        if self.duplicates:
            out.append(f"{len(self.duplicates)} addresses with two owners: "
                       f"{list(self.duplicates.items())[:5]}")
        if self.index_problems:
            out.append(f"owner index: {self.index_problems[:5]}")
        if self.check_findings:
            out.append(f"ipam check: {self.check_findings[:5]}")
        if self.diverged:
            out.append(f"servers diverged from the master: {self.diverged}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "timeline"}


def _err_file(path: Path) -> BinaryIO:
    return path.open("wb")


class Trial:
    def __init__(self, fault: Fault, *, load: Load = LOAD) -> None:
        self.fault = fault
        self.load = load
        self.root = Path(tempfile.mkdtemp(prefix=f"stickyip-ha-{fault.name}-"))
        self.store = HaStore(self.root / "store")
        self.timings = Timings.of(self.store.overlay)
        self.bounds = bounds(self.timings)
        self.clients: list[Client] = []
        self._cond = asyncio.Condition()
        self.outcome = Outcome(fault.name)
        self.t0 = 0.0

    # ------------------------------------------------------------------ clients

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STICKYIP_")}
        env.update({k: v for k, v in self.store.overlay.component_env.items()
                    if k.startswith("STICKYIP_") and k != "STICKYIP_REDIS_URL"})
        env["PYTHONPATH"] = str(ROOT)
        return env

    async def start_clients(self, master: int) -> None:
        for i in range(self.load.clients):
            name = f"c{i}"
            url = self.store.url((master,) if i == 0 else tuple(range(PODS)))
            log = self.root / f"{name}.acks"
            with _err_file(self.root / f"{name}.err") as err:  # its own log lines
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tests.support.ha_client", url, name, str(log),
                    V4.name, V6.name, str(self.load.tasks), cwd=ROOT, env=self._env(),
                    stdout=asyncio.subprocess.PIPE, stderr=err)
            client = Client(name, log, proc)
            client.reader = asyncio.create_task(self._read(client))
            self.clients.append(client)

    async def _read(self, client: Client) -> None:
        assert client.proc.stdout is not None
        async for raw in client.proc.stdout:
            line = raw.decode().rstrip("\n")
            async with self._cond:
                if line.startswith("A "):
                    _, sent, acked = line.split()
                    client.acks.append((float(sent), float(acked)))
                    client.acked.append(float(acked))
                elif line.startswith("E "):
                    _, at, kind, *_ = line.split(" ", 3)
                    client.errors.append((float(at), kind))
                elif line.startswith("DONE "):
                    client.summary = json.loads(line[5:])
                self._cond.notify_all()

    async def wait_clients(self, what: str, check: Callable[[], bool], within: float) -> None:
        async def wait() -> None:
            async with self._cond:
                while not check():
                    dead = [c.name for c in self.clients if c.proc.returncode not in (None, 0)]
                    if dead:
                        raise AssertionError(f"client processes failed: {dead}")
                    await self._cond.wait()

        try:
            await asyncio.wait_for(wait(), within)
        except TimeoutError:
            counts = {c.name: (len(c.acks), c.errors[-3:]) for c in self.clients}
            raise AssertionError(f"timed out after {within} s waiting for {what}: {counts}"
                                 f"\n{self.store.diagnose()}") from None

    def acks_since(self, t: float) -> list[int]:
        return [len(c.acked) - bisect.bisect_left(c.acked, t) for c in self.clients]

    def sent_after(self, c: Client, t: float) -> list[float]:
        """Acknowledgement times of ``c``'s calls sent at or after ``t``."""
        return [a for s, a in c.acks[bisect.bisect_left(c.acked, t):] if s >= t]

    async def stop_clients(self) -> None:
        for c in self.clients:
            if c.proc.returncode is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in self.clients:
            await asyncio.wait_for(c.proc.wait(), 60)
            if c.reader is not None:
                await c.reader
            if c.proc.returncode != 0 or c.summary is None:
                err = (self.root / f"{c.name}.err").read_text(errors="replace")
                raise AssertionError(f"client {c.name} exited with {c.proc.returncode}: "
                                     f"{err[-2000:]}")

    # ------------------------------------------------------------------ the trial

    async def run(self) -> Outcome:
        out = self.outcome
        started = time.monotonic()
        master = await self.store.boot()
        out.phases["boot"] = time.monotonic() - started
        settings = IpamSettings.model_validate(
            {"redis_replicas": int(self.store.overlay.component_env["STICKYIP_REDIS_REPLICAS"])})
        from ipam import open_ipam

        admin = await open_ipam(self.store.url(), actor="ha-test", settings=settings)
        try:
            await admin.apply_pools([V4, V6])
        finally:
            await admin.aclose()
        await self.start_clients(master)
        n = self.load.before
        await self.wait_clients(f"{n} acknowledgements from every client",
                                lambda: min(len(c.acks) for c in self.clients) >= n, 60)
        if self.fault.target == "master":
            await self._master_fault(master)
        else:
            await self._replica_fault(master)
        n = self.load.after
        healed = self.t0 + out.healed_s
        await self.wait_clients(f"{n} acknowledgements from every client after healing",
                                lambda: min(self.acks_since(healed)) >= n, 60)
        gaps_until = time.monotonic()
        await self.stop_clients()
        acks_times = sorted(a for c in self.clients for _, a in c.acks
                            if self.t0 <= a <= gaps_until)
        points = [self.t0, *acks_times]
        out.longest_gap_s = max((b - a for a, b in itertools.pairwise(points)),
                                default=0.0)
        for c in self.clients:
            assert c.summary is not None
            out.refused += int(c.summary["refused"])
            for k, v in c.summary["errors"].items():
                out.errors[k] = out.errors.get(k, 0) + int(v)
        out.phases["fault_to_stopped"] = time.monotonic() - self.t0
        out.timeline = [f"{e.at - self.t0:+7.2f}s sentinel-{e.ordinal} {e.channel} {e.data}"
                        for e in self.store.events if e.at >= self.t0 - 0.5]
        started = time.monotonic()
        await self.audit()
        out.phases["audit"] = time.monotonic() - started
        return out

    async def _master_fault(self, master: int) -> None:
        store, fault, b = self.store, self.fault, self.bounds
        if fault.action == "kill":
            store.kill9(master)
        else:
            store.pause(master)
        self.t0 = time.monotonic()
        if fault.resume_on.startswith("+"):
            await store.event(fault.resume_on, since=self.t0, within=b.master_fault_s + 10)
            store.resume(master)
        await store.event("+switch-master", since=self.t0, within=b.master_fault_s + 10)
        # Only the new master can acknowledge while the old one is dead or stopped.
        # Writes from a call started before the fault may be confirmed only after it:
        # the first acknowledgement of a call sent after the fault starts counts.
        await self.wait_clients("a write acknowledged after the fault",
                                lambda: self._first_sent_after() is not None,
                                b.master_fault_s + 30)
        if fault.action == "stall" and fault.resume_on == "writes-resumed":
            store.resume(master)
        await self.wait_clients("every client to have a write acknowledged again",
                                self._all_sent_after, b.master_fault_s + 30)
        self._resumed()
        if fault.action == "kill":
            store.start(master, "redis")  # the kubelet restarts the container
        await store.wait_healthy(within=b.heal_s, sentinels_know_replicas=False)
        self.outcome.healed_s = time.monotonic() - self.t0

    def _first_sent_after(self) -> float | None:
        """The reply time of the first acknowledged call sent after the fault began."""
        return min((min(got) for c in self.clients if (got := self.sent_after(c, self.t0))),
                   default=None)

    def _resumed(self) -> None:
        first = self._first_sent_after()
        assert first is not None
        self.outcome.unavailable_s = first - self.t0
        self.outcome.all_resumed_s = max(
            min(self.sent_after(c, self.t0)) for c in self.clients) - self.t0

    def _all_sent_after(self) -> bool:
        return all(self.sent_after(c, self.t0) for c in self.clients)

    async def _replica_fault(self, master: int) -> None:
        store, b = self.store, self.bounds
        replica = (master + 1) % PODS
        store.kill9(replica)
        self.t0 = time.monotonic()
        n = self.load.before
        await self.wait_clients(f"{n} acknowledgements from every client with a replica "
                                "down", lambda: min(self.acks_since(self.t0)) >= n, 60)
        self._resumed()
        store.start(replica, "redis")  # the kubelet restarts the container
        await store.wait_healthy(within=b.heal_s, sentinels_know_replicas=False)
        self.outcome.healed_s = time.monotonic() - self.t0

    # ------------------------------------------------------------------ the check

    async def audit(self) -> None:
        out = self.outcome
        acks: list[Ack] = [a for c in self.clients for a in read_acks(c.log)]
        out.acked = len(acks)
        master = await self.store.wait_healthy(within=self.bounds.heal_s,
                                              sentinels_know_replicas=False)
        await self._caught_up(master)
        r = aioredis.Redis.from_url(self.store.redis_url(master))
        ipam = RedisIpam(r, actor="ha-audit")
        try:
            records: dict[str, tuple[str, ...]] = {}
            cursor = -1
            while cursor != 0:
                cursor, page = await ipam.scan_records(max(cursor, 0), count=2000)
                for lease in page:
                    records[str(lease.owner)] = tuple(str(a.address) for a in lease.addresses)
            for ack in acks:
                held = records.get(ack.owner)
                if held is None:
                    out.lost.append(f"{ack.owner} (sent {ack.sent - self.t0:+.3f}s, "
                                    f"acknowledged {ack.acked - self.t0:+.3f}s)")
                elif sorted(held) != sorted(ack.addresses):
                    out.changed.append(f"{ack.owner}: acknowledged {ack.addresses}, "
                                       f"store {held}")
            holders: dict[str, list[str]] = {}
            for owner, addrs in records.items():
                for a in addrs:
                    holders.setdefault(a, []).append(owner)
            out.duplicates = {a: o for a, o in holders.items() if len(o) > 1}
            out.index_problems = await self._owner_index(ipam, r, holders)
            out.check_findings = [str(f) for f in await check_and_repair(ipam)]
            out.diverged = await self._diverged(master)
        finally:
            await ipam.aclose()

    async def _owner_index(self, ipam: RedisIpam, r: aioredis.Redis,
                           holders: dict[str, list[str]]) -> list[str]:
        """Every block's owner hash (``o:B``: offset -> owner) against the records."""
        problems = []
        indexed: dict[str, str] = {}
        for spec in (V4, V6):
            ref = await ipam.pool(spec.name)
            async for key in r.scan_iter(match=f"{ref.prefix}o:*", count=1000):
                block = ref.geo.parse_block_hex(key.decode().rsplit(":", 1)[1])
                for off, owner in (await r.hgetall(key)).items():
                    addr = str(ref.geo.at(block, int(off)))
                    indexed[addr] = owner.decode()
        for addr, owner in indexed.items():
            if owner not in holders.get(addr, []):
                problems.append(f"{addr}: index says {owner}, records {holders.get(addr)}")
        for addr, owners in holders.items():
            if indexed.get(addr) not in owners:
                problems.append(f"{addr}: held by {owners}, index says {indexed.get(addr)}")
        return problems

    async def _caught_up(self, master: int) -> None:
        async def check() -> bool:
            info = await self.store.replication(master)
            offset = int(info["master_repl_offset"])
            reps = [await self.store.replication(i) for i in range(PODS) if i != master]
            return all(int(x.get("slave_repl_offset", -1)) == offset for x in reps)

        await until(check, "the replicas to catch up with the master", within=30)

    async def _diverged(self, master: int) -> list[int]:
        async def records(i: int) -> dict[bytes, bytes]:
            r = aioredis.Redis.from_url(self.store.redis_url(i))
            try:
                return dict(await r.hgetall(layout.RECORDS))
            finally:
                await r.aclose()

        want = await records(master)
        return [i for i in range(PODS) if i != master and await records(i) != want]

    async def close(self) -> None:
        for c in self.clients:
            if c.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                await c.proc.wait()
            if c.reader is not None and not c.reader.done():
                c.reader.cancel()
        await self.store.aclose()
        if os.environ.get("HA_TRIAL_KEEP"):
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


async def run_trial(fault: Fault, *, load: Load = LOAD) -> Outcome:
    trial = Trial(fault, load=load)
    try:
        return await trial.run()
    finally:
        await trial.close()
