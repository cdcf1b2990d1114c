"""The three PATCH flavours kube-apiserver accepts for built-in types (pure functions)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from kubestandin.errors import BadRequest, Invalid, UnsupportedMediaType

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

# patchMergeKey of the list fields a scheduler, kubelet or controller typically patches;
# other lists are replaced whole, as with a JSON merge patch.
MERGE_KEYS: dict[str, str] = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ownerReferences": "uid",
    "addresses": "type",
    "containerStatuses": "name",
    "imagePullSecrets": "name",
}
# Primitive lists that strategic merge unions instead of replacing.
SET_LISTS = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch, simplified: maps merge as in a merge patch; the well-known
    keyed lists (``MERGE_KEYS``) merge element-wise by key and honour ``$patch: delete``,
    ``finalizers`` unions; every other list is replaced."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge_patch(out.get(key), value, key)
        return out
    if isinstance(patch, list) and isinstance(target, list):
        mkey = MERGE_KEYS.get(field)
        if mkey and all(isinstance(e, dict) and mkey in e for e in patch + target):
            merged = [copy.deepcopy(e) for e in target]
            for elem in patch:
                idx = next((i for i, e in enumerate(merged) if e[mkey] == elem[mkey]), None)
                if elem.get("$patch") == "delete":
                    if idx is not None:
                        merged.pop(idx)
                elif idx is None:
                    merged.append(copy.deepcopy(elem))
                else:
                    merged[idx] = strategic_merge_patch(merged[idx], elem, "")
            return merged
        if field in SET_LISTS:
            return list(target) + [e for e in patch if e not in target]
    return copy.deepcopy(patch)


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply ``patch`` of the given Content-Type to a copy of ``target``."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == JSON_PATCH:
        if not isinstance(patch, list):
            raise BadRequest("a JSON patch must be a list of operations")
        try:
            result = jsonpatch.apply_patch(target, patch, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise Invalid(f"json patch failed: {e}") from e
    elif ctype == MERGE:
        result = merge_patch(target, patch)
    elif ctype == STRATEGIC:
        result = strategic_merge_patch(target, patch)
    elif ctype.startswith("application/apply-patch"):
        raise UnsupportedMediaType("server-side apply is not supported by the stand-in")
    else:
        raise UnsupportedMediaType(f"unsupported patch type {content_type!r}")
    if not isinstance(result, dict):
        raise Invalid("the patched object is not a JSON object")
    return result
