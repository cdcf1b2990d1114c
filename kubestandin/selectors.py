"""Label and field selectors with kube-apiserver's query-string syntax (pure matching code)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubestandin.errors import BadRequest

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\((.*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*(.*?)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    """One clause: ``key op values`` where op is =, !=, in, notin, exists, !exists."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None) -> bool:
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        # != and notin also match objects that lack the key, as in kube-apiserver.
        return value is None or value not in self.values


def _split_clauses(text: str) -> list[str]:
    """Split on commas that are not inside an ``in (...)`` value set."""
    clauses: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            clauses.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    clauses.append("".join(cur))
    return [c for c in clauses if c.strip()]


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse ``a=b,c!=d,e in (f,g),h notin (i),j,!k``; raises BadRequest on bad syntax."""
    if not text:
        return ()
    reqs: list[Requirement] = []
    for clause in _split_clauses(text):
        if m := _SET_RE.match(clause):
            values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(3), values))
        elif m := _CMP_RE.match(clause):
            op = "=" if m.group(3) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, frozenset({m.group(4)})))
        elif m := _EXISTS_RE.match(clause):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise BadRequest(f"unable to parse requirement: {clause!r}")
    return tuple(reqs)


def parse_field_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse ``metadata.name=x,spec.nodeName!=`` (fields support =, == and != only)."""
    if not text:
        return ()
    reqs: list[Requirement] = []
    for clause in _split_clauses(text):
        m = _CMP_RE.match(clause)
        if not m:
            raise BadRequest(f"invalid field selector: {clause!r}")
        op = "=" if m.group(3) in ("=", "==") else "!="
        reqs.append(Requirement(m.group(1), op, frozenset({m.group(4)})))
    return tuple(reqs)


def match_labels(reqs: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels.get(r.key)) for r in reqs)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """A field's value as a selector sees it: missing fields read as the empty string."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return ""
        cur = cur[part]
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def match_fields(reqs: tuple[Requirement, ...], obj: Mapping[str, Any]) -> bool:
    # Fields always "exist" (as ""), so spec.nodeName= selects unbound pods.
    return all(r.matches(field_value(obj, r.key)) for r in reqs)


def selector_from_match_labels(match_labels_: Mapping[str, str]) -> str:
    """The query-string form of a ``matchLabels`` map (as Scale.status.selector shows it)."""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels_.items()))


def match_label_selector_object(selector: Mapping[str, Any] | None,
                                labels: Mapping[str, str] | None) -> bool:
    """Match a ``metav1.LabelSelector`` object (matchLabels + matchExpressions)."""
    if selector is None:
        return True
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    ops: dict[str, Callable[[str | None, frozenset[str]], bool]] = {
        "In": lambda v, s: v is not None and v in s,
        "NotIn": lambda v, s: v is None or v not in s,
        "Exists": lambda v, s: v is not None,
        "DoesNotExist": lambda v, s: v is None,
    }
    for expr in selector.get("matchExpressions") or []:
        fn = ops.get(expr.get("operator", ""))
        if fn is None or not fn(labels.get(expr["key"]), frozenset(expr.get("values") or ())):
            return False
    return True
