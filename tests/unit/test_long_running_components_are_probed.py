"""Every long-running container the manifests deploy, in every overlay, has a readiness
and a liveness probe (issue 11.4); a stickyip component's probes ask a path it serves,
on a port the container declares, and its liveness never depends on the store (a
Redis outage must not restart every webhook and scheduler)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.kustomize import render

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
#: Every kustomization that deploys workloads (monitoring/ holds only rules).
KUSTOMIZATIONS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml")
                        if p.parent.name != "monitoring")

#: What each component serves for probes (webhooks/server.py, scheduler/app.py,
#: datapath/server.py, datapath/feed.py), and which answer without asking the store.
SERVED = {"webhook": {"/healthz", "/readyz", "/metrics"},
          "scheduler": {"/healthz", "/readyz", "/metrics"},
          "agent": {"/healthz", "/livez", "/metrics"},
          "feed": {"/healthz", "/livez", "/metrics"}}
STORE_FREE = {"webhook": {"/healthz"}, "scheduler": {"/healthz"}, "agent": {"/livez"},
              "feed": {"/livez"}}


def command_of(container: dict[str, Any]) -> str | None:
    if container.get("command") != ["stickyip"]:
        return None
    return next((a for a in container.get("args", []) if not a.startswith("-")), None)


def declares(container: dict[str, Any], port: object) -> bool:
    ports = container.get("ports") or []
    return any(port in (p.get("name"), p.get("containerPort")) for p in ports)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS,
                         ids=[str(k.relative_to(MANIFESTS)) or "." for k in KUSTOMIZATIONS])
def test_every_long_running_container_is_probed(kustomization: Path) -> None:
    seen = set()
    for obj in render(kustomization):
        if obj["kind"] not in WORKLOADS:
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']} container {c['name']}"
            assert "readinessProbe" in c, f"{where} has no readinessProbe"
            assert "livenessProbe" in c, f"{where} has no livenessProbe"
            command = command_of(c)
            if command is None:
                continue
            seen.add(command)
            for kind in ("readinessProbe", "livenessProbe"):
                get = c[kind].get("httpGet")
                assert get is not None, f"{where}: {kind} is not an HTTP GET"
                assert get["path"] in SERVED[command], f"{where}: {kind} asks {get['path']}"
                assert declares(c, get["port"]), f"{where}: {kind} port {get['port']}"
            if command in STORE_FREE:
                assert c["livenessProbe"]["httpGet"]["path"] in STORE_FREE[command], where
    assert {"webhook", "scheduler", "agent"} <= seen
