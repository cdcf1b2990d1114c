"""Find the Kubernetes API requests a package's source makes, statically, as
(verb, API group, resource) triples an RBAC rule must allow.

Two kinds of call are recognised:

* official client methods (``kubernetes`` / ``kubernetes_asyncio``), e.g.
  ``api.create_namespaced_pod_binding(...)``; the HTTP method and path of each
  name are read from the installed client's generated code, so every API the
  client knows is covered without a hand-written table. A ``list_*`` method
  passed as a value (``Watch().stream(api.list_namespaced_pod, ...)``) or called
  with ``watch=True`` is a watch.
* raw REST through a helper, e.g.
  ``self._call("POST", f"/api/v1/namespaces/{ns}/pods/{n}/binding")``: any
  call with an HTTP method string and a path that evaluates to ``/api/...`` or
  ``/apis/...`` through f-strings, ``+``, conditional expressions, module dicts
  (``PATHS[kind]``), same-module helper functions and method wrappers such as
  ``def get(self, path): return self._call("GET", path)``. A request with
  ``stream=True`` or a ``watch`` query is a watch. ``Reflector(rest, path, ...)``
  (plumbing's list+watch) is a list and a watch of ``path``.

Each call can resolve to several candidate requests (a path helper with an
``if name`` branch, a method name that several API groups define); a call is
allowed when at least one candidate is, so the check never fails on an
ambiguity of the analysis, only on a call that no reading makes legal.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_CLIENT_PREFIX = re.compile(
    r"^(create|read|list|patch|replace|delete|deletecollection|connect)_\w+$")


@dataclass(frozen=True)
class Request:
    verb: str          # RBAC verb: get list watch create update patch delete deletecollection
    group: str         # "" for the core group
    resource: str      # "pods", "pods/binding", "leases", ...
    namespaced: bool


@dataclass
class Call:
    where: str                   # file:line
    text: str                    # what the code says (method name or HTTP method + path)
    candidates: set[Request] = field(default_factory=set)


# ------------------------------------------------------------------ path -> request

def request_for(method: str, path: str, *, watch: bool = False) -> Request | None:
    """The RBAC request of an HTTP ``method`` on an API ``path`` template
    (``{name}``-style placeholders), or None when it is not a resource path."""
    path = path.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespaced = False
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        namespaced, rest = True, rest[2:]
    if not rest:
        return None
    resource = rest[0]
    has_name = len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    verb = {
        "GET": ("get" if has_name else ("watch" if watch else "list")),
        "POST": "create", "PUT": "update", "PATCH": "patch",
        "DELETE": "delete" if has_name else "deletecollection",
    }[method]
    if watch and method == "GET":
        verb = "watch"
    return Request(verb=verb, group=group, resource=resource, namespaced=namespaced)


# ------------------------------------------------------------------ official client

@functools.cache
def client_methods() -> dict[str, list[tuple[str, str]]]:
    """Every official client method name -> [(HTTP method, path template)], read
    from the generated sources (not imported: importing every API module is slow)."""
    spec = importlib.util.find_spec("kubernetes")
    if spec is None or spec.origin is None:
        return {}
    api_dir = Path(spec.origin).parent / "client" / "api"
    table: dict[str, list[tuple[str, str]]] = {}
    defs = re.compile(r"^    def (\w+)\(", re.M)
    new_style = re.compile(r"method='(\w+)',\s*resource_path='([^']+)'")
    old_style = re.compile(r"call_api\(\s*'([^']+)',\s*'(\w+)'")
    for f in sorted(api_dir.glob("*_api.py")):
        src = f.read_text()
        starts = [(m.start(), m.group(1)) for m in defs.finditer(src)] + [(len(src), "")]
        for (start, fname), (end, _) in itertools.pairwise(starts):
            body = src[start:end]
            if fname.startswith("_") and fname.endswith("_serialize"):
                m = new_style.search(body)
                if m:
                    table.setdefault(fname[1:-len("_serialize")], []).append(
                        (m.group(1), m.group(2)))
            elif fname.endswith("_with_http_info"):
                m = old_style.search(body)
                if m:
                    table.setdefault(fname[:-len("_with_http_info")], []).append(
                        (m.group(2), m.group(1)))
    return table


# ------------------------------------------------------------------ the scanner

class _Module:
    def __init__(self, path: Path, tree: ast.Module) -> None:
        self.path = path
        self.tree = tree
        self.dicts: dict[str, list[ast.expr]] = {}
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if isinstance(node.value, ast.Dict):
                    for t in targets:
                        if isinstance(t, ast.Name):
                            self.dicts[t.id] = [v for v in node.value.values if v is not None]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(node.name, node)

    def callee(self, func: ast.expr) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        name = func.attr if isinstance(func, ast.Attribute) else (
            func.id if isinstance(func, ast.Name) else None)
        return self.functions.get(name) if name else None


def _strings(node: ast.expr, mod: _Module, scope: ast.AST | None, depth: int = 0) -> set[str]:
    """Every string ``node`` may evaluate to (placeholders for unknown parts)."""
    if depth > 6:
        return set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.JoinedStr):
        parts = {""}
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts = {o + str(v.value) for o in parts}
            elif isinstance(v, ast.FormattedValue):
                inner = _strings(v.value, mod, scope, depth + 1) or {"{x}"}
                parts = {o + i for o in parts for i in inner}
        return parts
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _strings(node.left, mod, scope, depth + 1)
        right = _strings(node.right, mod, scope, depth + 1)
        return {a + b for a in left for b in right}
    if isinstance(node, ast.IfExp):
        return (_strings(node.body, mod, scope, depth + 1)
                | _strings(node.orelse, mod, scope, depth + 1))
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        return {s for v in mod.dicts.get(node.value.id, [])
                for s in _strings(v, mod, scope, depth + 1)}
    if isinstance(node, ast.Name) and scope is not None:
        out: set[str] = set()
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == node.id for t in n.targets):
                out |= _strings(n.value, mod, scope, depth + 1)
        return out
    if isinstance(node, ast.Call):
        fn = mod.callee(node.func)
        if fn is not None:
            out = set()
            for n in ast.walk(fn):
                if isinstance(n, ast.Return) and n.value is not None:
                    out |= _strings(n.value, mod, fn, depth + 1)
            return out
    return set()


def _is_watch(call: ast.Call) -> bool:
    """A raw request that streams (``stream=True``) or asks for ``watch``."""
    for kw in call.keywords:
        if kw.arg in ("stream", "watch") and isinstance(kw.value, ast.Constant) and (
                kw.value.value is True):
            return True
        if kw.arg in ("query", "query_params", "params") and "watch" in ast.unparse(kw.value):
            return True
    return False


def _wrappers(mod: _Module) -> dict[str, str]:
    """Functions that issue one HTTP method on a path parameter: name -> method."""
    out: dict[str, str] = {}
    for name, fn in mod.functions.items():
        params = {a.arg for a in fn.args.args}
        for n in ast.walk(fn):
            if isinstance(n, ast.Call) and len(n.args) >= 2 and isinstance(
                    n.args[0], ast.Constant) and n.args[0].value in HTTP_METHODS and isinstance(
                    n.args[1], ast.Name) and n.args[1].id in params:
                out[name] = str(n.args[0].value)
    return out


def _makes_api(node: ast.expr) -> bool:
    """``client.CoreV1Api(...)``, ``CoreV1Api(...)``."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) else "")
    return name.endswith("Api")


