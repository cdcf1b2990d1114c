"""Property-based fuzzing of the admission endpoints over real HTTPS: random
bytes, random JSON and AdmissionReviews with random parts replaced never get a
5xx (the store is up), never change the store, and never take the server down."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipam import PoolSpec, check_and_repair, open_ipam
from tests.support.admission import Certs, review, statefulset, statefulset_pod
from tests.support.redis_server import RedisServer
from webhooks.config import WebhookSettings
from webhooks.server import start

ENDPOINTS = ("/mutate-pods", "/validate-statefulsets", "/validate-pods")
FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


class ServerThread:
    """The webhook served from its own event loop in a thread, so synchronous
    hypothesis tests can drive it with a plain keep-alive HTTPS client."""

    def __init__(self, redis_url: str, directory: str) -> None:
        self.redis_url = redis_url
        self.certs = Certs(directory)
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to the test thread
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        ipam = await open_ipam(self.redis_url, actor="fuzz")
        await ipam.apply_pool(PoolSpec(name="default", cidr="10.60.0.0/24", block_size=28))
        await ipam.apply_pool(PoolSpec(name="pool-a", cidr="10.20.0.0/24", block_size=28))
        s = WebhookSettings(host="127.0.0.1", port=0, cert_file=self.certs.cert_file,
                            key_file=self.certs.key_file, shutdown_timeout=1.0)
        server = await start(s, ipam)
        self.port = server.port
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()
            await ipam.aclose()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


class Https:
    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port, self.ctx = port, ctx
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError):
                # The server may close a connection after a 400 it did not read to
                # the end; a new connection is what the API server would use too.
                self.conn.close()
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port,
                                                        context=self.ctx, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def served(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Https, redis.Redis]]:
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    directory: Path = tmp_path_factory.mktemp("fuzz-certs")
    with ServerThread(redis_server.url, str(directory)) as server:
        yield Https(server.port, server.certs.client_context()), r
    r.close()


def snapshot(r: redis.Redis) -> dict[Any, Any]:
    return {k: r.dump(k) for k in sorted(r.keys("*"))}


def check(served: tuple[Https, redis.Redis], path: str, body: bytes,
          uid: Any = None) -> None:
    client, r = served
    before = snapshot(r)
    status, raw = client.request("POST", path, body)
    assert status in (200, 400), (status, raw[:300])
    if status == 400:
        assert raw.strip() and b"\n" not in raw.strip()
    else:
        answer = json.loads(raw)
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        assert isinstance(answer["response"]["allowed"], bool)
        if uid is not None:
            assert answer["response"]["uid"] == uid
        for w in answer["response"].get("warnings", []):
            assert len(w) < 120
    assert snapshot(r) == before
    assert client.request("GET", "/healthz")[0] == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20)


def base_reviews() -> list[dict[str, Any]]:
    sts = statefulset("web", annotations={"stickyip.io/pool": "pool-a",
                                          "stickyip.io/ips": "10.20.0.10-10.20.0.12"})
    pod = statefulset_pod(sts, 1)
    pod["metadata"]["annotations"]["stickyip.io/ip"] = "10.20.0.11"
    return [review(pod, dry_run=True), review(sts), review(sts, old=sts, operation="UPDATE")]


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), body=st.binary(max_size=2048))
def test_random_bytes(served: tuple[Https, redis.Redis], path: str, body: bytes) -> None:
    check(served, path, body)


@FUZZ
@given(path=st.sampled_from(ENDPOINTS), doc=json_values)
def test_random_json(served: tuple[Https, redis.Redis], path: str, doc: Any) -> None:
    check(served, path, json.dumps(doc).encode())


@FUZZ
@given(data=st.data(), path=st.sampled_from(ENDPOINTS),
       base=st.sampled_from(range(len(base_reviews()))))
def test_reviews_with_random_parts(served: tuple[Https, redis.Redis], data: st.DataObject,
                                   path: str, base: int) -> None:
    doc = copy.deepcopy(base_reviews()[base])
    # dryRun stays true on the mutating review: the store must not change.
    choices = [p for p in paths(doc) if p != ("request", "dryRun")]
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(choices))
        parent: Any = doc
        try:
            for step in where[:-1]:
                parent = parent[step]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(where[-1], None)
            else:
                parent[where[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    uid = doc.get("request", {}).get("uid") if isinstance(doc.get("request"), dict) else None
    check(served, path, json.dumps(doc).encode(), uid if isinstance(uid, str) and uid else None)


annotation_keys = st.sampled_from(["stickyip.io/pool", "stickyip.io/ips", "stickyip.io/retain",
                                   "stickyip.io/node-failure", "stickyip.io/ip", "x/y"])
annotation_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["10.20.0.10-10.20.0.12", "10.20.0.300", "1.2.3.4-1.2.3.1", "pool-a",
                     "default", "24h", "forever", "-1s", "wait", "migrate", "10.60.0.5",
                     "10.20.0.10,10.20.0.10", "::1", "", " , "]))


@FUZZ
@given(path=st.sampled_from(ENDPOINTS),
       annotations=st.dictionaries(annotation_keys, annotation_values, max_size=5),
       label=st.sampled_from(["true", "false", "yes", "", "TRUE"]),
       ordinal=st.integers(0, 5), replicas=st.one_of(st.integers(-2, 40), st.none()))
def test_random_annotations(served: tuple[Https, redis.Redis], path: str,
                            annotations: dict[str, str], label: str, ordinal: int,
                            replicas: int | None) -> None:
    sts = statefulset("web", replicas=replicas, annotations=annotations)
    sts["spec"]["template"]["metadata"]["labels"]["stickyip.io/fixed-ip"] = label
    doc = review(sts) if path == "/validate-statefulsets" else \
        review(statefulset_pod(sts, ordinal), dry_run=True)
    check(served, path, json.dumps(doc).encode(), doc["request"]["uid"])


def test_oversized_body_is_400(served: tuple[Https, redis.Redis]) -> None:
    doc = base_reviews()[0]
    doc["request"]["object"]["metadata"]["annotations"]["pad"] = "x" * (3 * 1024 * 1024)
    client, _ = served
    status, raw = client.request("POST", "/mutate-pods", json.dumps(doc).encode())
    assert status == 400 and b"larger than" in raw
    assert client.request("GET", "/healthz")[0] == 200


@FUZZ
@given(annotations=st.dictionaries(annotation_keys, annotation_values, max_size=5),
       ordinal=st.integers(0, 5), name=st.sampled_from(["web", "db", "cache"]))
def test_random_annotations_for_real(served: tuple[Https, redis.Redis],
                                     annotations: dict[str, str], ordinal: int,
                                     name: str) -> None:
    """Without dryRun claims are written; whatever the annotations, the answer is a
    verdict (never a 4xx/5xx: the body is a valid AdmissionReview)."""
    client, _ = served
    doc = review(statefulset_pod(statefulset(name, annotations=annotations), ordinal))
    status, raw = client.request("POST", "/mutate-pods", json.dumps(doc).encode())
    assert status == 200, raw[:300]
    resp = json.loads(raw)["response"]
    assert resp["uid"] == doc["request"]["uid"]
    if not resp["allowed"]:
        assert 400 <= resp["status"]["code"] < 500 and resp["status"]["message"]


def test_store_is_consistent_after_fuzzing(served: tuple[Https, redis.Redis]) -> None:
    client, r = served
    url = "redis://{host}:{port}/0".format(**r.connection_pool.connection_kwargs)

    async def findings() -> list[Any]:
        ipam = await open_ipam(url, actor="check")
        try:
            return await check_and_repair(ipam)
        finally:
            await ipam.aclose()

    assert asyncio.run(findings()) == []
    assert client.request("GET", "/healthz")[0] == 200


def _bad_bodies() -> list[tuple[str, bytes, str]]:
    good = base_reviews()[0]
    wrong_version = copy.deepcopy(good)
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1"
    no_uid = copy.deepcopy(good)
    del no_uid["request"]["uid"]
    return [
        ("not JSON", b"<html>", "not JSON"),
        ("not a review", json.dumps({"kind": "Pod", "apiVersion": "v1"}).encode(),
         "not an AdmissionReview"),
        ("wrong apiVersion", json.dumps(wrong_version).encode(), "unsupported apiVersion"),
        ("missing uid", json.dumps(no_uid).encode(), "uid is missing"),
    ]


@pytest.mark.parametrize(("what", "body", "reason"), _bad_bodies(),
                         ids=[b[0] for b in _bad_bodies()])
def test_bad_input_is_400_with_one_line(served: tuple[Https, redis.Redis], what: str,
                                        body: bytes, reason: str) -> None:
    client, _ = served
    for path in ENDPOINTS:
        status, raw = client.request("POST", path, body)
        assert status == 400 and reason.encode() in raw
        assert raw.count(b"\n") == 1 and raw.endswith(b"\n")


def test_wrong_kind_for_endpoint_is_400(served: tuple[Https, redis.Redis]) -> None:
    client, _ = served
    sts_review = json.dumps(base_reviews()[1]).encode()
    status, raw = client.request("POST", "/mutate-pods", sts_review)
    assert status == 400 and b"judges Pod objects" in raw
    pod_review = json.dumps(base_reviews()[0]).encode()
    status, raw = client.request("POST", "/validate-statefulsets", pod_review)
    assert status == 400 and b"judges StatefulSet objects" in raw
