"""A compact, pure renderer of the kustomize subset that ``manifests/`` uses, so
tests can check the exact objects ``kubectl apply -k`` would send without a
kustomize binary.

Supported: ``resources`` (files and directories), ``namespace``, ``labels``
(``pairs``, ``includeSelectors: false``, ``includeTemplates``), ``images``,
``patches`` (strategic merge for the core workload lists, and JSON 6902; with
or without ``target``), ``configMapGenerator`` (``files``, ``literals``,
``behavior``, ``options.disableNameSuffixHash``) with kustomize's name hash and
name-reference rewriting in pod specs. Anything else raises
:class:`Unsupported` rather than being silently ignored. When a ``kubectl``
with built-in kustomize is present, tests compare this renderer's output with
it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

Obj = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KNOWN_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images",
                 "patches", "configMapGenerator", "generatorOptions"}

#: Kinds that are not namespaced (kustomize's namespace transformer skips them).
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ClusterIssuer", "APIService", "CSIDriver", "Node",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
}

#: Strategic-merge keys of the list fields we patch (by field name).
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "volumeMounts": "mountPath", "webhooks": "name",
    "imagePullSecrets": "name", "matchConditions": "name", "volumeClaimTemplates": None,
}

_GENERATED = "__kustomize_generated__"


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def render(path: str | Path) -> list[Obj]:
    """Render the kustomization directory ``path`` to the final list of objects."""
    objs = _build(Path(path))
    return _finish_generated(objs)


def _build(root: Path) -> list[Obj]:
    kfile = next((root / n for n in KUSTOMIZATION_FILES if (root / n).is_file()), None)
    if kfile is None:
        raise FileNotFoundError(f"no kustomization file in {root}")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - _KNOWN_FIELDS
    if unknown:
        raise Unsupported(f"{kfile}: unsupported fields {sorted(unknown)}")
    objs: list[Obj] = []
    for res in k.get("resources") or []:
        p = root / res
        if p.is_dir():
            objs.extend(_build(p))
        else:
            objs.extend(d for d in yaml.safe_load_all(p.read_text()) if d)
    options = k.get("generatorOptions") or {}
    for gen in k.get("configMapGenerator") or []:
        _generate_configmap(root, gen, options, objs)
    for patch in k.get("patches") or []:
        objs = _apply_patch(root, patch, objs)
    ns = k.get("namespace")
    if ns:
        for o in objs:
            _set_namespace(o, ns)
    for spec in k.get("labels") or []:
        _apply_labels(spec, objs)
    for img in k.get("images") or []:
        for o in objs:
            _apply_image(o, img)
    _check_unique(objs)
    return objs


# ------------------------------------------------------------------ generators

def _generate_configmap(root: Path, gen: Obj, options: Obj, objs: list[Obj]) -> None:
    extra = set(gen) - {"name", "namespace", "files", "literals", "behavior", "options"}
    if extra:
        raise Unsupported(f"configMapGenerator fields {sorted(extra)}")
    data: dict[str, str] = {}
    for entry in gen.get("files") or []:
        key, _, rel = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (root / rel).read_text()
    for lit in gen.get("literals") or []:
        key, sep, value = lit.partition("=")
        if not sep:
            raise Unsupported(f"literal {lit!r} has no '='")
        data[key] = value
    opts = {**options, **(gen.get("options") or {})}
    hashed = not opts.get("disableNameSuffixHash", False)
    behavior = gen.get("behavior", "create")
    name = gen["name"]
    extra_opts = set(opts) - {"disableNameSuffixHash", "labels", "annotations"}
    if extra_opts:
        raise Unsupported(f"generator options {sorted(extra_opts)}")
    if behavior == "create":
        cm: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                   "data": data, _GENERATED: hashed}
        for field in ("labels", "annotations"):
            if opts.get(field):
                cm["metadata"][field] = dict(opts[field])
        if gen.get("namespace"):
            cm["metadata"]["namespace"] = gen["namespace"]
        objs.append(cm)
        return
    target = next((o for o in objs if o["kind"] == "ConfigMap"
                   and o["metadata"]["name"] == name and _GENERATED in o), None)
    if target is None:
        raise Unsupported(f"configMapGenerator {name!r} behavior {behavior} has no base")
    if behavior == "merge":
        target["data"] = {**(target.get("data") or {}), **data}
    elif behavior == "replace":
        target["data"] = data
    else:
        raise Unsupported(f"configMapGenerator behavior {behavior!r}")
    target[_GENERATED] = hashed


def configmap_hash(data: dict[str, str]) -> str:
    """kustomize's ConfigMap name suffix: sha256 of the Go-JSON encoding of
    kind/name/data (kustomize 5 hashes before naming: the name is empty), first
    10 hex digits with 0,1,3,a,e mapped to g,h,k,m,t."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": ""},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's encoding/json escapes these (HTML-safe output).
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(ch, esc)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _finish_generated(objs: list[Obj]) -> list[Obj]:
    renames: dict[tuple[str | None, str], str] = {}
    for o in objs:
        hashed = o.pop(_GENERATED, None)
        if hashed:
            md = o["metadata"]
            new = f"{md['name']}-{configmap_hash(o.get('data') or {})}"
            renames[(md.get("namespace"), md["name"])] = new
            md["name"] = new
    for o in objs:
        ns = o.get("metadata", {}).get("namespace")
        for pod in _pod_specs(o):
            _rename_configmap_refs(pod, lambda n, ns=ns: renames.get((ns, n), n))
    return objs