def scan_source(path: Path, text: str) -> list[Call]:
    tree = ast.parse(text)
    mod = _Module(path, tree)
    wrappers = _wrappers(mod)
    methods = None
    calls: list[Call] = []
    # Enclosing function of every node, for local names.
    parent_fn: dict[ast.AST, ast.AST] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for n in ast.walk(fn):
                parent_fn[n] = fn
    # Receivers that hold an API object: x = client.CoreV1Api(...), self.x = ...,
    # parameters annotated ...Api. Methods of other objects that happen to share
    # a client method's name (self.policy.delete_namespace) are not requests.
    api_objects: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _makes_api(node.value):
            api_objects |= {ast.unparse(t) for t in node.targets}
        if isinstance(node, ast.arg) and node.annotation is not None and ast.unparse(
                node.annotation).split(".")[-1].strip("'\"").endswith("Api"):
            api_objects.add(node.arg)
    called_attrs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called_attrs.add(id(node.func))
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        scope = parent_fn.get(node)
        # Official client methods.
        if isinstance(node, ast.Attribute) and _CLIENT_PREFIX.match(node.attr) and (
                _makes_api(node.value) or ast.unparse(node.value) in api_objects
                or "api" in ast.unparse(node.value).lower()):
            if methods is None:
                methods = client_methods()
            routes = methods.get(node.attr)
            if routes:
                # A list method handed over as a value is a watch's list function.
                as_value = id(node) not in called_attrs and node.attr.startswith("list_")
                call_node = next((c for c in ast.walk(tree) if isinstance(c, ast.Call)
                                  and c.func is node), None)
                watch = as_value or (call_node is not None and any(
                    kw.arg == "watch" and isinstance(kw.value, ast.Constant)
                    and kw.value.value is True for kw in call_node.keywords))
                # An informer lists, then watches: both must be allowed.
                for as_watch in ((False, True) if watch else (False,)):
                    c = Call(where, node.attr + (" (watch)" if as_watch else ""))
                    for http, p in routes:
                        r = request_for(http, p, watch=as_watch)
                        if r is not None:
                            c.candidates.add(r)
                    if c.candidates:
                        calls.append(c)
            continue
        if not isinstance(node, ast.Call):
            continue
        # Raw REST: ("METHOD", path) or a wrapper(path).
        method: str | None = None
        path_expr: ast.expr | None = None
        reflects = False
        if len(node.args) >= 2 and isinstance(node.args[0], ast.Constant) and (
                node.args[0].value in HTTP_METHODS):
            method, path_expr = str(node.args[0].value), node.args[1]
        else:
            fname = node.func.attr if isinstance(node.func, ast.Attribute) else (
                node.func.id if isinstance(node.func, ast.Name) else "")
            if fname in wrappers and node.args:
                method, path_expr = wrappers[fname], node.args[0]
            elif fname == "Reflector" and len(node.args) >= 2:
                # plumbing.kube.watch.Reflector(rest, path, sink): lists, then watches.
                method, path_expr, reflects = "GET", node.args[1], True
        if method is None or path_expr is None:
            continue
        watch = _is_watch(node)
        # Each value of a module dict (PATHS[kind]) is a request of its own; the
        # branches of an expression (``a if name else b``) are alternatives.
        if isinstance(path_expr, ast.Subscript) and isinstance(path_expr.value, ast.Name) and (
                path_expr.value.id in mod.dicts):
            groups = [_strings(v, mod, scope) for v in mod.dicts[path_expr.value.id]]
        else:
            groups = [_strings(path_expr, mod, scope)]
        for paths, as_watch in itertools.product(groups, (False, True) if reflects
                                                  else (watch,)):
            paths = {p for p in paths if p.startswith("/api")}
            c = Call(where, f"{method} {' | '.join(sorted(paths))}"
                     + (" (watch)" if reflects and as_watch else ""))
            for p in paths:
                r = request_for(method, p, watch=as_watch)
                if r is not None:
                    c.candidates.add(r)
            if c.candidates:
                calls.append(c)
    return calls


