"""Wiring of one scheduler replica: watch caches, leader election, the scheduling
loop (or, in extender mode, the extender server instead), and the failover and GC
controllers (on the leader, in both modes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from ipam import RedisIpam
from plumbing.kube.watch import LoopSink, Reflector
from scheduler import ipam_stats
from scheduler.cache import ClusterCache
from scheduler.config import SchedulerSettings
from scheduler.controllers import FailoverController, GcController
from scheduler.errors import SchedulerError
from scheduler.extender import Extender
from scheduler.kubeapi import KubeApi
from scheduler.leader import LeaderElector
from scheduler.metrics import Metrics
from scheduler.reconciler import Reconciler
from scheduler.scheduling import Scheduler

log = logging.getLogger("stickyip.scheduler.app")


class SchedulerApp:
    def __init__(self, settings: SchedulerSettings, kube: KubeApi, ipam: RedisIpam) -> None:
        self.settings, self.kube, self.ipam = settings, kube, ipam
        self.metrics = Metrics()
        self.cache = ClusterCache()
        self.leader: LeaderElector | None = None
        if settings.leader_election:
            self.leader = LeaderElector(
                kube, namespace=settings.lease_namespace, name=settings.lease_name,
                identity=settings.identity, duration=settings.lease_duration,
                renew_period=settings.renew_period, on_change=self._on_leader,
                on_renew=self._on_renew)
        self.scheduler = Scheduler(settings, self.cache, ipam, kube, metrics=self.metrics,
                                   is_leader=self.is_leader)
        self.failover = FailoverController(settings, self.cache, ipam, kube, self.scheduler,
                                           metrics=self.metrics)
        self.gc = GcController(settings, ipam, kube, self.cache, metrics=self.metrics,
                               fresh=self.cache_caught_up)
        self.extender = Extender(self.cache, ipam, self.scheduler, metrics=self.metrics)
        self.reconciler = Reconciler(settings, self.cache, ipam, self.scheduler,
                                     metrics=self.metrics, is_leader=self.is_leader)
        self.gc.on_quarantine_freed = self.reconciler.request
        self._reflectors: list[Reflector] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._threads: list[threading.Thread] = []
        self._runners: list[web.AppRunner] = []
        self.extender_url = ""
        #: /metrics, /healthz and /readyz (the probes), when metrics_port is set
        self.status_url = ""

    def is_leader(self) -> bool:
        return self.leader is None or self.leader.is_leader

    def _on_leader(self, leading: bool) -> None:
        self.metrics.leader.set(1 if leading else 0)
        if leading:
            # The store may have changed while another replica led (or none did).
            self.reconciler.request("became leader", hold=True)
            self.scheduler.enqueue_pending()

    def _on_renew(self) -> None:
        self.scheduler.unpark()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for kind in ("nodes", "pods", "statefulsets"):
            reflector = self.kube.reflector(kind, LoopSink(loop, self.cache.sink(kind)),
                                            watch_timeout=self.settings.watch_timeout)
            self._reflectors.append(reflector)
            # Own threads, not the default executor: watches block for minutes and would
            # starve every asyncio.to_thread call (binding, events) of workers.
            self._threads.append(reflector.start())
        if self.settings.extender_port or self.settings.metrics_port:
            await self._serve()
        if self.leader is not None:
            self._spawn(self.leader.run(), "leader")
        else:
            self.metrics.leader.set(1)
        if not self.settings.extender_port:
            # Extender mode: kube-scheduler decides and binds, every replica answers
            # /filter and /prioritize; the controllers below still run on the leader,
            # since failover and GC are needed whoever schedules.
            self._spawn(self.scheduler.run(), "scheduling")
        self._spawn(self._periodic(self.failover.run_once, self.settings.failover_period),
                    "failover")
        self._spawn(self._periodic(self.gc.run_once, self.settings.gc_period), "gc")
        self._spawn(self._stats(), "ipam-stats")
        self._spawn(self.reconciler.run(), "reconcile")
        self._spawn(self.reconciler.follow_store(), "store-identity")

    async def _stats(self) -> None:
        """IPAM gauges on every replica (not only the leader): each scrape target then
        answers for the whole store."""
        while True:
            stats = await ipam_stats.collect(self.ipam, self.metrics, self.cache)
            if stats is not None:
                self.failover.note_stats(stats)
            await asyncio.sleep(self.settings.stats_period)

    async def _serve(self) -> None:
        """The extender endpoints on extender_port; /metrics and the probes' /healthz
        and /readyz on metrics_port (and on the extender port too)."""
        if self.settings.extender_port:
            app = self.extender.app()
            app.router.add_get("/readyz", self._readyz)
            self.extender_url = await self._listen(app, self.settings.extender_port)
        if self.settings.metrics_port:
            app = web.Application()
            app.router.add_get("/metrics", self.extender.metrics_handler)
            app.router.add_get("/healthz", _healthz)
            app.router.add_get("/readyz", self._readyz)
            self.status_url = await self._listen(app, self.settings.metrics_port)

    async def _listen(self, app: web.Application, port: int) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.settings.extender_host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        return f"http://127.0.0.1:{bound}"

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready (leader or standby): the watch caches hold the cluster and the store
        answers within 1 s (the probe's timeout is 2 s)."""
        if not self.cache.is_synced("nodes", "pods", "statefulsets"):
            return web.Response(status=503, text="watch caches not synced yet\n")
        try:
            async with asyncio.timeout(1.0):
                store = await self.ipam.ping()
        except TimeoutError:
            store = False
        if not store:
            return web.Response(status=503, text="IPAM store (Redis) is not answering\n")
        return web.Response(text="ok\n")

    async def _periodic(self, fn: Any, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if not self.is_leader():
                continue
            try:
                await fn()
            except (SchedulerError, Exception) as e:  # a controller pass must not kill the app
                log.warning("controller pass failed", extra={"error": repr(e)})

    async def cache_caught_up(self, kinds: tuple[str, ...] = ("pods", "statefulsets"),
                              timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Has the watch cache seen every change the API server had committed when this
        was called? (As kube-apiserver's consistent reads from its cache: take the
        current resourceVersion, wait until the watch got there; bookmarks move it on
        a quiet collection.) False when it did not within ``timeout``."""
        wait = timeout if timeout is not None else max(self.settings.gc_period, 10.0)
        reflectors = {r.name: r for r in self._reflectors}
        try:
            targets = {k: int(await asyncio.to_thread(self.kube.revision, k)) for k in kinds}
        except ValueError:
            log.warning("the API server's resourceVersions are not numbers; cannot tell "
                        "whether the watch cache caught up")
            return False

        def reached() -> bool:
            for kind, target in targets.items():
                seen = reflectors[kind].resource_version if kind in reflectors else ""
                if not seen.isdigit() or int(seen) < target:
                    return False
            return True

        deadline = time.monotonic() + wait
        while not reached():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        # The watch threads hand a change to the loop before they record its version:
        # one turn of the loop applies everything handed over so far.
        await asyncio.sleep(0)
        return True

    async def wait_synced(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not self.cache.is_synced("nodes", "pods", "statefulsets"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for reflector in self._reflectors:
            reflector.stop()
        for t in self._tasks:
            t.cancel()
        # Bounded: a task that outlives its cancel must not hang the shutdown.
        _, late = await asyncio.wait(self._tasks, timeout=10) if self._tasks else ((), ())
        for t in late:
            log.warning("a task did not stop within 10 s", extra={"task": t.get_name()})
        for t in self._tasks:
            if t.done() and not t.cancelled():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    t.result()
        await self.scheduler.drain()
        if self.leader is not None:
            await asyncio.to_thread(self.leader.release_sync)
        for runner in self._runners:
            await runner.cleanup()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 10)

    async def __aenter__(self) -> SchedulerApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")
