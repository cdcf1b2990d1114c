"""Realistic AdmissionReview bodies, shaped as the API server sends them for
StatefulSet pods and StatefulSets, for tests and benchmarks (not product code)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ipam.contract import LABEL_FIXED_IP, LABEL_POD_INDEX, LABEL_POD_NAME

_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
]


def _uid() -> str:
    return str(uuid.uuid4())


def template(name: str, *, annotations: dict[str, str] | None = None,
             opt_in: bool = True, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A StatefulSet pod template, as a user writes it (after API defaulting)."""
    lab = {"app": name, **(labels or {})}
    if opt_in:
        lab[LABEL_FIXED_IP] = "true"
    return {
        "metadata": {"labels": lab, "annotations": dict(annotations or {})},
        "spec": {
            "containers": [{
                "name": "app", "image": "registry.k8s.io/nginx-slim:0.27",
                "ports": [{"name": "web", "containerPort": 80, "protocol": "TCP"}],
                "resources": {}, "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "securityContext": {},
            "schedulerName": "default-scheduler",
        },
    }


def statefulset(name: str, *, namespace: str = "prod", replicas: int | None = 3,
                annotations: dict[str, str] | None = None, opt_in: bool = True,
                pod_template: dict[str, Any] | None = None) -> dict[str, Any]:
    tpl = pod_template or template(name, annotations=annotations, opt_in=opt_in)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": tpl, "serviceName": name, "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        "revisionHistoryLimit": 10,
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        "volumeClaimTemplates": [{
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"},
        }],
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "uid": _uid(), "generation": 1,
                     "labels": {"app": name}},
        "spec": spec,
        "status": {"replicas": 0, "availableReplicas": 0},
    }


def statefulset_pod(sts: dict[str, Any], ordinal: int) -> dict[str, Any]:
    """The pod the StatefulSet controller creates for ``ordinal``: name and
    generateName, ownerReference, controller-revision-hash, pod-name and
    pod-index labels, hostname/subdomain, defaulted fields."""
    name = sts["metadata"]["name"]
    namespace = sts["metadata"]["namespace"]
    tpl = copy.deepcopy(sts["spec"]["template"])
    meta = tpl.setdefault("metadata", {})
    digest = hashlib.sha256(repr(tpl).encode()).hexdigest()[:10]
    pod_name = f"{name}-{ordinal}"
    labels = dict(meta.get("labels") or {})
    labels.update({
        "controller-revision-hash": f"{name}-{digest}",
        LABEL_POD_NAME: pod_name,
        LABEL_POD_INDEX: str(ordinal),
    })
    spec = tpl["spec"]
    spec.update({
        "hostname": pod_name, "subdomain": sts["spec"].get("serviceName", name),
        "serviceAccountName": "default", "serviceAccount": "default",
        "tolerations": list(_TOLERATIONS), "priority": 0, "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-{pod_name}"}},
                    {"name": "kube-api-access-x2b7c", "projected": {"defaultMode": 420,
                     "sources": [{"serviceAccountToken": {"expirationSeconds": 3607,
                                                          "path": "token"}}]}}],
    })
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": pod_name, "generateName": f"{name}-", "namespace": namespace,
            "labels": labels, "annotations": dict(meta.get("annotations") or {}),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                "uid": sts["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
            }],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {}}}],
        },
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }


def review(obj: dict[str, Any], *, old: dict[str, Any] | None = None,
           operation: str = "CREATE", dry_run: bool = False,
           uid: str | None = None) -> dict[str, Any]:
    """The AdmissionReview the API server posts for ``obj`` (a Pod or StatefulSet)."""
    kind = obj.get("kind", "Pod")
    if kind == "StatefulSet":
        gvk = {"group": "apps", "version": "v1", "kind": "StatefulSet"}
        gvr = {"group": "apps", "version": "v1", "resource": "statefulsets"}
        user = {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins",
                                                           "system:authenticated"]}
    else:
        gvk = {"group": "", "version": "v1", "kind": "Pod"}
        gvr = {"group": "", "version": "v1", "resource": "pods"}
        user = {"username": "system:serviceaccount:kube-system:statefulset-controller",
                "uid": _uid(), "groups": ["system:serviceaccounts",
                                          "system:serviceaccounts:kube-system",
                                          "system:authenticated"]}
    meta = obj.get("metadata", {})
    opts = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid or _uid(), "kind": gvk, "resource": gvr,
            "requestKind": gvk, "requestResource": gvr,
            "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
            "operation": operation, "userInfo": user,
            "object": obj if operation != "DELETE" else None,
            "oldObject": old, "dryRun": dry_run,
            "options": {"kind": opts.get(operation, "CreateOptions"),
                        "apiVersion": "meta.k8s.io/v1"},
        },
    }