def _pod_specs(o: Obj) -> Iterator[Obj]:
    spec = o.get("spec") or {}
    if o.get("kind") == "Pod":
        yield spec
    tmpl = spec.get("template") or {}
    if o.get("kind") == "CronJob":
        tmpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    if isinstance(tmpl.get("spec"), dict):
        yield tmpl["spec"]


def _rename_configmap_refs(pod: Obj, rename: Any) -> None:
    for vol in pod.get("volumes") or []:
        if "configMap" in vol:
            vol["configMap"]["name"] = rename(vol["configMap"]["name"])
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                src["configMap"]["name"] = rename(src["configMap"]["name"])
    for key in ("containers", "initContainers"):
        for c in pod.get(key) or []:
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef:
                    ef["configMapRef"]["name"] = rename(ef["configMapRef"]["name"])
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    ref["name"] = rename(ref["name"])


# ------------------------------------------------------------------ patches

def _apply_patch(root: Path, spec: Obj, objs: list[Obj]) -> list[Obj]:
    extra = set(spec) - {"path", "patch", "target"}
    if extra:
        raise Unsupported(f"patch fields {sorted(extra)}")
    text = (root / spec["path"]).read_text() if "path" in spec else spec["patch"]
    doc = yaml.safe_load(text)
    target = spec.get("target")
    if isinstance(doc, list):  # JSON 6902
        if not target:
            raise Unsupported("a JSON 6902 patch needs a target")
        hits = [o for o in objs if _matches(o, target)]
        if not hits:
            raise Unsupported(f"patch target {target} matches nothing")
        out = []
        for o in objs:
            if any(o is h for h in hits):
                gen = o.pop(_GENERATED, None)
                o = jsonpatch.apply_patch(o, doc)
                md = o.get("metadata") or {}
                for field in ("annotations", "labels"):  # kustomize drops emptied maps
                    if md.get(field) == {}:
                        del md[field]
                if gen is not None:
                    o[_GENERATED] = gen
            out.append(o)
        return out
    if not isinstance(doc, dict):
        raise Unsupported(f"patch {text[:40]!r} is neither a JSON 6902 list nor an object")
    if target is None:
        # Like kustomize: the patch names its object by kind, name AND namespace.
        target = {"kind": doc["kind"], "name": doc["metadata"]["name"],
                  "namespace": doc["metadata"].get("namespace")}
        hits = [o for o in objs if _matches(o, target)
                and (o.get("metadata") or {}).get("namespace") == target["namespace"]]
    else:
        hits = [o for o in objs if _matches(o, target)]
    if not hits:
        raise Unsupported(f"patch target {target} matches nothing")
    out = []
    for o in objs:
        if any(o is h for h in hits):
            if doc.get("$patch") == "delete":
                continue
            o = strategic_merge(o, {k: v for k, v in doc.items()
                                    if k not in ("apiVersion", "kind")}, "")
        out.append(o)
    return out


