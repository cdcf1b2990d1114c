"""The StatefulSet story the demo plays against the running system, step by step:
create (with a Service in front), delete a pod, lose a node, scale down, scale up,
and (with the datapath) another host taking a replica's address. After each step it
prints who has which addresses on which node with which epoch, what the step promised
(checked), and live probes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from demo.config import DemoSettings
from demo.errors import DemoError, StepTimeout
from demo.report import (
    Check,
    Probe,
    Row,
    StepResult,
    by_ordinal,
    check_failover,
    check_same_addresses,
    check_same_place,
    check_scaled_down,
    converged,
    rows_of,
    table,
)
from demo.system import FIXED_IP_LABEL, SCHEDULER, System
from kubestandin import objects


class Prober(Protocol):
    """Live connectivity probes against the pods of the current step."""

    async def setup(self, system: System) -> None: ...

    async def probe(self, rows: Sequence[Row], service_ips: Sequence[str]) -> list[Probe]:
        """``service_ips``: the Service's cluster IPs, IPv4 first."""
        ...


class NoProbes:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def setup(self, system: System) -> None:
        return None

    async def probe(self, rows: Sequence[Row], service_ips: Sequence[str]) -> list[Probe]:
        return [Probe("live probes (pod-to-pod, Service VIP, NetworkPolicy)", "skipped",
                      self.reason)]


def admitted(pod: dict[str, Any]) -> bool:
    """The pod carries what the webhook writes: its address, home and epoch, agreeing
    with where it runs, and the sticky scheduler's name (the template sets none)."""
    ann = pod["metadata"].get("annotations") or {}
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    pod_ips = ",".join(str(x.get("ip", "")) for x in status.get("podIPs") or ())
    return (bool(ann.get("stickyip.io/ip")) and ann.get("stickyip.io/ip") == pod_ips
            and ann.get("stickyip.io/node") == spec.get("nodeName")
            and str(ann.get("stickyip.io/epoch", "")).isdigit()
            and spec.get("schedulerName") == SCHEDULER)


