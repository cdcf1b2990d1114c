"""``KubeStandIn``: the stand-in server on a loopback port plus a direct Python API for
tests (async), and ``KubeStandInThread`` (the same, sync, with the server in a thread)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from kubestandin import patching
from kubestandin.admission import WebhookCaller, WebhookTarget
from kubestandin.apiserver import ApiCore
from kubestandin.controllers import Controllers, Kubelet
from kubestandin.errors import NotFound
from kubestandin.selectors import (
    match_fields,
    match_labels,
    parse_field_selector,
    parse_label_selector,
)
from kubestandin.server import ApiHttp
from kubestandin.store import Obj, Store

T = TypeVar("T")


class KubeStandIn:
    """A Kubernetes API stand-in on ``http://127.0.0.1:<port>`` (a test double).

    Use as ``async with KubeStandIn(...) as api``; point the official client at
    ``api.url``. The methods below act on the same state without HTTP (and through
    the same admission webhooks), for test setup and assertions."""

    def __init__(self, *, statefulset_controller: bool = True, auto_ready: bool = False,
                 host: str = "127.0.0.1", port: int = 0, bookmark_interval: float = 1.0,
                 history_size: int = 20000, strict_namespaces: bool = False,
                 graceful_deletion: bool = False,
                 mutating_webhooks: list[WebhookTarget] | None = None,
                 pod_ip_annotation: str | None = "stickyip.io/ip") -> None:
        self.store = Store(history_size=history_size)
        self.core = ApiCore(self.store, strict_namespaces=strict_namespaces,
                            graceful_deletion=graceful_deletion)
        self.kubelet = Kubelet(self.core, pod_ip_annotation=pod_ip_annotation)
        self._webhooks = WebhookCaller(self.store, list(mutating_webhooks or ()))
        if self._webhooks.targets:
            self.core.admission.append(self._webhooks)
        self._http = ApiHttp(self.core, bookmark_interval=bookmark_interval)
        self._controllers = Controllers(self.core, self.kubelet,
                                        statefulsets=statefulset_controller,
                                        auto_ready=auto_ready)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        await self._serve()
        self._controllers.start()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self._http.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert server is not None and isinstance(server, asyncio.base_events.Server)
        self._port = server.sockets[0].getsockname()[1]
        self.url = f"http://{self._host}:{self._port}"

    async def _unserve(self) -> None:
        self._http.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def stop(self) -> None:
        self._http.stopping.set()
        await self._controllers.stop()
        await self._unserve()
        await self._webhooks.close()

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The API server is down inside the block: open watches and connections are
        cut and new ones refused. Objects and watch history stay (as over a persistent
        etcd), the built-in controllers keep running, and the block may change state
        with the methods below; afterwards it serves again on the same URL."""
        await self._unserve()
        try:
            yield
        finally:
            self._http = ApiHttp(self.core, bookmark_interval=self._http.bookmark_interval)
            await self._serve()

    async def __aenter__(self) -> KubeStandIn:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # ------------------------------------------------------------ objects
    @property
    def resource_version(self) -> int:
        """The current global revision."""
        return self.store.rv

    async def create(self, obj: Obj) -> Obj:
        """Create any served object, chosen by its ``apiVersion``/``kind``."""
        res = self.core.resource(obj["apiVersion"], obj["kind"])
        return await self.core.create(res, obj, obj.get("metadata", {}).get("namespace", ""))

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> Obj | None:
        res = self.core.resource(api_version, kind)
        return self.store.get(res, namespace or "default", name)

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None,
                   field_selector: str | None = None) -> list[Obj]:
        res = self.core.resource(api_version, kind)
        lreqs, freqs = parse_label_selector(label_selector), parse_field_selector(field_selector)
        return [self.store.get(res, o["metadata"].get("namespace", ""),
                               o["metadata"]["name"]) or {}
                for o in self.store.iter(res, namespace)
                if match_labels(lreqs, o["metadata"].get("labels")) and match_fields(freqs, o)]

    async def replace(self, obj: Obj, *, subresource: str = "") -> Obj:
        """PUT semantics: 409 (Conflict) when ``metadata.resourceVersion`` is stale."""
        res = self.core.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return self.core.update(res, meta.get("namespace") or "default", meta["name"], obj,
                                subresource)

    async def patch(self, api_version: str, kind: str, name: str, patch: Any,
                    namespace: str | None = None, *, subresource: str = "",
                    content_type: str = patching.MERGE) -> Obj:
        res = self.core.resource(api_version, kind)
        return self.core.patch(res, namespace or "default", name, patch, content_type,
                               subresource)

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None, *,
                     propagation_policy: str | None = None,
                     grace_period_seconds: int | None = None) -> Obj | None:
        """Delete (immediately, unless ``graceful_deletion`` keeps a bound pod Terminating;
        ``grace_period_seconds=0`` forces it); None when it did not exist."""
        res = self.core.resource(api_version, kind)
        options: Obj = {"propagationPolicy": propagation_policy} if propagation_policy else {}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        try:
            return self.core.delete(res, namespace or "default", name, options)
        except NotFound:
            return None

    # ---------------------------------------------------- kubelet helpers
    async def set_pod_ready(self, name: str, namespace: str = "default",
                            ready: bool = True) -> Obj:
        """Mark a pod Running and Ready (or not Ready), as its kubelet would."""
        return self.kubelet.set_pod_ready(namespace, name, ready)

    async def set_pod_phase(self, name: str, phase: str, namespace: str = "default") -> Obj:
        return self.kubelet.set_pod_phase(namespace, name, phase)

    async def set_node_ready(self, name: str, ready: bool = True, *,
                             taint: bool = True) -> Obj:
        """Node Ready=True, or Ready=Unknown plus the ``unreachable`` taints (``taint``)."""
        return self.kubelet.set_node_ready(name, ready, taint=taint)

    # ------------------------------------------------------------- tests
    def compact(self) -> None:
        """Drop the watch history: resuming from any older resourceVersion gets 410 Gone."""
        self.store.compact()

    async def settle(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the built-in controllers have handled every change so far."""
        await asyncio.sleep(0)
        async with asyncio.timeout(timeout):
            while not self._controllers.is_idle():  # noqa: ASYNC110 (idle = event + empty queue)
                await asyncio.sleep(0.005)

    async def wait_for(self, predicate: Callable[[KubeStandIn], Awaitable[bool] | bool],
                       timeout: float = 10.0, interval: float = 0.02) -> None:  # noqa: ASYNC109
        """Poll ``predicate(api)`` until true; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                result = predicate(self)
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval)


