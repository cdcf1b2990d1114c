"""The stand-in's patch semantics (pure functions): JSON merge patch, the simplified
strategic merge patch, JSON patch, and refused content types."""

from __future__ import annotations

from typing import Any

import pytest

from kubestandin.errors import Invalid, UnsupportedMediaType
from kubestandin.patching import (
    APPLY,
    JSON_PATCH,
    MERGE,
    STRATEGIC,
    apply_patch,
    merge_patch,
    strategic_merge_patch,
)

POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x/one"]},
    "spec": {"containers": [{"name": "main", "image": "i:1"},
                            {"name": "side", "image": "s:1"}],
             "tolerations": [{"key": "k", "operator": "Exists"}]},
    "status": {"conditions": [{"type": "Ready", "status": "False"},
                              {"type": "PodScheduled", "status": "True"}]},
}


def test_merge_patch_replaces_lists_and_null_deletes() -> None:
    out = merge_patch(POD, {"metadata": {"labels": {"a": None, "b": "2"}},
                            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert out["metadata"]["labels"] == {"b": "2"}
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert POD["metadata"]["labels"] == {"a": "1"}  # the input is not modified


def test_strategic_merge_merges_keyed_lists_and_honours_delete() -> None:
    out = strategic_merge_patch(POD, {
        "spec": {"containers": [{"name": "main", "image": "i:2"},
                                {"name": "side", "$patch": "delete"},
                                {"name": "new", "image": "n:1"}],
                 "tolerations": [{"key": "other", "operator": "Exists"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        "metadata": {"finalizers": ["x/two"]},
    })
    assert out["spec"]["containers"] == [{"name": "main", "image": "i:2"},
                                         {"name": "new", "image": "n:1"}]
    # tolerations have no merge key in the stand-in: replaced, as with a merge patch
    assert out["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"},
                                           {"type": "PodScheduled", "status": "True"}]
    assert out["metadata"]["finalizers"] == ["x/one", "x/two"]
    replaced = strategic_merge_patch(POD, {"metadata": {"$patch": "replace", "name": "q"}})
    assert replaced["metadata"] == {"name": "q"}


def test_apply_patch_dispatches_on_content_type() -> None:
    assert apply_patch(MERGE + "; charset=utf-8", POD, {"spec": None}).get("spec") is None
    assert apply_patch(STRATEGIC, POD, {"metadata": {"labels": {"c": "3"}}})[
        "metadata"]["labels"] == {"a": "1", "c": "3"}
    out = apply_patch(JSON_PATCH, POD, [{"op": "replace", "path": "/metadata/name",
                                         "value": "z"}])
    assert out["metadata"]["name"] == "z"
    with pytest.raises(Invalid):
        apply_patch(JSON_PATCH, POD, [{"op": "remove", "path": "/nope"}])
    with pytest.raises(UnsupportedMediaType):
        apply_patch(APPLY, POD, {})
    with pytest.raises(UnsupportedMediaType):
        apply_patch("text/plain", POD, {})
