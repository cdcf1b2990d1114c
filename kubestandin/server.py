"""HTTP layer of the stand-in: kube-apiserver's URL layout, discovery documents, JSON
Status errors, list with resourceVersion/limit/continue, and chunked watch streams."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kubestandin import patching
from kubestandin.apiserver import ApiCore
from kubestandin.errors import BadRequest, Gone, MethodNotAllowed, NotFound, StandInError
from kubestandin.resources import BY_PATH, RESOURCES, Resource, groups
from kubestandin.selectors import (
    Requirement,
    match_fields,
    match_labels,
    parse_field_selector,
    parse_label_selector,
)
from kubestandin.store import Event, Obj

log = logging.getLogger("stickyip.kubestandin")

VERSION_INFO = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0-stickyip-standin",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc",
    "platform": "linux/amd64",
}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Target:
    """What a URL addresses: a resource, maybe a namespace, an object and a subresource."""

    resource: Resource
    namespace: str  # "" = all namespaces (or cluster-scoped)
    name: str
    subresource: str


@dataclass(frozen=True)
class Filter:
    resource: Resource
    namespace: str
    labels: tuple[Requirement, ...]
    fields: tuple[Requirement, ...]

    def matches(self, obj: Obj) -> bool:
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return match_labels(self.labels, obj["metadata"].get("labels")) and \
            match_fields(self.fields, obj)

    def translate(self, ev: Event) -> tuple[str, Obj] | None:
        """The event a watcher with this filter sees; objects entering or leaving the
        selection appear as ADDED or DELETED, as kube-apiserver's watch cache reports."""
        if ev.resource != self.resource:
            return None
        now = self.matches(ev.obj)
        if ev.type != "MODIFIED":
            return (ev.type, ev.obj) if now else None
        before = ev.old is not None and self.matches(ev.old)
        if now and before:
            return "MODIFIED", ev.obj
        if now:
            return "ADDED", ev.obj
        if before:
            return "DELETED", ev.obj
        return None


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json")


