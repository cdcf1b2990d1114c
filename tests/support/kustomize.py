"""Renders a kustomization with the real kustomize, exactly as ``kubectl apply -k``
would: ``kubectl kustomize`` (kustomize built into kubectl), or a standalone
``kustomize build`` when there is no kubectl. There is no fallback: without
kustomize 5 (or when it fails) the manifest tests fail and say what to do.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

#: kubectl 1.27 and later carry kustomize 5, the version the manifests are written for.
MIN_VERSION = (5, 0)
INSTALL_HINT = ("install kubectl 1.27 or later (kustomize 5 built in): 'bash scripts/setup.sh' "
                "does, see docs/deploy.md")


class KustomizeError(Exception):
    """kustomize is missing, too old, or refused a kustomization."""


def _version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None


@functools.cache
def command() -> tuple[str, ...]:
    """The kustomize command line, e.g. ``("kubectl", "kustomize")``."""
    found = []
    kubectl = shutil.which("kubectl")
    if kubectl:
        done = subprocess.run([kubectl, "version", "--client", "-o", "json"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            v = _version(json.loads(done.stdout).get("kustomizeVersion", ""))
            if v is not None and v >= MIN_VERSION:
                return (kubectl, "kustomize")
            found.append(f"kubectl with kustomize {v}")
    standalone = shutil.which("kustomize")
    if standalone:
        done = subprocess.run([standalone, "version"], capture_output=True, text=True,
                              timeout=60)
        v = _version(done.stdout)
        if v is not None and v >= MIN_VERSION:
            return (standalone, "build")
        found.append(f"kustomize {v}")
    have = f" (found {', '.join(found)})" if found else ""
    raise KustomizeError(f"no kustomize {MIN_VERSION[0]} here{have}: {INSTALL_HINT}")


def render_text(path: str | Path) -> str:
    cmd = [*command(), str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise KustomizeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def render(path: str | Path) -> list[Obj]:
    """The objects ``kubectl apply -k PATH`` would send, in kustomize's order."""
    import yaml

    return [d for d in yaml.safe_load_all(render_text(path)) if d]


def object_key(obj: Obj) -> tuple[str, str, str, str]:
    md = obj.get("metadata") or {}
    return (obj.get("apiVersion", ""), obj.get("kind", ""), md.get("namespace", ""),
            md.get("name", ""))
