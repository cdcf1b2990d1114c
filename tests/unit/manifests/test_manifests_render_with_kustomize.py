"""Every kustomization renders with the real kustomize (``kubectl kustomize``),
the manifest tests see exactly what ``kubectl apply -k`` would send, and one edit
of the base's ``images:`` retags every stickyip container of every overlay."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.kustomize import KustomizeError, command, render
from tests.unit.manifests.conftest import INSTALLS, KUSTOMIZATIONS, MANIFESTS
from tests.unit.manifests.test_manifest_invariants import (
    EXTERNAL_IMAGES,
    containers,
    pod_specs,
)


def test_kustomize_is_installed() -> None:
    # Fails (never skips) without kustomize 5, saying how to install it.
    assert command()


def test_every_kustomization_in_the_tree_is_tested() -> None:
    found = {p.parent for p in MANIFESTS.rglob("kustomization.yaml")}
    assert found == set(KUSTOMIZATIONS.values())


def test_a_broken_kustomization_fails_with_kustomizes_message(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match=r"missing\.yaml"):
        render(tmp_path)


@pytest.mark.parametrize("name", INSTALLS)
def test_one_images_edit_retags_every_stickyip_container(name: str, tmp_path: Path) -> None:
    tree = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, tree)
    kfile = tree / "base" / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    (entry,) = k["images"]
    # What `kustomize edit set image localhost/stickyip=registry.example.com/sip:9.9.9` writes.
    entry.update(newName="registry.example.com/sip", newTag="9.9.9")
    kfile.write_text(yaml.safe_dump(k))
    objs = render(tree / KUSTOMIZATIONS[name].relative_to(MANIFESTS))
    images = {c["image"] for _, pod in pod_specs(objs) for c in containers(pod)}
    assert images - EXTERNAL_IMAGES == {"registry.example.com/sip:9.9.9"}