def _strip(obj: Obj) -> Obj:
    """List items carry no kind/apiVersion, as in kube-apiserver's list responses."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class ApiHttp:
    """The aiohttp application serving an ``ApiCore``."""

    def __init__(self, core: ApiCore, *, bookmark_interval: float = 1.0) -> None:
        self.core = core
        self.bookmark_interval = bookmark_interval
        self.stopping = asyncio.Event()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # ------------------------------------------------------------ dispatch
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except StandInError as e:
            return _json(e.status(), e.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # an unexpected bug must surface as a 500, not a hang
            log.exception("stand-in failed on %s %s", request.method, request.path)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Failure", "message": f"stand-in bug: {e!r}",
                          "reason": "InternalError", "code": 500}, 500)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return _json({"paths": ["/api", "/api/v1", "/apis", "/version", "/healthz"]})
        if parts[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if parts == ["version"]:
            return _json(VERSION_INFO)
        if parts[0] == "api":
            if len(parts) == 1:
                host = request.host
                return _json({"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [
                                  {"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return _json(self._group_list())
            if len(parts) == 2:
                return _json(self._group(parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise NotFound("the server could not find the requested resource")
        if not rest:
            return _json(self._resource_list(group, version))
        if "dryRun" in request.query:
            raise BadRequest("dryRun is not supported by the stand-in")
        watch = _truthy(request.query.get("watch"))
        if rest[0] == "watch":  # the deprecated /watch/ path prefix
            watch, rest = True, rest[1:]
        target = self._target(group, version, rest)
        if target.name:
            return await self._object(request, target)
        return await self._collection(request, target, watch)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        def lookup(plural: str) -> Resource:
            res = BY_PATH.get((group, version, plural))
            if res is None:
                raise NotFound("the server could not find the requested resource")
            return res

        if len(rest) >= 3 and rest[0] == "namespaces" and \
                (group, version, rest[2]) in BY_PATH:
            res = lookup(rest[2])
            if not res.namespaced:
                raise NotFound("the server could not find the requested resource")
            name = rest[3] if len(rest) > 3 else ""
            sub = rest[4] if len(rest) > 4 else ""
            if len(rest) > 5:
                raise NotFound("the server could not find the requested resource")
            return Target(res, rest[1], name, sub)
        res = lookup(rest[0])
        if len(rest) > 3:
            raise NotFound("the server could not find the requested resource")
        return Target(res, "", rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2
                      else "")

    # ---------------------------------------------------------- discovery
    def _group_list(self) -> Obj:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._group(g) for g in groups() if g]}

    def _group(self, group: str) -> Obj:
        versions = groups().get(group)
        if not group or not versions:
            raise NotFound("the server could not find the requested resource")
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs,
                "preferredVersion": vs[0]}

    def _resource_list(self, group: str, version: str) -> Obj:
        items: list[Obj] = []
        for r in RESOURCES:
            if r.group != group or r.version != version:
                continue
            items.append({"name": r.plural, "singularName": r.singular,
                          "namespaced": r.namespaced, "kind": r.kind, "verbs": _VERBS,
                          "shortNames": list(r.short_names)})
            for sub in sorted(r.subresources):
                kind = {"binding": "Binding", "scale": "Scale"}.get(sub, r.kind)
                verbs = ["create"] if sub == "binding" else ["get", "patch", "update"]
                items.append({"name": f"{r.plural}/{sub}", "singularName": "",
                              "namespaced": r.namespaced, "kind": kind, "verbs": verbs})
        if not items:
            raise NotFound("the server could not find the requested resource")
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": items}

    # --------------------------------------------------------- collection
    async def _collection(self, request: web.Request, t: Target,
                          watch: bool) -> web.StreamResponse:
        q = request.query
        flt = Filter(t.resource, t.namespace, parse_label_selector(q.get("labelSelector")),
                     parse_field_selector(q.get("fieldSelector")))
        if request.method == "GET":
            if watch:
                return await self._watch(request, flt)
            try:
                limit = int(q.get("limit") or 0)
            except ValueError:
                raise BadRequest(f"invalid limit {q.get('limit')!r}") from None
            return _json(self._list(flt, limit, q.get("continue")))
        if request.method == "POST":
            if not t.resource.namespaced and t.namespace:
                raise NotFound("the server could not find the requested resource")
            body = await self._body(request)
            created = await self.core.create(t.resource, body, t.namespace)
            return _json(created, 201)
        if request.method == "DELETE":
            options = await self._delete_options(request)
            deleted = [self.core.delete(t.resource, o["metadata"].get("namespace", ""),
                                        o["metadata"]["name"], options)
                       for o in list(self.core.store.iter(t.resource, t.namespace or None))
                       if flt.matches(o)]
            return _json({"kind": f"{t.resource.kind}List", "apiVersion":
                          t.resource.api_version, "metadata": {
                              "resourceVersion": str(self.core.store.rv)},
                          "items": [_strip(o) for o in deleted]})
        raise MethodNotAllowed(f"{request.method} is not allowed on a collection")

    def _list(self, flt: Filter, limit: int, cont: str | None) -> Obj:
        rv = str(self.core.store.rv)
        after = None
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                after = (token["ns"], token["name"])
                rv = token["rv"]
            except (ValueError, KeyError) as e:
                raise BadRequest("invalid continue token") from e
        items: list[Obj] = []
        more = False
        for o in self.core.store.iter(flt.resource, flt.namespace or None, after=after):
            if not flt.matches(o):
                continue
            if 0 < limit == len(items):
                more = True  # one more exists: a page costs its size, not the collection
                break
            items.append(o)
        meta: Obj = {"resourceVersion": rv}
        if more:
            last = items[-1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"ns": last.get("namespace", ""), "name": last["name"], "rv": rv}
            ).encode()).decode()
            if not flt.labels and not flt.fields:  # kube-apiserver omits it with selectors
                meta["remainingItemCount"] = self.core.store.count_after(
                    flt.resource, flt.namespace or None,
                    (last.get("namespace", ""), last["name"]))
        return {"kind": f"{flt.resource.kind}List", "apiVersion": flt.resource.api_version,
                "metadata": meta, "items": [_strip(o) for o in items]}

    # -------------------------------------------------------------- watch
    async def _watch(self, request: web.Request, flt: Filter) -> web.StreamResponse:
        q = request.query
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        timeout = q.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        store = self.core.store
        queue = store.subscribe()
        try:
            rv_param = q.get("resourceVersion", "")
            if rv_param in ("", "0"):
                first = [Event("ADDED", store.rv, flt.resource, o, None)
                         for o in store.iter(flt.resource, flt.namespace or None)]
            else:
                try:
                    first = store.events_after(int(rv_param))
                except ValueError:
                    raise BadRequest(f"invalid resourceVersion {rv_param!r}") from None
                except Gone as e:
                    await self._send(resp, "ERROR", e.status())
                    return resp
            last = store.rv
            for ev in first:
                if out := flt.translate(ev):
                    await self._send(resp, *out)
            last_bookmark = loop.time()
            while not self.stopping.is_set():
                if request.transport is None or request.transport.is_closing():
                    break
                wait = 0.1  # also how soon a closed client or a stopping server is noticed
                if deadline is not None:
                    if loop.time() >= deadline:
                        break
                    wait = min(wait, deadline - loop.time())
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=max(wait, 0.0))
                except TimeoutError:
                    if bookmarks and queue.empty() and \
                            loop.time() - last_bookmark >= self.bookmark_interval:
                        last_bookmark = loop.time()
                        await self._send(resp, "BOOKMARK", {
                            "kind": flt.resource.kind, "apiVersion": flt.resource.api_version,
                            "metadata": {"resourceVersion": str(store.rv)}})
                    continue
                if ev.rv <= last:
                    continue
                if out := flt.translate(ev):
                    await self._send(resp, *out)
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
        except ConnectionError:
            pass  # the watcher went away
        finally:
            store.unsubscribe(queue)
        return resp

    @staticmethod
    async def _send(resp: web.StreamResponse, etype: str, obj: Obj) -> None:
        await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")

    # ------------------------------------------------------------- object
    async def _object(self, request: web.Request, t: Target) -> web.StreamResponse:
        core, res, ns, name, sub = self.core, t.resource, t.namespace, t.name, t.subresource
        if res.namespaced and not ns:
            raise NotFound("the server could not find the requested resource")
        if sub and sub not in res.subresources:
            raise NotFound(f"the server could not find the requested resource "
                           f"({res.plural}/{sub})")
        m = request.method
        if sub == "binding":
            if m != "POST":
                raise MethodNotAllowed("pods/binding only supports create")
            return _json(core.bind(ns, name, await self._body(request)), 201)
        if sub == "scale":
            if m == "GET":
                return _json(core.get_scale(res, ns, name))
            if m == "PUT":
                return _json(core.update_scale(res, ns, name, await self._body(request)))
            if m == "PATCH":
                return _json(core.patch(res, ns, name, await self._body(request),
                                        request.headers.get("Content-Type", ""), "scale"))
            raise MethodNotAllowed(f"{m} is not allowed on {res.plural}/scale")
        if m == "GET":
            return _json(core.get(res, ns, name))
        if m == "PUT":
            return _json(core.update(res, ns, name, await self._body(request), sub))
        if m == "PATCH":
            return _json(core.patch(res, ns, name, await self._body(request),
                                    request.headers.get("Content-Type",
                                                        patching.STRATEGIC), sub))
        if m == "DELETE" and not sub:
            return _json(core.delete(res, ns, name, await self._delete_options(request)))
        raise MethodNotAllowed(f"{m} is not allowed here")

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw) if raw else {}
        except ValueError as e:
            raise BadRequest(f"the request body is not JSON: {e}") from e

    async def _delete_options(self, request: web.Request) -> Obj:
        body = await self._body(request)
        options: Obj = body if isinstance(body, dict) else {}
        for key in ("propagationPolicy", "gracePeriodSeconds"):
            if key in request.query:
                options.setdefault(key, request.query[key])
        return options
