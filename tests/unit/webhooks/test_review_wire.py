"""AdmissionReview parsing refuses what the API server would never send, with one
line; responses carry the uid, a base64 JSON patch and short warnings."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.support.admission import review, statefulset, statefulset_pod
from webhooks.errors import BadReview
from webhooks.review import MAX_BODY, POD, STATEFULSET, Verdict, parse_review, response


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def good() -> dict[str, Any]:
    return review(statefulset_pod(statefulset("web"), 0), uid="u-1")


def test_parses_a_pod_review() -> None:
    req = parse_review(body(good()), POD)
    assert req.uid == "u-1" and req.operation == "CREATE" and req.namespace == "prod"
    assert req.name == "web-0" and not req.dry_run and req.object["kind"] == "Pod"


def mutate(path: list[str], value: Any) -> dict[str, Any]:
    doc = good()
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return doc


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "not JSON"),
    (b"{", "not JSON"),
    (b"[1,2]", "not an AdmissionReview"),
    (body({"kind": "Pod"}), "not an AdmissionReview"),
    (body(mutate(["apiVersion"], "admission.k8s.io/v1beta1")), "apiVersion"),
    (body(mutate(["request"], KeyError)), "no request"),
    (body(mutate(["request", "uid"], KeyError)), "uid is missing"),
    (body(mutate(["request", "uid"], "")), "uid is missing"),
    (body(mutate(["request", "kind"], {"group": "", "version": "v1", "kind": "Service"})),
     "judges Pod"),
    (body(mutate(["request", "operation"], "PATCH")), "operation"),
    (body(mutate(["request", "object"], None)), "no object"),
    (body(mutate(["request", "object", "kind"], "Secret")), "not a Pod"),
    (body(mutate(["request", "dryRun"], "yes")), "dryRun"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),
])
def test_bad_bodies_get_one_line_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(BadReview) as e:
        parse_review(raw, POD)
    assert reason in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_wrong_kind_for_statefulset_endpoint() -> None:
    with pytest.raises(BadReview, match="judges StatefulSet"):
        parse_review(body(good()), STATEFULSET)


def test_huge_body_is_refused() -> None:
    with pytest.raises(BadReview, match="larger than"):
        parse_review(b" " * (MAX_BODY + 1), POD)


def test_response_shape() -> None:
    patch = [{"op": "add", "path": "/metadata/annotations/stickyip.io~1ip", "value": "1.2.3.4"}]
    out = response("u-9", Verdict.allow(patch=patch, warnings=["x" * 300]))  # type: ignore[arg-type]
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    resp = out["response"]
    assert resp["uid"] == "u-9" and resp["allowed"] is True
    assert resp["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(resp["patch"])) == patch
    assert all(len(w) < 120 for w in resp["warnings"])
    assert "status" not in resp


def test_refusal_shape() -> None:
    resp = response("u-2", Verdict.refuse(409, "taken; choose another"))["response"]
    assert resp == {"uid": "u-2", "allowed": False,
                    "status": {"code": 409, "message": "taken; choose another"}}
