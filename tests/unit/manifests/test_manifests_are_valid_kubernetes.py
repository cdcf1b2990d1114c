"""Every object of every kustomization (and the example StatefulSet) is valid
against the Kubernetes OpenAPI schema of a supported release, strictly (an
unknown or misspelt field fails), and custom resources have the fields their
operators require."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.manifests.conftest import KUSTOMIZATIONS, MANIFESTS, rendered


#: Oldest release the manifests support (webhook matchConditions are GA in
#: 1.30), or the oldest later one a newer kubernetes-validate still ships.
def _version() -> str:
    shipped = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    found = sorted(
        tuple(int(x) for x in d.name[1:].split("-")[0].split("."))
        for d in shipped.glob("v*-local-strict"))
    usable = [v for v in found if v >= (1, 30, 0)]
    return ".".join(map(str, usable[0])) if usable else "1.30.0"


K8S_VERSION = _version()

#: Custom resources (no schema in kubernetes-validate) and the fields checked.
CUSTOM = {
    ("cert-manager.io/v1", "Certificate"): ("spec.secretName", "spec.issuerRef.name"),
    ("cert-manager.io/v1", "Issuer"): ("spec",),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("spec.groups",),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("spec.selector", "spec.podMetricsEndpoints"),
}


def _get(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return obj


def _check(obj: dict[str, Any]) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CUSTOM:
        for field in CUSTOM[key]:
            assert _get(obj, field), f"{obj['kind']}/{obj['metadata']['name']}: {field} missing"
        return
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        first = str(e).splitlines()[0]
        pytest.fail(f"{obj['kind']}/{obj['metadata'].get('name')}: {first} "
                    f"at {'/'.join(map(str, e.path))}")


def test_schemas_for_the_supported_release_ship_offline() -> None:
    ok = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
    kubernetes_validate.validate(ok, K8S_VERSION, strict=True)
    bad = {**ok, "dta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_object_is_valid(name: str) -> None:
    objs = rendered(name)
    assert objs
    for obj in objs:
        _check(obj)


def test_the_example_statefulset_is_valid() -> None:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "examples" / "statefulset.yaml")
                                          .read_text()) if d]
    assert {d["kind"] for d in docs} == {"Namespace", "Service", "StatefulSet"}
    for d in docs:
        _check(d)


def test_a_misspelt_field_would_be_caught() -> None:
    dep = next(o for o in rendered("base") if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(dep))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
