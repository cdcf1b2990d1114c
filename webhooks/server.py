"""The admission webhook HTTPS server (aiohttp): reads AdmissionReviews, gathers
facts from the IPAM, lets the pure decision modules judge, and answers.

HTTP 400 with a one-line reason for bodies that are not an AdmissionReview this
endpoint judges; HTTP 500 when the store cannot be reached or does not answer
within the request's deadline (``failurePolicy`` then decides). Every store write
is one atomic, idempotent IPAM script, so a failure never leaves half a claim
behind, and a claim cut off by the deadline is simply made again on retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ipam import (
    InvalidAddress,
    InvalidRequest,
    IpamError,
    PoolNotFound,
    RedisIpam,
    Reservation,
    ReservationKey,
    StoreUnavailable,
)
from ipam.contract import ANN_IP, format_ips, opted_in, slot_of
from plumbing.redact import one_line
from webhooks import mutation, validation
from webhooks.config import WebhookSettings
from webhooks.errors import BadReview, ClusterUnavailable
from webhooks.metrics import WebhookMetrics
from webhooks.review import (
    MAX_BODY,
    POD,
    SCALE,
    STATEFULSET,
    AdmissionRequest,
    Expected,
    Verdict,
    mapping,
    parse_review,
    response,
)
from webhooks.tls import ReloadingContext

if TYPE_CHECKING:  # the kubernetes client is imported only when a reader is built
    from webhooks.kube import StatefulSetReader

log = logging.getLogger("stickyip.webhooks")

Decide = Callable[[AdmissionRequest], Awaitable[Verdict]]


#: Default of WebhookSettings.store_deadline (seconds).
DEADLINE = 1.5


class Webhook:
    """The three admission decisions, with their store look-ups."""

    def __init__(self, ipam: RedisIpam, *, scheduler_name: str = "",
                 metrics: WebhookMetrics | None = None,
                 statefulsets: StatefulSetReader | None = None,
                 deadline: float = DEADLINE) -> None:
        self.ipam = ipam
        self.scheduler_name = scheduler_name
        self.metrics = metrics or WebhookMetrics()
        #: Reads the StatefulSet behind a ``statefulsets/scale`` request.
        self.statefulsets = statefulsets
        #: Seconds one request may wait on the store and the API together; a
        #: StatefulSet read (scale requests, before any store call) gets half of it.
        self.deadline = deadline

    def count_ipam_error(self, e: IpamError) -> None:
        """Count an IPAM failure by class (``stickyip_webhook_ipam_errors_total``)."""
        self.metrics.ipam_errors.labels(type(e).__name__).inc()

    # ------------------------------------------------------------ /mutate-pods

    async def mutate_pod(self, req: AdmissionRequest) -> Verdict:
        if req.operation != "CREATE":
            return Verdict.allow()
        target = mutation.target_of(req.object, namespace=req.namespace,
                                    request_name=req.name)
        if isinstance(target, Verdict):
            return target
        key, request = target.key, target.request
        try:
            # dryRun: the same claim, validated against the store, written nowhere
            res = await self.ipam.claim(key, pools=list(request.pools),
                                        addresses=list(target.addresses),
                                        retain=request.retain, policy=request.policy,
                                        dry_run=req.dry_run)
            home = _home(res)
        except StoreUnavailable:
            raise
        except IpamError as e:
            self.count_ipam_error(e)
            verdict = mutation.refusal(e, target)
            log.info("pod refused", extra={"reservation": str(key), "reason": verdict.message})
            return verdict
        if log.isEnabledFor(logging.DEBUG):
            log.debug("pod pinned", extra={"reservation": str(key), "ip": home.address,
                                           "node": home.node, "dry_run": req.dry_run})
        return mutation.pin(req.object, home, scheduler_name=self.scheduler_name)

    # --------------------------------------------------- /validate-statefulsets

    async def validate_statefulset(self, req: AdmissionRequest) -> Verdict:
        if req.operation not in ("CREATE", "UPDATE"):
            return Verdict.allow()
        if req.kind == SCALE.kind:
            scaled = await self._scaled(req)
            if isinstance(scaled, Verdict):
                return scaled
            req = scaled
        plan = validation.read_statefulset(req)
        if isinstance(plan, Verdict):
            return plan
        facts = await self._facts(plan)
        verdict = validation.judge_statefulset(plan, facts)
        if not verdict.allowed:
            log.info("statefulset refused", extra={"statefulset": f"{plan.namespace}/"
                                                   f"{plan.name}", "reason": verdict.message})
        return verdict

    async def _scaled(self, req: AdmissionRequest) -> AdmissionRequest | Verdict:
        """A scale-up, as the UPDATE of the StatefulSet it will be."""
        replicas = validation.scale_up(req)
        if isinstance(replicas, Verdict):
            return replicas
        if self.statefulsets is None:
            return Verdict.allow(warnings=[
                "stickyip has no Kubernetes API access to check this scale-up's addresses"])
        budget = self.deadline / 2
        try:
            async with asyncio.timeout(budget):
                current = await self.statefulsets.get(req.namespace, req.name)
        except TimeoutError as e:
            raise ClusterUnavailable(f"StatefulSet {req.namespace}/{req.name} not read: the "
                                     f"API server did not answer within {budget:g}s") from e
        if current is None:
            return Verdict.allow()
        return dataclasses.replace(req, kind=STATEFULSET.kind, operation="UPDATE",
                                   object=validation.with_replicas(current, replicas),
                                   old_object=current)

    async def _facts(self, plan: validation.StatefulSetPlan) -> validation.PoolFacts:
        specs = {s.name: s for s in await self.ipam.pool_specs()}
        facts = validation.PoolFacts(known=sorted(specs))
        for name in plan.request.pools:
            spec = specs.get(name)
            if spec is None:
                continue
            try:
                status = await self.ipam.pool_status(name)
            except PoolNotFound:
                continue
            facts.pools[name] = validation.PoolFact(
                geometry=spec.geometry(), excluded=frozenset(spec.excluded_offsets()),
                free=status.free)
        keys: list[tuple[int, ReservationKey]] = []
        if plan.name:
            try:
                keys = [(i, ReservationKey.of(plan.namespace, plan.name, i))
                        for i in range(plan.replicas)]
            except InvalidRequest:
                keys = []

        async def held(i: int, key: ReservationKey) -> None:
            found = await self.ipam.lease(owner=key.owner)
            if found is not None:
                facts.held[i] = validation.Held(
                    pools=tuple(found.pools),
                    addresses={a.address.version: str(a.address) for a in found.addresses})

        async def owner(address: str) -> None:
            try:
                found = await self.ipam.owner_of(address)
            except InvalidAddress:
                return
            facts.owners[address] = found.owner if found is not None else None

        await self.ipam.gather_limited([held(i, k) for i, k in keys], limit=32)
        inside = [str(a) for a in plan.explicit()
                  if any(p.geometry.contains(a) for p in facts.pools.values())]
        await self.ipam.gather_limited([owner(a) for a in inside], limit=32)
        return facts

    # ------------------------------------------------------------ /validate-pods

    async def validate_pod(self, req: AdmissionRequest) -> Verdict:
        if req.operation != "CREATE":
            return Verdict.allow()
        addresses = validation.requested_addresses(req.object)
        if addresses is None:
            return Verdict.allow()
        if isinstance(addresses, str):
            return Verdict.refuse(422, addresses)
        own: str | None = None
        if opted_in(mapping(req.object, "metadata", "labels")):
            with contextlib.suppress(InvalidRequest):
                slot = slot_of(req.object, namespace=req.namespace, name=req.name)
                own = slot.key.owner if slot is not None else None
        for address in addresses:
            try:
                lease = await self.ipam.owner_of(address)
            except InvalidAddress:
                return Verdict.refuse(422, f"address {address} is not inside any pool; remove "
                                      f"the {ANN_IP} annotation (stickyip writes it)")
            verdict = validation.judge_pod_address(
                address, owner=lease.owner if lease is not None else None, own=own)
            if not verdict.allowed:
                return verdict
        return Verdict.allow()


def _home(res: Reservation) -> mutation.Home:
    """What a claim recorded, as the pod's annotations will say it (IPv4 first)."""
    if not res.addresses:
        return mutation.Home(node=res.node or None)
    return mutation.Home(address=format_ips(a.address for a in res.addresses),
                         node=res.node or None, epoch=res.epoch)


