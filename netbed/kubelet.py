"""The stand-in kubelet (the demo's, and the pod-startup benchmark's): for every pod
bound to one of its nodes it asks a pod runtime to start the pod (with a datapath: a
network namespace plus the real ``stickyip-cni`` ADD on that node) and then marks it
Running and Ready with its podIP; for every pod that disappears it stops it (CNI DEL,
netns removed). A lost node's pods simply vanish, as they would on a machine that lost
power. Runtimes: :class:`AnnotationRuntime` (control plane only),
``demo.datapath.NetnsRuntime`` (the demo's nodes) and :class:`TestbedRuntime`
(a :class:`netbed.testbed.Testbed`'s nodes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kubestandin import KubeStandIn
from kubestandin.errors import NotFound
from kubestandin.store import clone

if TYPE_CHECKING:
    from netbed.testbed import Pod, Testbed

log = logging.getLogger("stickyip.netbed.kubelet")

Obj = dict[str, Any]


@dataclass(frozen=True)
class RunningPod:
    uid: str
    namespace: str
    name: str
    node: str
    #: the pod's addresses, comma-separated, IPv4 first (as ``stickyip.io/ip``)
    address: str


class PodRuntime(Protocol):
    """What a kubelet needs of the container runtime plus the CNI plugin."""

    async def start_pod(self, pod: Obj, node: str) -> str:
        """Create the pod's sandbox on ``node``; returns its addresses, comma-separated,
        IPv4 first (raise to retry)."""
        ...

    async def stop_pod(self, running: RunningPod) -> None:
        """Remove the pod's sandbox (CNI DEL first)."""
        ...

    async def forget_node(self, node: str, pods: list[RunningPod]) -> None:
        """The node is gone: drop its pods' sandboxes without asking it."""
        ...


class PodNotReady(Exception):
    """The pod cannot start yet (e.g. no address annotated); the kubelet retries."""


class AnnotationRuntime:
    """Control plane only: no sandbox; the address is the one the webhook or the
    scheduler annotated (``stickyip.io/ip``), as the agent would give it."""

    async def start_pod(self, pod: Obj, node: str) -> str:
        ip = (pod["metadata"].get("annotations") or {}).get("stickyip.io/ip", "")
        if not ip:
            raise PodNotReady("no stickyip.io/ip annotation yet")
        return str(ip)

    async def stop_pod(self, running: RunningPod) -> None:
        return None

    async def forget_node(self, node: str, pods: list[RunningPod]) -> None:
        return None


class Kubelet:
    def __init__(self, api: KubeStandIn, runtime: PodRuntime, nodes: list[str], *,
                 period: float = 0.1, retry: float = 0.5,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.api, self.runtime = api, runtime
        self.nodes = set(nodes)
        self.period, self.retry = period, retry
        self.running: dict[str, RunningPod] = {}
        self.errors: dict[str, str] = {}
        self._busy: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_error = on_error
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="kubelet")

    async def stop(self, *, remove_pods: bool = True) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if remove_pods:
            for running in list(self.running.values()):
                with contextlib.suppress(Exception):
                    await self.runtime.stop_pod(running)
            self.running.clear()

    async def lose_node(self, node: str) -> None:
        """Stop acting for ``node`` and drop its pods (the machine is gone)."""
        self.nodes.discard(node)
        lost = [r for r in self.running.values() if r.node == node]
        for r in lost:
            self.running.pop(r.uid, None)
        await self.runtime.forget_node(node, lost)

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception as e:  # keep the kubelet alive; the next pass retries
                log.warning("kubelet pass failed: %r", e)
            await asyncio.sleep(self.period)

    async def sync_once(self) -> None:
        # The stand-in's stored pods, read without copying them all on every pass (ten
        # a second: with a thousand pods the copies cost more than the rest of the
        # stand-in); a pod to start is copied.
        pods = list(self.api.store.iter(self.api.core.resource("v1", "Pod")))
        present: set[str] = set()
        now = time.monotonic()
        for pod in pods:
            meta = pod["metadata"]
            uid = str(meta.get("uid", ""))
            node = (pod.get("spec") or {}).get("nodeName") or ""
            if not node or node not in self.nodes:
                continue
            present.add(uid)
            if uid in self.running or uid in self._busy or self._not_before.get(uid, 0) > now:
                continue
            self._spawn(self._start(clone(pod), node), uid)
        for uid, running in list(self.running.items()):
            if uid not in present and uid not in self._busy and running.node in self.nodes \
                    and self._not_before.get(uid, 0) <= now:
                self._spawn(self._stop(running), uid)

    def _spawn(self, coro: Any, uid: str) -> None:
        self._busy.add(uid)
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._busy.discard(uid)

        task.add_done_callback(done)

    async def _start(self, pod: Obj, node: str) -> None:
        meta = pod["metadata"]
        uid, ns, name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        try:
            address = await self.runtime.start_pod(pod, node)
        except Exception as e:
            self._not_before[uid] = time.monotonic() + self.retry
            msg = f"{ns}/{name} on {node}: {e}"
            if self.errors.get(uid) != msg:
                self.errors[uid] = msg
                if self._on_error is not None and not isinstance(e, PodNotReady):
                    self._on_error(msg)
            return
        running = RunningPod(uid, ns, name, node, address)
        self.running[uid] = running
        self.errors.pop(uid, None)
        try:
            current = await self.api.get("v1", "Pod", name, ns)
            if current is None or current["metadata"].get("uid") != uid:
                raise NotFound(f"pod {ns}/{name} is gone")
            await self.api.set_pod_ready(name, ns, ready=True)
            ips = [a for a in address.split(",") if a]
            await self.api.patch("v1", "Pod", name,
                                 {"status": {"podIP": ips[0],
                                             "podIPs": [{"ip": a} for a in ips]}},
                                 ns, subresource="status")
        except NotFound:
            pass  # deleted while starting: the next pass sees it missing and stops it

    async def _stop(self, running: RunningPod) -> None:
        try:
            await self.runtime.stop_pod(running)
        except Exception as e:
            self._not_before[running.uid] = time.monotonic() + self.retry
            if self._on_error is not None:
                self._on_error(f"stopping {running.namespace}/{running.name}: {e}")
            return
        self.running.pop(running.uid, None)
        self._not_before.pop(running.uid, None)


class TestbedRuntime:
    """The kubelet's runtime on the nodes of a :class:`netbed.testbed.Testbed`: a fresh
    network namespace per pod and the real ``stickyip-cni`` ADD on its node
    (:meth:`Testbed.add_pod`, as a container runtime calls the plugin); CNI DEL and the
    namespace removed when it stops."""

    __test__ = False  # not a pytest test class

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self.pods: dict[str, Pod] = {}

    async def start_pod(self, pod: Obj, node: str) -> str:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        if node not in self.bed.nodes:
            raise PodNotReady(f"node {node} is not part of the bed")
        netns = await asyncio.to_thread(self.bed.new_pod_netns)
        try:
            started = await self.bed.add_pod(node, str(meta["namespace"]), str(meta["name"]),
                                             uid=uid, netns=netns)
        except BaseException:
            await asyncio.to_thread(self.bed.namespaces.delete, netns)
            raise
        self.pods[uid] = started
        return ",".join(started.addresses)

    async def stop_pod(self, running: RunningPod) -> None:
        started = self.pods.pop(running.uid, None)
        if started is not None:
            await self.bed.del_pod(started)

    async def forget_node(self, node: str, pods: list[RunningPod]) -> None:
        for r in pods:
            started = self.pods.pop(r.uid, None)
            if started is not None:
                await asyncio.to_thread(self.bed.namespaces.delete, started.netns)
