"""The AdmissionReview ``admission.k8s.io/v1`` wire format: typed shapes, strict
parsing of what the API server sends, and building of what it expects back.

Pure: no I/O. Parsing raises :class:`BadReview` with a one-line reason (HTTP 400).
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from webhooks.errors import BadReview

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
#: The API server refuses larger objects itself (etcd's request limit is ~1.5 MiB,
#: its own request body limit 3 MiB); a bigger body is not from it.
MAX_BODY = 3 * 1024 * 1024
MAX_WARNING = 119

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
_OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class StatusDetails(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponseWire(TypedDict):
    uid: str
    allowed: bool
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    status: NotRequired[StatusDetails]
    warnings: NotRequired[list[str]]


class AdmissionReviewWire(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponseWire


def mapping(obj: Any, *path: str) -> dict[str, Any]:
    """``obj[path...]`` of Kubernetes JSON when every step is a mapping, else an
    empty mapping (admission objects may lack any field)."""
    cur = obj
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur if isinstance(cur, dict) else {}


class PatchOp(TypedDict):
    """One RFC 6902 operation (only the ones we emit)."""

    op: Literal["add", "replace", "remove", "test"]
    path: str
    value: NotRequired[Any]


@dataclass(frozen=True, slots=True)
class Expected:
    """Which resource an endpoint judges."""

    group: str
    kind: str
    resource: str


POD = Expected(group="", kind="Pod", resource="pods")
STATEFULSET = Expected(group="apps", kind="StatefulSet", resource="statefulsets")
#: ``statefulsets/scale`` (``kubectl scale``, autoscalers): an autoscaling/v1 Scale.
SCALE = Expected(group="autoscaling", kind="Scale", resource="statefulsets")


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The parts of an AdmissionRequest the decisions need, already checked."""

    uid: str
    operation: Operation
    namespace: str
    name: str
    object: dict[str, Any]
    old_object: dict[str, Any] | None
    dry_run: bool
    kind: str = ""
    sub_resource: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a decision says: allow (maybe with a patch) or refuse with a reason."""

    allowed: bool
    patch: tuple[PatchOp, ...] = ()
    code: int = 200
    message: str = ""
    warnings: tuple[str, ...] = ()

    @classmethod
    def allow(cls, patch: list[PatchOp] | tuple[PatchOp, ...] = (),
              warnings: list[str] | tuple[str, ...] = ()) -> Verdict:
        return cls(allowed=True, patch=tuple(patch), warnings=tuple(warnings))

    @classmethod
    def refuse(cls, code: int, message: str,
               warnings: list[str] | tuple[str, ...] = ()) -> Verdict:
        return cls(allowed=False, code=code, message=message, warnings=tuple(warnings))


@functools.lru_cache(maxsize=1024)
def pointer(*tokens: str) -> str:
    """An RFC 6901 JSON pointer: ``~`` becomes ``~0`` and ``/`` becomes ``~1``.
    (Cached: the same few paths are built for every pod.)"""
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def warning(text: str) -> str:
    """The API server drops over-long warnings; keep each under 120 characters."""
    one = " ".join(text.split())
    return one if len(one) <= MAX_WARNING else one[: MAX_WARNING - 3] + "..."


def _str(d: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    v = d.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str):
        raise BadReview(f"{where}.{key} must be a string")
    return v


def parse_review(body: bytes, expected: Expected, *also: Expected) -> AdmissionRequest:
    """Parse and check one AdmissionReview request for ``expected`` (or ``also``) objects."""
    if len(body) > MAX_BODY:
        raise BadReview(f"request body is larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        reason = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise BadReview(f"body is not JSON: {reason}") from None
    if not isinstance(doc, dict):
        raise BadReview("body is not an AdmissionReview (expected a JSON object)")
    if doc.get("kind") != KIND:
        raise BadReview(f"body is not an AdmissionReview (kind {_short(doc.get('kind'))})")
    if doc.get("apiVersion") != API_VERSION:
        raise BadReview(f"unsupported apiVersion {_short(doc.get('apiVersion'))}; "
                        f"configure admissionReviewVersions: [v1]")
    req = doc.get("request")
    if not isinstance(req, dict):
        raise BadReview("AdmissionReview has no request object")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("AdmissionReview request.uid is missing")
    kind = req.get("kind")
    if not isinstance(kind, dict):
        raise BadReview("AdmissionReview request.kind is missing")
    match = next((e for e in (expected, *also)
                  if kind.get("group", "") == e.group and kind.get("kind") == e.kind), None)
    if match is None:
        raise BadReview(f"this endpoint judges {expected.kind} objects, got "
                        f"{_short(kind.get('kind'))} of group {_short(kind.get('group', ''))}")
    expected = match
    sub = req.get("subResource") or ""
    if not isinstance(sub, str):
        raise BadReview("request.subResource must be a string")
    op = req.get("operation")
    if op not in _OPERATIONS:
        raise BadReview(f"unknown operation {_short(op)}")
    namespace = _str(req, "namespace", "request", required=False)
    name = _str(req, "name", "request", required=False)
    obj = req.get("object")
    if op in ("CREATE", "UPDATE"):
        if not isinstance(obj, dict):
            raise BadReview(f"{op} request has no object")
        if obj.get("kind", expected.kind) != expected.kind:
            raise BadReview(f"request.object is a {_short(obj.get('kind'))}, "
                            f"not a {expected.kind}")
        for part in ("metadata", "spec"):
            if obj.get(part) is not None and not isinstance(obj.get(part), dict):
                raise BadReview(f"request.object.{part} must be an object")
    elif not isinstance(obj, dict):
        obj = {}
    old = req.get("oldObject")
    if op == "UPDATE" and not isinstance(old, dict):
        raise BadReview("UPDATE request has no oldObject")
    if old is not None and not isinstance(old, dict):
        raise BadReview("request.oldObject must be an object")
    dry = req.get("dryRun", False)
    if dry is None:
        dry = False
    if not isinstance(dry, bool):
        raise BadReview("request.dryRun must be a boolean")
    return AdmissionRequest(uid=uid, operation=op, namespace=namespace, name=name,
                            object=obj, old_object=old, dry_run=dry, kind=expected.kind,
                            sub_resource=sub)


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def response(uid: str, verdict: Verdict) -> AdmissionReviewWire:
    """The AdmissionReview the API server expects back for ``verdict``."""
    resp: AdmissionResponseWire = {"uid": uid, "allowed": verdict.allowed}
    if verdict.allowed and verdict.patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(
            json.dumps(list(verdict.patch), separators=(",", ":")).encode()).decode()
    if not verdict.allowed:
        resp["status"] = {"code": verdict.code, "message": verdict.message}
    if verdict.warnings:
        resp["warnings"] = [warning(w) for w in verdict.warnings]
    return {"apiVersion": API_VERSION, "kind": KIND, "response": resp}