class Story:
    def __init__(self, system: System, settings: DemoSettings, prober: Prober, *,
                 out: Callable[[str], None] | None = None) -> None:
        self.sys, self.s, self.prober = system, settings, prober
        self.out = out or (lambda s: print(s, flush=True))
        self.results: list[StepResult] = []
        self.service_ip = ""
        self.service_ip6 = ""
        self._events_seen: set[str] = set()
        self._before_down: list[Row] | None = None

    @property
    def api(self) -> Any:
        assert self.sys.api is not None
        return self.sys.api

    # ------------------------------------------------------------ state

    async def snapshot(self) -> list[Row]:
        assert self.sys.ipam is not None
        pods = await self.api.list("v1", "Pod", self.s.namespace,
                                   label_selector=f"app={self.s.statefulset}")
        reservations: dict[int, dict[str, Any]] = {}
        for lease in await self.sys.ipam.all_records(self.s.pool):
            key = lease.key
            if key is not None and key.namespace == self.s.namespace \
                    and key.statefulset == self.s.statefulset:
                reservations[key.ordinal] = lease.model_dump(mode="json")
        return rows_of(pods, reservations, self.s.statefulset)

    async def wait(self, what: str, done: Callable[[list[Row]], bool]) -> list[Row]:
        deadline = time.monotonic() + self.s.step_timeout
        rows = await self.snapshot()
        while not done(rows):
            self.sys.sup.check_alive()
            if time.monotonic() > deadline:
                errors = "\n".join(self.sys.errors[-5:])
                raise StepTimeout(f"{what}: not reached within {self.s.step_timeout:.0f}s; "
                                  "last state:\n" + "\n".join(table(rows))
                                  + (f"\nkubelet errors:\n{errors}" if errors else ""))
            await asyncio.sleep(0.2)
            rows = await self.snapshot()
        return rows

    # ------------------------------------------------------------ output

    async def report(self, title: str, rows: list[Row], checks: list[Check], t0: float,
                     *, notes: Sequence[str] = ()) -> StepResult:
        probes = await self.prober.probe(rows, [a for a in (self.service_ip, self.service_ip6)
                                                if a])
        result = StepResult(title, rows, checks, probes, time.monotonic() - t0)
        self.results.append(result)
        self.out("")
        self.out(f"== {title}  ({result.seconds:.1f} s)")
        for line in table(rows):
            self.out(f"   {line}")
        for line in await self.new_events():
            self.out(f"   event: {line}")
        for line in notes:
            self.out(f"   {line}")
        for c in checks:
            self.out(f"   [{'ok' if c.ok else 'FAIL'}] {c.text}")
        for p in probes:
            mark = {"ok": "ok", "denied": "ok", "skipped": "skip"}.get(p.outcome, "FAIL")
            detail = f": {p.detail}" if p.detail else ""
            word = "skipped" if p.outcome == "skipped" else p.outcome
            self.out(f"   [{mark}] probe {p.text} -> {word}{detail}")
        if not self.s.fast and self.s.pause:
            await asyncio.sleep(self.s.pause)
        return result

    async def new_events(self) -> list[str]:
        events = await self.api.list("v1", "Event", self.s.namespace)
        lines = []
        for e in sorted(events, key=lambda x: str(x.get("lastTimestamp")
                                                  or x["metadata"].get("creationTimestamp"))):
            uid = str(e["metadata"].get("uid"))
            if uid in self._events_seen:
                continue
            self._events_seen.add(uid)
            obj = e.get("involvedObject") or {}
            if e.get("reason") in ("Scheduled", "SuccessfulCreate", "SuccessfulDelete"):
                continue
            lines.append(f"{obj.get('kind', '')}/{obj.get('name', '')} {e.get('reason', '')}: "
                         f"{e.get('message', '')}")
        return lines[-6:]

    # ------------------------------------------------------------ steps

    async def run(self) -> list[StepResult]:
        await self.create()
        await self.delete_pod(1)
        await self.lose_node()
        await self.scale(1)
        await self.scale(self.s.nodes)
        if self.sys.datapath is not None:
            await self.conflict(0)
        return self.results

    def statefulset(self) -> dict[str, Any]:
        name = self.s.statefulset
        sts = objects.statefulset(
            name, self.s.namespace, replicas=self.s.nodes,
            template_labels={"app": name, FIXED_IP_LABEL: "true"},
            template_annotations={"stickyip.io/pool": self.sys.pools,
                                  "stickyip.io/retain": self.s.retain,
                                  "stickyip.io/node-failure": "migrate"},
            service_name=name)
        return sts

    async def create(self) -> None:
        t0 = time.monotonic()
        n = self.s.nodes
        name = self.s.statefulset
        spec: dict[str, Any] = {"selector": {"app": name}, "type": "ClusterIP",
                                "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                           "protocol": "TCP"}]}
        if self.s.dual_stack:
            # what the API server allocates for PreferDualStack in a dual-stack cluster
            spec |= {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"],
                     "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::a"]}
        svc = await self.api.create({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": self.s.namespace}, "spec": spec})
        self.service_ip = str(svc["spec"].get("clusterIP", ""))
        self.service_ip6 = next((str(a) for a in svc["spec"].get("clusterIPs") or ()
                                 if ":" in str(a)), "")
        await self.prober.setup(self.sys)
        await self.api.create(self.statefulset())
        rows = await self.wait(f"{n} replicas Ready at their reserved addresses",
                               lambda r: converged(r, n))
        pods = await self.api.list("v1", "Pod", self.s.namespace,
                                   label_selector=f"app={name}")
        checks = [Check(f"every replica went through admission (schedulerName {SCHEDULER} "
                        "set by the webhook) and carries its address, home and epoch "
                        "(stickyip.io/ip, /node, /epoch)",
                        len(pods) == n and all(admitted(p) for p in pods)),
                  Check(f"{n} distinct addresses", len({r.address for r in rows}) == n)]
        if self.s.dual_stack:
            checks.append(Check(f"every replica also has an IPv6 address from pool "
                                f"{self.s.pool6} ({n} distinct)",
                                len({r.address6 for r in rows if r.address6}) == n))
        checks += [Check(f"replicas spread over {len({r.node for r in rows})} nodes",
                         len({r.node for r in rows}) == min(n, len(self.sys.nodes))),
                   Check("every pod's podIP is its reserved address (webhook + scheduler)",
                         all(r.address == r.reserved for r in rows))]
        title_vips = ", ".join(a for a in (self.service_ip, self.service_ip6) if a)
        await self.report(f"1. StatefulSet {self.s.namespace}/{name} ({n} replicas, fixed IPs"
                          f"{', dual-stack' if self.s.dual_stack else ''}, retain "
                          f"{self.s.retain}) behind Service {name} ({title_vips or 'no VIP'})",
                          rows, checks, t0)

    async def delete_pod(self, ordinal: int) -> None:
        t0 = time.monotonic()
        before = await self.snapshot()
        pod = f"{self.s.statefulset}-{ordinal}"
        old = await self.api.get("v1", "Pod", pod, self.s.namespace)
        old_uid = old["metadata"]["uid"] if old else ""
        await self.api.delete("v1", "Pod", pod, self.s.namespace)
        n = len([r for r in before if r.pod])

        async def recreated() -> bool:
            p = await self.api.get("v1", "Pod", pod, self.s.namespace)
            return p is not None and p["metadata"]["uid"] != old_uid

        rows = await self.wait(f"{pod} re-created and Ready", lambda r: converged(r, n))
        while not await recreated():
            rows = await self.wait(f"{pod} re-created", lambda r: converged(r, n))
        await self.report(f"2. deleted pod {pod}: the StatefulSet re-creates it", rows,
                          check_same_place(before, rows, ordinal), t0)

    async def lose_node(self) -> None:
        t0 = time.monotonic()
        before = await self.snapshot()
        n = len([r for r in before if r.pod])
        spare = getattr(self.prober, "client_node", "")
        victims = [r.node for r in sorted(before, key=lambda r: -r.ordinal)
                   if r.pod and r.node != spare]
        if not victims:
            raise DemoError("no node other than the client's runs a replica: nothing to lose")
        victim = victims[0]
        await self.sys.kill_node(victim)
        rows = await self.wait(
            f"replicas of {victim} re-homed and Ready",
            lambda r: converged(r, n) and all(x.node != victim for x in r))
        notes: list[str] = []
        for r in before:
            if r.node == victim:
                for address in (r.address, r.address6):
                    if address:
                        notes += await self.history(address)
        how = "agent stopped, namespace gone, " if self.sys.datapath is not None else ""
        await self.report(f"3. node {victim} lost ({how}Node deleted): failover "
                          "fences it and re-homes its addresses with a new epoch", rows,
                          check_failover(before, rows, victim), t0, notes=notes)

    async def history(self, address: str) -> list[str]:
        """The IPAM audit trail of ``address`` (who did what, with which epoch)."""
        assert self.sys.ipam is not None
        entries = await self.sys.ipam.history(address)
        lines = [f"ipam history of {address} (as 'stickyip ipam history {address}'):"]
        for e in sorted(entries, key=lambda x: x.at)[-8:]:
            lines.append(f"  {e.op:<10} node={e.node or '-':<8} epoch={e.epoch:<3} "
                         f"by {e.actor or '-'}")
        return lines

    async def scale(self, replicas: int) -> None:
        t0 = time.monotonic()
        before = await self.snapshot()
        if replicas < len([r for r in before if r.pod]):
            self._before_down = list(before)
        await self.api.patch("apps/v1", "StatefulSet", self.s.statefulset,
                             {"spec": {"replicas": replicas}}, self.s.namespace)
        if replicas < len(before):
            def down(r: list[Row]) -> bool:
                return converged(r, replicas) and all(
                    x.state == "retained" for x in r if x.ordinal >= replicas)

            rows = await self.wait(f"scaled down to {replicas}", down)
            checks = check_scaled_down(before, rows, replicas)
            title = (f"4. scaled down to {replicas}: the other ordinals' addresses stay "
                     f"reserved (retain {self.s.retain})")
        else:
            rows = await self.wait(f"scaled up to {replicas}",
                                   lambda r: converged(r, replicas))
            checks = check_same_addresses(self._before_down or before, rows)
            title = f"5. scaled up to {replicas}: the same addresses come back"
        await self.report(title, rows, checks, t0)

    async def conflict(self, ordinal: int) -> None:
        """Another host on the node network takes a running replica's address (its
        IPv6 one on a dual-stack StatefulSet): the agent's re-check finds it (an Event on
        the pod), the re-created pod's ADD is refused while the other host holds it, and
        the pod starts at its addresses once that host is gone."""
        t0 = time.monotonic()
        dp, kubelet = self.sys.datapath, self.sys.kubelet
        assert dp is not None and kubelet is not None
        before = await self.snapshot()
        row = by_ordinal(before)[ordinal]
        taken = row.address6 or row.address
        squatter, mac = dp.squat(taken)
        checks: list[Check] = []
        try:
            found = (await asyncio.to_thread(dp.agent_call, row.node, {"command": "RECHECK"})
                     ).get("result", {}).get("conflicts", [])
            hit = next((c for c in found if c["address"] == taken), None)
            checks.append(Check(
                f"conflict on running {row.pod}: {taken} answered from "
                f"{hit['mac'] if hit else '?'} on {hit['link'] if hit else '?'} "
                f"(found by the re-check of {row.node}'s agent)",
                hit is not None and hit["mac"] == mac))
            event = await self._event(row.pod, "AddressConflict")
            checks.append(Check(f"Warning Event AddressConflict on {row.pod}: "
                                f"{(event or {}).get('message', 'none')[:110]}",
                                event is not None and mac in event.get("message", "")))
            old = await self.api.get("v1", "Pod", row.pod, self.s.namespace)
            await self.api.delete("v1", "Pod", row.pod, self.s.namespace)
            refused = await self._refusal(kubelet, row.pod, (old or {}).get("metadata", {})
                                          .get("uid", ""))
            why = refused[refused.find("address conflict"):].split(". ")[0] \
                if "address conflict" in refused else (refused or "not refused")
            checks.append(Check(f"conflict: the re-created {row.pod}'s CNI ADD was refused "
                                f"(code 104) while {taken} is taken: {why}",
                                "address conflict" in refused and taken in refused))
        finally:
            dp.unsquat(squatter)
        n = len([r for r in before if r.pod])
        rows = await self.wait(f"{row.pod} started once the other host left",
                               lambda r: converged(r, n))
        await asyncio.to_thread(dp.agent_call, row.node, {"command": "RECHECK"})
        checks += check_same_place(before, rows, ordinal)
        await self.report(f"6. another host on the node network takes {row.pod}'s address "
                          f"{taken}: the agents find the conflict and start the pod only "
                          "once the address is free", rows, checks, t0)

    async def _event(self, pod: str, reason: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.s.step_timeout
        while time.monotonic() < deadline:
            for e in await self.api.list("v1", "Event", self.s.namespace):
                if e.get("reason") == reason and (e.get("involvedObject") or {}).get(
                        "name") == pod:
                    found: dict[str, Any] = e
                    return found
            await asyncio.sleep(0.2)
        return None

    async def _refusal(self, kubelet: Any, pod: str, old_uid: str) -> str:
        """The kubelet's error for the re-created pod (not the deleted one)."""
        deadline = time.monotonic() + self.s.step_timeout
        while time.monotonic() < deadline:
            current = await self.api.get("v1", "Pod", pod, self.s.namespace)
            uid = (current or {}).get("metadata", {}).get("uid", "")
            if uid and uid != old_uid and uid in kubelet.errors:
                return str(kubelet.errors[uid])
            await asyncio.sleep(0.2)
        return ""
