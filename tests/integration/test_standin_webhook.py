"""The stand-in calls a real HTTPS mutating webhook for Pod CREATE like kube-apiserver:
AdmissionReview v1 out, base64 JSONPatch applied, denial rejected, failurePolicy kept."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from kubernetes import client

from kubestandin import KubeStandIn, WebhookTarget, objects
from kubestandin.errors import StandInError
from plumbing.kube.client import KubeSettings, api_client


class Webhook:
    """A tiny HTTPS admission webhook recording what it was sent."""

    def __init__(self) -> None:
        self.reviews: list[dict[str, Any]] = []
        #: client (address, port) of each call: one per connection
        self.peers: set[Any] = set()

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        self.peers.add(request.transport.get_extra_info("peername") if request.transport
                       else None)
        req = review["request"]
        pod = req["object"]
        response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        if pod["metadata"].get("labels", {}).get("deny"):
            response = {"uid": req["uid"], "allowed": False,
                        "status": {"code": 403, "message": "no address left"}}
        else:
            ops = [{"op": "add", "path": "/metadata/annotations/stickyip.io~1ip",
                    "value": "10.20.0.7"}]
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        return web.json_response({"apiVersion": "admission.k8s.io/v1",
                                  "kind": "AdmissionReview", "response": response})


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[tuple[Webhook, str, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/mutate", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    yield hook, f"https://127.0.0.1:{port}/mutate", str(ca_file)
    await runner.cleanup()


async def test_statefulset_pods_are_mutated_by_the_webhook(
        webhook: tuple[Webhook, str, str]) -> None:
    hook, url, ca_file = webhook
    target = WebhookTarget(url=url, ca_file=ca_file, name="pods.stickyip.io",
                           object_selector={"matchLabels": {"app": "db"}})
    async with KubeStandIn(mutating_webhooks=[target]) as api:
        await api.create(objects.statefulset("db", replicas=1,
                                             template_annotations={"stickyip.io/fixed-ip":
                                                                   "true"}))
        await api.create(objects.pod("unselected", labels={"app": "other"}))
        await api.settle()
        pod = await api.get("v1", "Pod", "db-0")
        assert pod is not None
        assert pod["metadata"]["annotations"] == {"stickyip.io/fixed-ip": "true",
                                                  "stickyip.io/ip": "10.20.0.7"}
        [review] = hook.reviews  # the unselected pod never reached the webhook
        req = review["request"]
        assert (review["apiVersion"], review["kind"]) == ("admission.k8s.io/v1",
                                                          "AdmissionReview")
        assert req["operation"] == "CREATE" and req["namespace"] == "default"
        assert req["name"] == "db-0"
        assert req["resource"] == {"group": "", "version": "v1", "resource": "pods"}
        assert req["object"]["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"


async def test_a_denial_rejects_the_create_over_http(
        webhook: tuple[Webhook, str, str]) -> None:
    _, url, ca_file = webhook
    async with KubeStandIn(mutating_webhooks=[WebhookTarget(url=url, ca_file=ca_file)]) as api:
        ac = api_client(KubeSettings(kube_host=api.url))
        v1 = client.CoreV1Api(ac)
        with pytest.raises(client.ApiException) as e:
            await asyncio.to_thread(v1.create_namespaced_pod, "default",
                                    objects.pod("p", labels={"deny": "yes"}))
        assert e.value.status == 403
        assert "denied the request: no address left" in json.loads(e.value.body)["message"]
        assert await api.get("v1", "Pod", "p") is None
        # A denied StatefulSet pod becomes a FailedCreate Event on the StatefulSet.
        await api.create(objects.statefulset("bad", replicas=1,
                                             template_labels={"app": "bad", "deny": "yes"}))
        await api.settle()
        assert await api.get("v1", "Pod", "bad-0") is None
        [event] = await api.list("v1", "Event", field_selector="involvedObject.name=bad")
        assert event["reason"] == "FailedCreate" and "no address left" in event["message"]

        # The controller keeps retrying (with backoff), like the real one.
        async def retried(a: KubeStandIn) -> bool:
            [ev] = await a.list("v1", "Event", field_selector="involvedObject.name=bad")
            return int(ev["count"]) >= 3

        await api.wait_for(retried, timeout=10)
        created = await asyncio.to_thread(v1.create_namespaced_pod, "default",
                                          objects.pod("q"))
        assert created.metadata.annotations["stickyip.io/ip"] == "10.20.0.7"
        await asyncio.to_thread(ac.close)


async def test_failure_policy_when_the_webhook_is_unreachable(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # Port 1 on loopback: nothing listens there.
    down = "https://127.0.0.1:1/mutate"
    async with KubeStandIn(mutating_webhooks=[WebhookTarget(url=down, ca_file=str(ca_file),
                                                            timeout_seconds=2)]) as api:
        with pytest.raises(StandInError) as e:
            await api.create(objects.pod("p"))
        assert e.value.code == 500 and "failed calling webhook" in e.value.message
    async with KubeStandIn(mutating_webhooks=[WebhookTarget(
            url=down, ca_file=str(ca_file), failure_policy="Ignore")]) as api:
        assert (await api.create(objects.pod("p")))["metadata"]["annotations"] == {}


async def test_an_untrusted_certificate_fails_the_call(
        webhook: tuple[Webhook, str, str], tmp_path: Path) -> None:
    _, url, _ = webhook
    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    async with KubeStandIn(mutating_webhooks=[WebhookTarget(url=url,
                                                            ca_file=str(other_ca))]) as api:
        with pytest.raises(StandInError) as e:
            await api.create(objects.pod("p"))
        assert e.value.code == 500


async def test_calls_reuse_their_connection(webhook: tuple[Webhook, str, str]) -> None:
    """Like kube-apiserver, the stand-in keeps its connection to a webhook: a TLS
    handshake per pod would make pod creation cost what the webhook does not."""
    hook, url, ca_file = webhook
    target = WebhookTarget(url=url, ca_file=ca_file, object_selector={
        "matchLabels": {"app": "db"}})
    async with KubeStandIn(mutating_webhooks=[target]) as api:
        for i in range(10):
            await api.create(objects.pod(f"db-{i}", labels={"app": "db"}))
    assert len(hook.reviews) == 10
    assert len(hook.peers) == 1, hook.peers
