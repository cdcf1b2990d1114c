"""Kubernetes label selectors (matchLabels and matchExpressions). Pure."""

from __future__ import annotations

from collections.abc import Mapping

from datapath.features.policy.errors import InvalidPolicy
from datapath.features.policy.models import LabelSelector


def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """An empty selector matches everything; requirements are ANDed."""
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise InvalidPolicy(f"unknown label selector operator {op!r}")
        if not ok:
            return False
    return True