# ---------------------------------------------------------------- a live server


class Certs:
    """A throw-away CA and a serving pair for 127.0.0.1/localhost (needs ``trustme``)."""

    def __init__(self, directory: str) -> None:
        import trustme

        self.dir = directory
        self.ca = trustme.CA()
        self.cert_file = os.path.join(directory, "tls.crt")
        self.key_file = os.path.join(directory, "tls.key")
        self.rotate()

    def issue(self) -> Any:
        """A new leaf certificate (a ``trustme.LeafCert``) signed by the CA."""
        return self.ca.issue_cert("127.0.0.1", "localhost", "stickyip-webhook.stickyip.svc")

    def install(self, leaf: Any, *, cert: bool = True, key: bool = True) -> None:
        """Write the leaf's certificate and/or key (each file atomically)."""
        if cert:
            _atomic_write(self.cert_file, b"".join(b.bytes() for b in leaf.cert_chain_pems))
        if key:
            _atomic_write(self.key_file, leaf.private_key_pem.bytes())

    def rotate(self) -> bytes:
        """Issue and install a new pair; returns the new certificate (DER)."""
        leaf = self.issue()
        self.install(leaf)
        return der(leaf)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def der(leaf: Any) -> bytes:
    """The DER bytes of a leaf's certificate (what ``getpeercert(True)`` returns)."""
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Client:
    """An HTTPS client of the webhook over one keep-alive connection pool."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext) -> None:
        import aiohttp

        self.url = url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=4))

    async def post(self, path: str, doc: Any) -> tuple[int, Any]:
        """POST ``doc`` (bytes as they are, anything else as JSON); the status and
        the parsed JSON answer (or the text of a non-200 answer)."""
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        async with self._session.post(self.url + path, data=data,
                                      headers={"Content-Type": "application/json"}) as r:
            if r.status == 200:
                return r.status, await r.json()
            return r.status, await r.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with self._session.get(self.url + path) as r:
            return r.status, await r.text()

    async def wait_ready(self, *, within: float = 20.0) -> None:
        """Poll ``/readyz`` until it answers 200 (a server just started refuses
        connections; one whose store does not answer says 503)."""
        deadline = time.monotonic() + within
        while True:
            try:
                if (await self.get("/readyz"))[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.url}/readyz did not answer 200 in {within:g} s")
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        await self._session.close()


@contextlib.asynccontextmanager
async def live_webhook(ipam: Any, directory: str, *, scheduler_name: str = "",
                       reload_interval: float = 0.05, statefulsets: Any = None
                       ) -> AsyncIterator[tuple[Any, Client, Certs]]:
    """The real server on 127.0.0.1 (a free port) over HTTPS, and a client trusting it."""
    from webhooks.config import WebhookSettings
    from webhooks.server import running

    certs = Certs(directory)
    settings = WebhookSettings(host="127.0.0.1", port=0, cert_file=certs.cert_file,
                               key_file=certs.key_file, reload_interval=reload_interval,
                               scheduler_name=scheduler_name, shutdown_timeout=1.0)
    async with running(settings, ipam, statefulsets=statefulsets) as server:
        client = Client(server.url, certs.client_context())
        try:
            yield server, client, certs
        finally:
            await client.aclose()


def decoded_patch(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch inside an AdmissionReview answer (empty when none)."""
    resp = answer["response"]
    if "patch" not in resp:
        return []
    assert resp.get("patchType") == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(resp["patch"]))
    return ops


def scale_review(name: str, *, namespace: str = "prod", replicas: int,
                 old_replicas: int, uid: str | None = None) -> dict[str, Any]:
    """The AdmissionReview for ``kubectl scale statefulset NAME --replicas=N``
    (an UPDATE of the ``statefulsets/scale`` subresource, kind autoscaling/v1 Scale)."""
    def scale(n: int) -> dict[str, Any]:
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"replicas": n},
                "status": {"replicas": old_replicas, "selector": f"app={name}"}}

    gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    gvr = {"group": "apps", "version": "v1", "resource": "statefulsets"}
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid or _uid(), "kind": gvk, "resource": gvr, "subResource": "scale",
            "requestKind": gvk, "requestResource": gvr, "requestSubResource": "scale",
            "name": name, "namespace": namespace, "operation": "UPDATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": scale(replicas), "oldObject": scale(old_replicas), "dryRun": False,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