# ------------------------------------------------------------------ the app

WEBHOOK = web.AppKey("webhook", Webhook)


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadReview(f"request body is larger than {MAX_BODY} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadReview(f"request body is larger than {MAX_BODY} bytes") from None


def _endpoint(expected: tuple[Expected, ...], pick: Callable[[Webhook], Decide], name: str
              ) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        hook = request.app[WEBHOOK]
        m = hook.metrics
        started = time.perf_counter()
        try:
            try:
                review = parse_review(await _body(request), *expected)
            except BadReview as e:
                m.requests.labels(name, "bad_request").inc()
                return web.Response(status=400, text=f"{e}\n")
            try:
                # Every store call of this request, retries included, ends by then
                # (StoreUnavailable past it); the scale read bounds itself.
                with hook.ipam.deadline(hook.deadline):
                    verdict = await pick(hook)(review)
            except StoreUnavailable as e:
                return _store_unavailable(hook, name, e)
            except ClusterUnavailable as e:
                m.requests.labels(name, "error").inc()
                log.warning("kubernetes API unavailable", extra={"endpoint": name,
                                                                 "reason": str(e)})
                return web.Response(status=500, text=f"Kubernetes API unavailable: {_line(e)}\n")
            except Exception as e:
                m.requests.labels(name, "error").inc()
                log.exception("admission failed", extra={"endpoint": name, "uid": review.uid})
                return web.Response(status=500, text=f"internal error: {_line(e)}\n")
            m.requests.labels(name, "allowed" if verdict.allowed else "denied").inc()
            return web.Response(body=json.dumps(response(review.uid, verdict)).encode(),
                                content_type="application/json")
        finally:
            m.latency.labels(name).observe(time.perf_counter() - started)

    return handle


def _store_unavailable(hook: Webhook, endpoint: str, e: StoreUnavailable) -> web.Response:
    hook.count_ipam_error(e)
    hook.metrics.requests.labels(endpoint, "error").inc()
    log.warning("store unavailable", extra={"endpoint": endpoint, "reason": str(e)})
    return web.Response(status=500, text=f"IPAM store unavailable: {_line(e)}\n")


def _line(e: BaseException) -> str:
    """The error on one line, without credentials (a Redis URL's password)."""
    return one_line(str(e)) or type(e).__name__


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    """200 only while the store answers a PING within the request deadline."""
    hook = request.app[WEBHOOK]
    with hook.ipam.deadline(hook.deadline):
        answered = await hook.ipam.ping()
    if answered:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"IPAM store (Redis) did not answer a PING within "
                        f"{hook.deadline:g}s\n")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[WEBHOOK].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(hook: Webhook) -> web.Application:
    # One byte over the limit so an exactly-3-MiB body is still read; above, 400.
    app = web.Application(client_max_size=MAX_BODY + 1)
    app[WEBHOOK] = hook
    app.router.add_post("/mutate-pods", _endpoint((POD,), lambda h: h.mutate_pod,
                                                  "mutate-pods"))
    app.router.add_post("/validate-statefulsets", _endpoint(
        (STATEFULSET, SCALE), lambda h: h.validate_statefulset, "validate-statefulsets"))
    app.router.add_post("/validate-pods", _endpoint(
        (POD,), lambda h: h.validate_pod, "validate-pods"))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


