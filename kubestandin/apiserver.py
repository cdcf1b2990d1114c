"""The stand-in's API semantics, independent of HTTP: defaulting, metadata, optimistic
concurrency (409), status/scale/binding subresources, deletion with owner cascade."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kubestandin import patching
from kubestandin.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Invalid,
    MethodNotAllowed,
    NotFound,
)
from kubestandin.resources import BY_KIND, Resource, by_kind
from kubestandin.selectors import selector_from_match_labels
from kubestandin.store import Obj, Store, clone

# A mutating admission step: (resource, operation, object) -> the admitted object.
Admission = Callable[[Resource, str, Obj], Awaitable[Obj]]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _display(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _not_found(res: Resource, name: str) -> NotFound:
    return NotFound(f'{_display(res)} "{name}" not found', kind=res.plural, name=name,
                    group=res.group)


def _conflict(res: Resource, name: str) -> Conflict:
    return Conflict(f'Operation cannot be fulfilled on {_display(res)} "{name}": the object '
                    "has been modified; please apply your changes to the latest version "
                    "and try again", kind=res.plural, name=name, group=res.group)


class ApiCore:
    """Every API operation, applied to a ``Store``; the HTTP server and the Python API
    both call these, so they behave identically."""

    def __init__(self, store: Store, *, strict_namespaces: bool = False,
                 graceful_deletion: bool = False) -> None:
        self.store = store
        self.strict_namespaces = strict_namespaces
        # Pods bound to a node then stay Terminating until its kubelet confirms (or a
        # delete with gracePeriodSeconds=0 forces them out).
        self.graceful_deletion = graceful_deletion
        self.admission: list[Admission] = []
        self._next_cluster_ip = int(ipaddress.IPv4Address("10.96.0.10"))
        ns_res = BY_KIND[("v1", "Namespace")]
        for ns in DEFAULT_NAMESPACES:
            self._commit_create(ns_res, self._prepare_create(
                ns_res, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, ""))

    # ------------------------------------------------------------------ reads
    def get(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self.store.get(res, namespace, name)
        if obj is None:
            raise _not_found(res, name)
        return obj

    # ----------------------------------------------------------------- create
    async def create(self, res: Resource, body: Obj, namespace: str = "") -> Obj:
        obj = self._prepare_create(res, body, namespace)
        for admit in self.admission:
            obj = await admit(res, "CREATE", obj)
        return self._commit_create(res, obj)

    def _prepare_create(self, res: Resource, body: Obj, namespace: str) -> Obj:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        obj: Obj = clone(body)
        if obj.get("kind", res.kind) != res.kind or \
                obj.get("apiVersion", res.api_version) != res.api_version:
            raise BadRequest(f"the API version in the data ({obj.get('apiVersion')}) does not "
                             f"match the expected API version ({res.api_version})")
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise BadRequest("the namespace of the provided object does not match the "
                                 "namespace sent on the request")
            meta["namespace"] = namespace or body_ns or "default"
            if self.strict_namespaces and self.store.peek(
                    BY_KIND[("v1", "Namespace")], "", meta["namespace"]) is None:
                raise NotFound(f'namespaces "{meta["namespace"]}" not found',
                               kind="namespaces", name=meta["namespace"])
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise Invalid(f"{res.kind}: metadata.name: Required value: name or "
                              "generateName is required", kind=res.kind)
            alphabet = string.ascii_lowercase + string.digits
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice(alphabet) for _ in range(5))
        _apply_defaults(res, obj, self)
        return obj

    def _commit_create(self, res: Resource, obj: Obj) -> Obj:
        meta = obj["metadata"]
        if self.store.peek(res, meta.get("namespace", ""), meta["name"]) is not None:
            raise AlreadyExists(f'{_display(res)} "{meta["name"]}" already exists',
                                kind=res.plural, name=meta["name"], group=res.group)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        return self.store.put(res, obj, created=True)

    # ----------------------------------------------------------------- update
    def update(self, res: Resource, namespace: str, name: str, body: Obj,
               subresource: str = "") -> Obj:
        if subresource and subresource != "status":
            raise MethodNotAllowed(f"cannot update {res.plural}/{subresource}")
        if subresource and not res.has_status:
            raise NotFound(f"the server could not find the requested resource "
                           f"({res.plural}/{subresource})")
        old = self.get(res, namespace, name)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise BadRequest(f"the name of the object ({meta.get('name')}) does not match "
                             f"the name on the URL ({name})")
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise _conflict(res, name)
        uid = meta.get("uid")
        if uid and uid != old["metadata"]["uid"]:
            # A uid in the body is a precondition (kubelets and schedulers rely on it).
            raise Conflict(f'Operation cannot be fulfilled on {_display(res)} "{name}": '
                           f"Precondition failed: UID in precondition: {uid}, UID in object "
                           f"meta: {old['metadata']['uid']}", kind=res.plural, name=name,
                           group=res.group)
        if subresource == "status":
            new = clone(old)
            if "status" in body:
                new["status"] = clone(body["status"])
        else:
            new = clone(body)
            new["kind"], new["apiVersion"] = res.kind, res.api_version
            new_meta = new.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "name", "namespace", "generation",
                          "deletionTimestamp", "deletionGracePeriodSeconds"):
                if field in old["metadata"]:
                    new_meta[field] = old["metadata"][field]
                else:
                    new_meta.pop(field, None)
            if res.has_status:
                if "status" in old:
                    new["status"] = clone(old["status"])
                else:
                    new.pop("status", None)
            if res.kind == "Pod":
                old_node = (old.get("spec") or {}).get("nodeName")
                if (new.get("spec") or {}).get("nodeName") != old_node:
                    raise Invalid(f'Pod "{name}" is invalid: spec: Forbidden: pod updates may '
                                  "not change fields other than `spec.containers[*].image`, "
                                  "... (spec.nodeName is set by pods/binding)",
                                  kind="Pod", name=name)
            if new.get("spec") != old.get("spec"):
                new_meta["generation"] = old["metadata"].get("generation", 1) + 1
        if new == old:
            return old  # a no-op write keeps its resourceVersion, as kube-apiserver does
        deleting = new["metadata"].get("deletionTimestamp") and \
            not new["metadata"].get("deletionGracePeriodSeconds")
        if deleting and not new["metadata"].get("finalizers"):
            self.store.put(res, new, created=False)
            return self._remove(res, namespace, name, orphan=False)
        return self.store.put(res, new, created=False)

    def patch(self, res: Resource, namespace: str, name: str, patch: Any, content_type: str,
              subresource: str = "") -> Obj:
        if subresource == "scale":
            scale = self.get_scale(res, namespace, name)
            return self.update_scale(res, namespace, name,
                                     patching.apply_patch(content_type, scale, patch))
        old = self.get(res, namespace, name)
        new = patching.apply_patch(content_type, old, patch)
        return self.update(res, namespace, name, new, subresource)

    # ------------------------------------------------------------------ scale
    def get_scale(self, res: Resource, namespace: str, name: str) -> Obj:
        if "scale" not in res.subresources:
            raise NotFound(f"the server could not find the requested resource "
                           f"({res.plural}/scale)")
        obj = self.get(res, namespace, name)
        meta = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {"replicas": status.get("replicas", 0),
                       "selector": selector_from_match_labels(selector)},
        }

    def update_scale(self, res: Resource, namespace: str, name: str, scale: Obj) -> Obj:
        obj = self.get(res, namespace, name)
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise _conflict(res, name)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise Invalid(f'Scale.autoscaling "{name}" is invalid: spec.replicas: must be a '
                          "non-negative integer", kind="Scale", name=name)
        obj["spec"]["replicas"] = replicas
        self.update(res, namespace, name, obj)
        return self.get_scale(res, namespace, name)

    # ---------------------------------------------------------------- binding
    def bind(self, namespace: str, name: str, binding: Obj) -> Obj:
        pods = BY_KIND[("v1", "Pod")]
        pod = self.get(pods, namespace, name)
        target = binding.get("target") or {}
        if not target.get("name") or target.get("kind", "Node") != "Node":
            raise Invalid("Binding is invalid: target: must name a Node", kind="Binding",
                          name=name)
        uid = (binding.get("metadata") or {}).get("uid")
        if uid and uid != pod["metadata"]["uid"]:
            raise Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": '
                           "the UID in the precondition does not match", kind="pods/binding",
                           name=name)
        if pod["metadata"].get("deletionTimestamp"):
            raise Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": pod '
                           f"{name} is being deleted, cannot be assigned to a host",
                           kind="pods/binding", name=name)
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": pod '
                           f'{name} is already assigned to node "{current}"',
                           kind="pods/binding", name=name)
        pod.setdefault("spec", {})["nodeName"] = target["name"]
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") !=
                      "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True",
                           "lastTransitionTime": now_rfc3339()})
        status["conditions"] = conditions
        self.store.put(pods, pod, created=False)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201}

    # ----------------------------------------------------------------- delete
    def delete(self, res: Resource, namespace: str, name: str,
               options: Obj | None = None) -> Obj:
        options = options or {}
        obj = self.get(res, namespace, name)
        pre = options.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]) or (
                pre.get("resourceVersion") and
                pre["resourceVersion"] != obj["metadata"]["resourceVersion"]):
            raise Conflict(f'Operation cannot be fulfilled on {_display(res)} "{name}": '
                           "Precondition failed", kind=res.plural, name=name)
        orphan = options.get("propagationPolicy") == "Orphan" or \
            options.get("orphanDependents") is True
        grace = self._grace_period(res, obj, options)
        if obj["metadata"].get("finalizers") or grace > 0:
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
            obj["metadata"]["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            return self.store.put(res, obj, created=False)
        return self._remove(res, namespace, name, orphan=orphan)

    def _grace_period(self, res: Resource, obj: Obj, options: Obj) -> int:
        """Seconds a deleted pod stays Terminating (0 unless ``graceful_deletion``; only
        pods bound to a node wait, as only a kubelet can confirm)."""
        if res.kind != "Pod" or not self.graceful_deletion or \
                not (obj.get("spec") or {}).get("nodeName"):
            return 0
        value = options.get("gracePeriodSeconds")
        if value is None:
            value = obj["spec"].get("terminationGracePeriodSeconds", 30)
        try:
            return max(int(value), 0)
        except (TypeError, ValueError):
            raise BadRequest(f"invalid gracePeriodSeconds {value!r}") from None

    def _remove(self, res: Resource, namespace: str, name: str, *, orphan: bool) -> Obj:
        final = self.store.remove(res, namespace, name)
        uid = final["metadata"]["uid"]
        # Simplified garbage collection: dependents go with their owner, at once.
        dependents = [] if orphan else self.store.owned_by(uid)
        if res.kind == "Namespace":
            dependents += [(r, o) for r, o in self.store.all_resources()
                           if r.namespaced and o["metadata"].get("namespace") == name]
        for dep_res, dep in dependents:
            dep_ns, dep_name = dep["metadata"].get("namespace", ""), dep["metadata"]["name"]
            if self.store.peek(dep_res, dep_ns, dep_name) is not None:
                self._remove(dep_res, dep_ns, dep_name, orphan=False)
        return final

    # --------------------------------------------------------- by apiVersion
    def resource(self, api_version: str, kind: str) -> Resource:
        try:
            return by_kind(api_version, kind)
        except KeyError as e:
            raise NotFound(str(e)) from None


def _apply_defaults(res: Resource, obj: Obj, core: ApiCore) -> None:
    """The defaulting kube-apiserver does on create, for the fields components read."""
    spec = obj.setdefault("spec", {}) if res.kind in (
        "Pod", "Node", "Service", "StatefulSet", "Namespace") else None
    if res.kind == "Pod":
        assert spec is not None
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("containers", [])
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("priority", 0)
        # The DefaultTolerationSeconds admission plugin, on in every real cluster.
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key and t.get("effect") in (None, "", "NoExecute")
                       for t in tolerations):
                tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 300})
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
    elif res.kind == "Namespace":
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
            obj["metadata"]["name"]
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif res.kind == "StatefulSet":
        assert spec is not None
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                           "rollingUpdate": {"partition": 0}})
        spec.setdefault("revisionHistoryLimit", 10)
        obj.setdefault("status", {}).setdefault("replicas", 0)
    elif res.kind == "Service":
        assert spec is not None
        spec.setdefault("type", "ClusterIP")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = str(ipaddress.IPv4Address(core._next_cluster_ip))
            core._next_cluster_ip += 1
        if spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif res.kind == "Node":
        obj.setdefault("status", {})
