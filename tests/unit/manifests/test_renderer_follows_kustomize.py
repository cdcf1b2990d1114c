"""The test renderer (tests/support/kustomize.py) behaves like kustomize for the
features the manifests use, and, where a kubectl with built-in kustomize is
installed, produces exactly what ``kubectl kustomize`` produces."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kustomize import Unsupported, configmap_hash, object_key, render
from tests.unit.manifests.conftest import KUSTOMIZATIONS, rendered


def _write(root: Path, files: dict[str, Any]) -> Path:
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content if isinstance(content, str) else yaml.safe_dump_all(
            content if isinstance(content, list) else [content]))
    return root


DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "app", "namespace": "ns"},
    "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [
            {"name": "main", "image": "example.org/app:old", "args": ["x"],
             "env": [{"name": "A", "value": "1"}],
             "envFrom": [{"configMapRef": {"name": "settings"}}]}],
            "volumes": [{"name": "v", "configMap": {"name": "settings"}}]}}},
}


def test_configmap_hash_matches_kustomize() -> None:
    # Known vector from kustomize 5.5 (kubectl 1.32) for this base's settings.
    data = {"STICKYIP_REDIS_URL":
            "redis://stickyip-redis-0.stickyip-redis.stickyip-system.svc:6379/0"}
    assert configmap_hash(data) == "k7hk2t8tmf"
    assert configmap_hash({**data, "X": "1"}) != "k7hk2t8tmf"


def test_generated_names_are_hashed_and_references_follow(tmp_path: Path) -> None:
    _write(tmp_path, {"d.yaml": DEPLOY, "kustomization.yaml": {
        "resources": ["d.yaml"], "namespace": "ns",
        "configMapGenerator": [{"name": "settings", "literals": ["K=v"]}]}})
    objs = render(tmp_path)
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    assert cm["metadata"]["name"] == "settings-" + configmap_hash({"K": "v"})
    pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]


def test_overlay_merges_a_generated_configmap_and_rehashes(tmp_path: Path) -> None:
    _write(tmp_path, {
        "base/d.yaml": DEPLOY,
        "base/kustomization.yaml": {"resources": ["d.yaml"], "configMapGenerator": [
            {"name": "settings", "namespace": "ns", "literals": ["K=v", "L=1"]}]},
        "over/kustomization.yaml": {"resources": ["../base"], "configMapGenerator": [
            {"name": "settings", "namespace": "ns", "behavior": "merge",
             "literals": ["K=w"]}]}})
    cm = next(o for o in render(tmp_path / "over") if o["kind"] == "ConfigMap")
    assert cm["data"] == {"K": "w", "L": "1"}
    assert cm["metadata"]["name"] == "settings-" + configmap_hash({"K": "w", "L": "1"})


def test_strategic_merge_patch_merges_lists_by_key_and_deletes(tmp_path: Path) -> None:
    other = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gone",
                                                                "namespace": "ns"}}
    patch = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "app", "namespace": "ns"},
             "spec": {"template": {"spec": {"containers": [
                 {"name": "main", "args": ["y"], "env": [{"name": "B", "value": "2"}]},
                 {"name": "side", "image": "example.org/side:1"}]}}}}
    _write(tmp_path, {"r.yaml": [DEPLOY, other], "p.yaml": patch, "kustomization.yaml": {
        "resources": ["r.yaml"],
        "patches": [{"path": "p.yaml"}, {"patch": "$patch: delete\napiVersion: v1\n"
                                         "kind: Service\nmetadata:\n  name: gone\n"
                                         "  namespace: ns\n"}]}})
    objs = render(tmp_path)
    assert [o["kind"] for o in objs] == ["Deployment"]
    containers = objs[0]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "side"]
    assert containers[0]["args"] == ["y"]                     # plain lists are replaced
    assert containers[0]["image"] == "example.org/app:old"    # untouched fields stay
    assert {e["name"] for e in containers[0]["env"]} == {"A", "B"}  # keyed lists merge


def test_patch_must_name_the_namespace_like_kustomize(tmp_path: Path) -> None:
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
             "spec": {"replicas": 2}}
    _write(tmp_path, {"d.yaml": DEPLOY, "p.yaml": patch, "kustomization.yaml": {
        "resources": ["d.yaml"], "patches": [{"path": "p.yaml"}]}})
    with pytest.raises(Unsupported, match="matches nothing"):
        render(tmp_path)


def test_json6902_patch_and_images(tmp_path: Path) -> None:
    _write(tmp_path, {"d.yaml": DEPLOY, "kustomization.yaml": {
        "resources": ["d.yaml"],
        "images": [{"name": "example.org/app", "newTag": "2.0"}],
        "patches": [{"target": {"kind": "Deployment", "name": "app"},
                     "patch": "- op: add\n  path: /spec/replicas\n  value: 3\n"}]}})
    (dep,) = render(tmp_path)
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/app:2.0"


def test_unsupported_fields_are_refused_not_ignored(tmp_path: Path) -> None:
    _write(tmp_path, {"d.yaml": DEPLOY, "kustomization.yaml": {
        "resources": ["d.yaml"], "namePrefix": "x-"}})
    with pytest.raises(Unsupported, match="namePrefix"):
        render(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="no kubectl (with built-in kustomize) on this machine")
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_same_output_as_kubectl_kustomize(name: str) -> None:
    try:
        out = subprocess.run(["kubectl", "kustomize", str(KUSTOMIZATIONS[name])],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        pytest.skip(f"kubectl kustomize did not run here: {e}")
    theirs = {object_key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {object_key(o): o for o in rendered(name)}
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], f"{key} differs from kubectl kustomize"
