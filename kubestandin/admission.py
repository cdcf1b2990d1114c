"""Mutating admission webhooks, called the way kube-apiserver calls them: an
AdmissionReview v1 POSTed over HTTPS, a base64 JSONPatch applied, a denial rejected."""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jsonpatch

from kubestandin.errors import BadRequest, InternalError
from kubestandin.resources import BY_KIND, Resource
from kubestandin.selectors import match_label_selector_object
from kubestandin.store import Obj, Store


@dataclass(frozen=True)
class WebhookTarget:
    """One ``MutatingWebhookConfiguration`` webhook, reached by ``url`` (``clientConfig.url``)."""

    url: str
    ca_file: str | None = None
    name: str = "standin.stickyip.io"
    object_selector: dict[str, Any] | None = None
    namespace_selector: dict[str, Any] | None = None
    resources: tuple[str, ...] = ("pods",)  # plurals whose CREATE is sent (only CREATE is)
    failure_policy: str = "Fail"  # or "Ignore"
    timeout_seconds: float = 10.0
    client_cert: tuple[str, str] | None = None  # (cert file, key file) for mTLS, optional
    headers: dict[str, str] = field(default_factory=dict)


class WebhookCaller:
    """An ``Admission`` step that runs every configured webhook in order."""

    def __init__(self, store: Store, targets: list[WebhookTarget]) -> None:
        self.store = store
        self.targets = targets
        self._session: aiohttp.ClientSession | None = None
        #: one TLS context per target: connections are pooled by context, and
        #: kube-apiserver keeps its connections to a webhook (no handshake per call)
        self._contexts: dict[int, ssl.SSLContext | None] = {}  # by id(target)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _selected(self, target: WebhookTarget, res: Resource, op: str, obj: Obj) -> bool:
        if op != "CREATE" or res.plural not in target.resources:
            return False
        if not match_label_selector_object(target.object_selector,
                                           obj["metadata"].get("labels")):
            return False
        if target.namespace_selector is not None and res.namespaced:
            ns = self.store.peek(BY_KIND[("v1", "Namespace")], "",
                                 obj["metadata"].get("namespace", ""))
            labels = (ns or {}).get("metadata", {}).get("labels") or {
                "kubernetes.io/metadata.name": obj["metadata"].get("namespace", "")}
            if not match_label_selector_object(target.namespace_selector, labels):
                return False
        return True

    async def __call__(self, res: Resource, op: str, obj: Obj) -> Obj:
        for target in self.targets:
            if self._selected(target, res, op, obj):
                obj = await self._call(target, res, op, obj)
        return obj

    async def _call(self, target: WebhookTarget, res: Resource, op: str, obj: Obj) -> Obj:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if id(target) not in self._contexts:
            ctx = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else None
            if ctx is not None and target.client_cert:
                ctx.load_cert_chain(*target.client_cert)
            self._contexts[id(target)] = ctx
        ctx = self._contexts[id(target)]
        req_uid = str(uuid.uuid4())
        meta = obj["metadata"]
        group, version = (res.api_version.split("/") if res.group else ("", res.version))
        review = {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": req_uid,
                "kind": {"group": group, "version": version, "kind": res.kind},
                "resource": {"group": group, "version": version, "resource": res.plural},
                "requestKind": {"group": group, "version": version, "kind": res.kind},
                "requestResource": {"group": group, "version": version,
                                    "resource": res.plural},
                "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                "operation": op,
                "userInfo": {"username": "system:serviceaccount:kube-system:"
                             "statefulset-controller", "groups": ["system:authenticated"]},
                "object": obj, "oldObject": None, "dryRun": False,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }
        try:
            async with self._session.post(
                    target.url, json=review, ssl=ctx if ctx is not None else True,
                    headers=target.headers,
                    timeout=aiohttp.ClientTimeout(total=target.timeout_seconds)) as resp:
                if resp.status != 200:
                    raise InternalError(f'failed calling webhook "{target.name}": '
                                        f"HTTP {resp.status}: {(await resp.text())[:200]}")
                answer = json.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as e:
            if target.failure_policy == "Ignore":
                return obj
            raise InternalError(f'Internal error occurred: failed calling webhook '
                                f'"{target.name}": {e}') from e
        except InternalError:
            if target.failure_policy == "Ignore":
                return obj
            raise
        response = answer.get("response") or {}
        if response.get("uid") != req_uid:
            raise InternalError(f'failed calling webhook "{target.name}": the response uid '
                                "does not match the request uid")
        if not response.get("allowed"):
            result = response.get("status") or {}
            err = BadRequest(f'admission webhook "{target.name}" denied the request: '
                             f"{result.get('message', 'without explanation')}")
            err.code = max(int(result.get("code") or 400), 400)
            raise err
        if response.get("patch"):
            if response.get("patchType") != "JSONPatch":
                raise InternalError(f'webhook "{target.name}" returned an unsupported '
                                    f"patchType {response.get('patchType')!r}")
            ops = json.loads(base64.b64decode(response["patch"]))
            try:
                patched: Obj = jsonpatch.apply_patch(obj, ops, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise InternalError(f'webhook "{target.name}" returned a patch that does not '
                                    f"apply: {e}") from e
            return patched
        return obj