class KubeStandInThread:
    """``KubeStandIn`` served from its own thread and event loop, with sync methods
    (for sync code such as the official client's blocking calls and watches)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="kubestandin", daemon=True)
        self.api: KubeStandIn | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coro, self._loop)
        return future.result(timeout)

    def submit(self, fn: Callable[[KubeStandIn], Coroutine[Any, Any, T]]
               ) -> concurrent.futures.Future[T]:
        """Run ``fn(api)`` on the stand-in's own loop, e.g. bulk setup from another
        loop: ``await asyncio.wrap_future(standin.submit(fill))``."""
        return asyncio.run_coroutine_threadsafe(fn(self._api), self._loop)

    @property
    def _api(self) -> KubeStandIn:
        if self.api is None:
            raise RuntimeError("KubeStandInThread is not started")
        return self.api

    def start(self) -> None:
        self._thread.start()

        async def make() -> KubeStandIn:
            api = KubeStandIn(**self._kwargs)
            await api.start()
            return api

        self.api = self._run(make())

    def stop(self) -> None:
        if self.api is not None:
            with contextlib.suppress(Exception):
                self._run(self.api.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> KubeStandInThread:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._api.url

    @property
    def resource_version(self) -> int:
        return self._api.resource_version

    def create(self, obj: Obj) -> Obj:
        return self._run(self._api.create(obj))

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> Obj | None:
        return self._run(self._api.get(api_version, kind, name, namespace))

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None) -> list[Obj]:
        return self._run(self._api.list(api_version, kind, namespace,
                                        label_selector=label_selector,
                                        field_selector=field_selector))

    def replace(self, obj: Obj, *, subresource: str = "") -> Obj:
        return self._run(self._api.replace(obj, subresource=subresource))

    def patch(self, api_version: str, kind: str, name: str, patch: Any,
              namespace: str | None = None, *, subresource: str = "",
              content_type: str = patching.MERGE) -> Obj:
        return self._run(self._api.patch(api_version, kind, name, patch, namespace,
                                         subresource=subresource, content_type=content_type))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               propagation_policy: str | None = None,
               grace_period_seconds: int | None = None) -> Obj | None:
        return self._run(self._api.delete(api_version, kind, name, namespace,
                                          propagation_policy=propagation_policy,
                                          grace_period_seconds=grace_period_seconds))

    def set_pod_ready(self, name: str, namespace: str = "default", ready: bool = True) -> Obj:
        return self._run(self._api.set_pod_ready(name, namespace, ready))

    def set_pod_phase(self, name: str, phase: str, namespace: str = "default") -> Obj:
        return self._run(self._api.set_pod_phase(name, phase, namespace))

    def set_node_ready(self, name: str, ready: bool = True, *, taint: bool = True) -> Obj:
        return self._run(self._api.set_node_ready(name, ready, taint=taint))

    def compact(self) -> None:
        async def compact() -> None:
            self._api.compact()

        self._run(compact())

    def settle(self, timeout: float = 5.0) -> None:
        self._run(self._api.settle(timeout), timeout + 1)

    def wait_for(self, predicate: Callable[[KubeStandInThread], bool],
                 timeout: float = 10.0, interval: float = 0.02) -> None:
        """Poll ``predicate(self)`` from the calling thread; TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(interval)