def _matches(o: Obj, target: Obj) -> bool:
    extra = set(target) - {"kind", "name", "namespace", "group", "version"}
    if extra:
        raise Unsupported(f"patch target selectors {sorted(extra)}")
    group, _, version = o["apiVersion"].rpartition("/")
    md = o.get("metadata") or {}
    return all((
        target.get("kind") in (None, o["kind"]),
        target.get("name") in (None, md.get("name")),
        target.get("namespace") in (None, md.get("namespace")),
        target.get("group") in (None, group),
        target.get("version") in (None, version),
    ))


def strategic_merge(base: Any, patch: Any, field: str) -> Any:
    """Strategic merge for the cases the manifests use: maps merge, ``null``
    deletes a key, lists named in _MERGE_KEYS merge by key (``$patch: delete``
    removes an item), other lists are replaced."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if patch.get("$patch") == "replace":
            return {k: v for k, v in patch.items() if k != "$patch"}
        if "$patch" in patch:
            raise Unsupported(f"$patch: {patch['$patch']} inside {field!r}")
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list) and isinstance(base, list):
        key = _merge_key(field, base + patch)
        if key is None:
            return copy.deepcopy(patch)
        # kustomize (kyaml) orders the result: the patch's items first (merged
        # with their base item), then the base items the patch does not name.
        merged: list[Any] = []
        named = {item.get(key) for item in patch}
        for item in patch:
            if item.get("$patch") == "delete":
                continue
            old = next((b for b in base if b.get(key) == item.get(key)), None)
            merged.append(copy.deepcopy(item) if old is None
                          else strategic_merge(old, item, field))
        merged.extend(copy.deepcopy(b) for b in base if b.get(key) not in named)
        return merged
    return copy.deepcopy(patch)


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        return "containerPort" if "containerPort" in items[0] else "port"
    return _MERGE_KEYS.get(field)


# ------------------------------------------------------------------ transformers

def _set_namespace(o: Obj, ns: str) -> None:
    if o["kind"] in CLUSTER_SCOPED:
        pass
    else:
        o["metadata"]["namespace"] = ns
    if o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        for s in o.get("subjects") or []:
            if s.get("kind") == "ServiceAccount":
                s["namespace"] = ns
    if o["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for w in o.get("webhooks") or []:
            svc = (w.get("clientConfig") or {}).get("service")
            if svc is not None:
                svc["namespace"] = ns


def _apply_labels(spec: Obj, objs: list[Obj]) -> None:
    extra = set(spec) - {"pairs", "includeSelectors", "includeTemplates"}
    if extra or spec.get("includeSelectors"):
        raise Unsupported(f"labels options {sorted(extra) or ['includeSelectors']}")
    for o in objs:
        o["metadata"].setdefault("labels", {}).update(spec["pairs"])
        if spec.get("includeTemplates"):
            for pod_tmpl in _templates(o):
                pod_tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(
                    spec["pairs"])


def _templates(o: Obj) -> Iterator[Obj]:
    spec = o.get("spec") or {}
    if isinstance(spec.get("template"), dict):
        yield spec["template"]


def _apply_image(o: Any, img: Obj) -> None:
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                for c in v:
                    if isinstance(c, dict) and "image" in c:
                        c["image"] = _retag(c["image"], img)
            else:
                _apply_image(v, img)
    elif isinstance(o, list):
        for v in o:
            _apply_image(v, img)


def _retag(image: str, img: Obj) -> str:
    name, tag = image, ""
    if "@" in image:
        name, _, digest = image.partition("@")
        tag = "@" + digest
    else:
        slash = image.rfind("/")
        colon = image.rfind(":")
        if colon > slash:
            name, tag = image[:colon], image[colon:]
    if name != img["name"]:
        return image
    new_name = str(img.get("newName", name))
    if "digest" in img:
        return f"{new_name}@{img['digest']}"
    if "newTag" in img:
        return f"{new_name}:{img['newTag']}"
    return new_name + tag


def _check_unique(objs: list[Obj]) -> None:
    seen: set[tuple[str, str, str | None, str]] = set()
    for o in objs:
        md = o.get("metadata") or {}
        key = (o["apiVersion"].rpartition("/")[0], o["kind"], md.get("namespace"), md["name"])
        if key in seen:
            raise ValueError(f"duplicate object {key}")
        seen.add(key)


def object_key(o: Obj) -> tuple[str, str, str]:
    """(kind, namespace, name) of an object, for lookups in tests."""
    md = o.get("metadata") or {}
    return (o["kind"], md.get("namespace") or "", md["name"])
