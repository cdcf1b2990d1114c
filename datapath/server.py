"""The agent's servers: the CNI socket (one JSON request line in, one reply line
out, every failure turned into a CNI error code here) and the HTTP status endpoint
(``/metrics``, ``/healthz``, ``/livez``). What each command does is the caller's handler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from datapath.errors import (
    CNI_DECODE_FAILURE,
    CNI_INTERNAL,
    CNI_TRY_AGAIN,
    DatapathError,
    InvalidEnvironment,
)
from datapath.metrics import AgentMetrics
from datapath.models import AgentReply
from datapath.status import serve_status
from ipam import IpamError, StoreUnavailable

log = logging.getLogger("stickyip.datapath")

#: one CNI command: the request object -> the result object (or None)
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class CniServer:
    """Serves CNI requests from the plugin on a unix socket (mode 0600)."""

    def __init__(self, path: str, handlers: Mapping[str, Handler], *,
                 metrics: AgentMetrics) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self.metrics = metrics
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, path=self.path)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await self.handle(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes) -> AgentReply:
        """One request line -> its reply; never raises."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return {"ok": False, "code": CNI_DECODE_FAILURE, "msg": f"cannot decode request: {e}"}
        command = str(req.get("command", ""))
        t0 = time.perf_counter()
        try:
            handler = self.handlers.get(command)
            if handler is None:
                raise InvalidEnvironment(f"unknown command {command!r}")
            result = await handler(req)
            self.metrics.requests.labels(command, "ok").inc()
            return {"ok": True, "result": result}
        except DatapathError as e:
            self.metrics.requests.labels(command, "error").inc()
            log.warning("request failed", extra={"command": command, "error": str(e),
                                                 "container": req.get("containerId")})
            return {"ok": False, "code": e.code, "msg": str(e), "details": e.details}
        except StoreUnavailable as e:
            self.metrics.requests.labels(command, "error").inc()
            return {"ok": False, "code": CNI_TRY_AGAIN, "msg": "IPAM store unavailable",
                    "details": str(e)}
        except IpamError as e:
            self.metrics.requests.labels(command, "error").inc()
            return {"ok": False, "code": CNI_INTERNAL, "msg": str(e)}
        except Exception as e:
            log.exception("request crashed", extra={"command": command})
            self.metrics.requests.labels(command, "error").inc()
            return {"ok": False, "code": CNI_INTERNAL, "msg": f"internal error: {e}"}
        finally:
            self.metrics.latency.labels(command).observe(time.perf_counter() - t0)


class StatusServer:
    """``GET /metrics``, ``GET /healthz`` (ready: started and the store answers) and
    ``GET /livez`` (alive: started and no part of the agent has died; a store outage
    must not restart every agent of a cluster, their datapath keeps forwarding)."""

    def __init__(self, host: str, port: int, *, metrics: AgentMetrics,
                 health: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]],
                 before_scrape: Callable[[], None],
                 alive: Callable[[], bool] = lambda: True) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.health = health
        self.alive = alive
        self.before_scrape = before_scrape
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = await serve_status(self.host, self.port, metrics=self._metrics,
                                          healthz=self._healthz, livez=self._livez)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        self.before_scrape()
        body = await asyncio.to_thread(generate_latest, self.metrics.registry)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _healthz(self, _: web.Request) -> web.Response:
        ok, body = await self.health()
        return web.json_response(body, status=200 if ok else 503)

    async def _livez(self, _: web.Request) -> web.Response:
        ok = self.alive()
        return web.json_response({"ok": ok}, status=200 if ok else 503)
