"""docs/webhooks.md says what the rendered manifests register (issue 11.9): the table of
webhooks (names, configuration kinds, paths, operations, resources, failurePolicy,
sideEffects, timeoutSeconds) equals every overlay's rendered configurations, the
Service and namespace named are the ones called, and no other webhook name appears."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "webhooks.md").read_text()
OVERLAYS = [ROOT / "manifests", *sorted((ROOT / "manifests" / "overlays").iterdir())]


def documented() -> dict[str, dict[str, Any]]:
    """The table's rows, by webhook name."""
    start = DOC.index("## Registering the webhooks")
    section = DOC[start:DOC.index("\n## ", start + 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    out = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name, kind, path, ops, resources, _, policy, effects, timeout = cells
        out[name.strip("`")] = {
            "kind": f"{kind}WebhookConfiguration", "path": path.strip("`"),
            "operations": [o.strip() for o in ops.split(",")],
            "resources": [r.strip() for r in resources.split(",")],
            "failurePolicy": policy, "sideEffects": effects, "timeoutSeconds": int(timeout)}
    return out


def rendered(path: Path) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str, int]]]:
    hooks, services = {}, set()
    for obj in render(path):
        if not obj["kind"].endswith("WebhookConfiguration"):
            continue
        assert obj["metadata"]["name"] == "stickyip"
        for w in obj["webhooks"]:
            (rule,) = w["rules"]
            svc = w["clientConfig"]["service"]
            services.add((svc["name"], svc["namespace"], svc["port"]))
            hooks[w["name"]] = {
                "kind": obj["kind"], "path": svc["path"], "operations": rule["operations"],
                "resources": rule["resources"], "failurePolicy": w["failurePolicy"],
                "sideEffects": w["sideEffects"], "timeoutSeconds": w["timeoutSeconds"]}
    return hooks, services


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_table_is_what_is_registered(overlay: Path) -> None:
    hooks, services = rendered(overlay)
    assert documented() == hooks
    ((service, namespace, port),) = services
    assert f"Service `{service}` in namespace `{namespace}` on port\n{port}" in DOC


def test_no_other_webhook_name_or_namespace_is_named() -> None:
    hooks, _ = rendered(ROOT / "manifests")
    names = set(re.findall(r"\b[a-z][a-z-]*(?:\.[a-z-]+)*\.stickyip\.io\b", DOC))
    assert names == set(hooks)
    assert "namespace: stickyip," not in DOC and "namespace: stickyip}" not in DOC