def scan_package(root: Path) -> list[Call]:
    out: list[Call] = []
    for f in sorted(root.rglob("*.py")):
        out.extend(scan_source(f, f.read_text()))
    return out


# ------------------------------------------------------------------ RBAC

@dataclass(frozen=True)
class Rule:
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    named_only: bool        # resourceNames restricts it to named objects
    cluster_wide: bool      # from a ClusterRole bound by a ClusterRoleBinding


def rules_for(objs: list[dict[str, Any]], namespace: str,
              service_account: str) -> list[Rule]:
    """The rules granted to ``namespace/service_account`` by the rendered objects."""
    def subject_matches(b: dict[str, Any]) -> bool:
        return any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account
                   and s.get("namespace", b["metadata"].get("namespace")) == namespace
                   for s in b.get("subjects") or [])

    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objs if o["kind"] in ("Role", "ClusterRole")}
    out: list[Rule] = []
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding") or not subject_matches(b):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        role = roles.get((ref["kind"], ns, ref["name"]))
        if role is None:
            continue
        cluster_wide = b["kind"] == "ClusterRoleBinding"
        for r in role.get("rules") or []:
            out.append(Rule(frozenset(r.get("apiGroups") or []),
                            frozenset(r.get("resources") or []),
                            frozenset(r.get("verbs") or []),
                            bool(r.get("resourceNames")), cluster_wide))
    return out


def allows(rules: list[Rule], req: Request) -> bool:
    for r in rules:
        if req.group not in r.groups or req.resource not in r.resources:
            continue
        if req.verb not in r.verbs:
            continue
        if r.named_only and req.verb in ("list", "watch", "create", "deletecollection"):
            continue
        if not r.cluster_wide and not req.namespaced:
            continue
        return True
    return False


def denied(calls: list[Call], rules: list[Rule]) -> list[Call]:
    """The calls none of whose candidate requests the rules allow."""
    return [c for c in calls if not any(allows(rules, r) for r in c.candidates)]
