"""Rendered manifests shared by the manifest tests: rendered once per session by the
real kustomize (tests/support/kustomize.py), as ``kubectl apply -k`` would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.kustomize import render

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"

#: Every kustomization an administrator may apply, by name.
KUSTOMIZATIONS = {
    "default": MANIFESTS,
    "base": MANIFESTS / "base",
    "self-signed": MANIFESTS / "overlays" / "self-signed",
    "sentinel": MANIFESTS / "overlays" / "sentinel",
    "extender": MANIFESTS / "overlays" / "extender",
    "bgp": MANIFESTS / "overlays" / "bgp",
    "monitoring": MANIFESTS / "monitoring",
}
#: The ones that install stickyip itself (monitoring comes on top).
INSTALLS = ("default", "base", "self-signed", "sentinel", "extender", "bgp")

_cache: dict[str, list[dict[str, Any]]] = {}


def rendered(name: str) -> list[dict[str, Any]]:
    if name not in _cache:
        _cache[name] = render(KUSTOMIZATIONS[name])
    return _cache[name]


@pytest.fixture(params=INSTALLS)
def install(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(name, objects) of each installable kustomization."""
    return request.param, rendered(request.param)


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def find_prefix(objs: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    """A generated object (name plus hash suffix)."""
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(hits) == 1, f"expected one {kind}/{prefix}*, found {len(hits)}"
    return hits[0]


def agent_cni_install(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(pod spec, init container, conflist text) of the agent's CNI install step."""
    pod: dict[str, Any] = find(objs, "DaemonSet", "stickyip-agent")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (cm_vol,) = [v for v in pod["volumes"] if "configMap" in v]
    conflist: str = find(objs, "ConfigMap", cm_vol["configMap"]["name"])["data"][
        "10-stickyip.conflist"]
    return pod, init, conflist