@dataclass(slots=True)
class RunningServer:
    runner: web.AppRunner
    tls: ReloadingContext
    port: int
    host: str
    _watch: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def close(self) -> None:
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        await self.runner.cleanup()


async def start(settings: WebhookSettings, ipam: RedisIpam, *,
                metrics: WebhookMetrics | None = None,
                statefulsets: StatefulSetReader | None = None) -> RunningServer:
    """Listen on ``settings.host:settings.port`` (0: any free port) over HTTPS."""
    metrics = metrics or WebhookMetrics()
    tls = ReloadingContext(
        settings.cert_file, settings.key_file,
        on_reload=lambda ok: metrics.cert_reloads.labels("ok" if ok else "failed").inc())
    hook = Webhook(ipam, scheduler_name=settings.scheduler_name, metrics=metrics,
                   statefulsets=statefulsets, deadline=settings.store_deadline)
    runner = web.AppRunner(build_app(hook), access_log=None,
                           shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls.server_context,
                           backlog=512)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    watch = asyncio.create_task(tls.watch(settings.reload_interval), name="cert-reload")
    log.info("webhook listening", extra={"host": settings.host, "port": port})
    return RunningServer(runner=runner, tls=tls, port=port, host=settings.host, _watch=watch)


@contextlib.asynccontextmanager
async def running(settings: WebhookSettings, ipam: RedisIpam, *,
                  metrics: WebhookMetrics | None = None,
                  statefulsets: StatefulSetReader | None = None
                  ) -> AsyncIterator[RunningServer]:
    server = await start(settings, ipam, metrics=metrics, statefulsets=statefulsets)
    try:
        yield server
    finally:
        await server.close()
