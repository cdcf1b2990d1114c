"""Every failure of the official client becomes one ``plumbing.kube.errors`` leaf with
its status and a one-line message that names the request and carries no credential."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from plumbing.kube import errors


def status_body(code: int, message: str, reason: str = "") -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": message, "reason": reason, "code": code})


@pytest.mark.parametrize(("code", "cls"), [
    (400, errors.Invalid), (401, errors.Forbidden), (403, errors.Forbidden),
    (404, errors.NotFound), (405, errors.Invalid), (409, errors.Conflict),
    (410, errors.Gone), (415, errors.Invalid), (422, errors.Invalid),
    (429, errors.Unavailable), (500, errors.Unavailable), (503, errors.Unavailable),
    (504, errors.Unavailable),
])
def test_each_http_status_has_its_class(code: int, cls: type[errors.KubeError]) -> None:
    e = errors.translate(ApiException(status=code, reason="Why",
                                      http_resp=None), "GET /api/v1/pods")
    assert type(e) is cls and e.status == code
    assert str(e).startswith("GET /api/v1/pods: ") and f"(HTTP {code})" in str(e)


def test_the_status_message_and_reason_are_read_from_the_body() -> None:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = status_body(409, 'Operation cannot be fulfilled on pods "web-0": the object '
                           "has been modified", "Conflict")
    e = errors.translate(exc, "PATCH /api/v1/namespaces/default/pods/web-0")
    assert isinstance(e, errors.Conflict) and e.reason == "Conflict"
    assert str(e) == ('PATCH /api/v1/namespaces/default/pods/web-0: Operation cannot be '
                      'fulfilled on pods "web-0": the object has been modified (HTTP 409)')
    assert e.detail.startswith("Operation cannot be fulfilled")


def test_a_body_that_is_not_json_is_used_as_text() -> None:
    e = errors.from_status(502, "<html>\nbad gateway\n</html>", "GET /version")
    assert isinstance(e, errors.Unavailable)
    assert str(e) == "GET /version: <html> bad gateway </html> (HTTP 502)"


def test_too_old_resource_version_is_gone_whatever_the_code() -> None:
    """A watch ERROR event: some API servers send it with code 500, not 410."""
    event = {"kind": "Status", "code": 500, "message": "too old resource version: 5 (90)"}
    e = errors.from_status(None, event, "watch /api/v1/pods")
    assert isinstance(e, errors.Gone) and e.status == 500
    expired = errors.from_status(None, {"code": 410, "reason": "Expired",
                                        "message": "resourceVersion 5 expired"}, "watch x")
    assert isinstance(expired, errors.Gone) and expired.reason == "Expired"


def test_a_refused_connection_is_unavailable_with_its_cause() -> None:
    # What urllib3 raises when nothing listens: the socket error is the cause.
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as sock:
            raise urllib3.exceptions.NewConnectionError(
                None, "Failed to establish a new connection") from sock  # type: ignore[arg-type]
    except urllib3.exceptions.NewConnectionError as new:
        retry = urllib3.exceptions.MaxRetryError(None, "/version", new)  # type: ignore[arg-type]
    e = errors.translate(retry, "GET /version")
    assert isinstance(e, errors.Unavailable) and e.status is None
    assert str(e) == "GET /version: cannot reach the Kubernetes API server (connection refused)"
    assert e.detail == "connection refused"


def test_a_tls_failure_reported_as_status_0_names_the_verification() -> None:
    """The client turns urllib3's SSLError into ApiException(status=0) while handling it."""
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    try:
        try:
            raise urllib3.exceptions.SSLError("SSL failed") from verify
        except urllib3.exceptions.SSLError as ssl_error:
            # As kubernetes/client/rest.py does it.
            raise ApiException(status=0, reason=f"SSLError\n{ssl_error}")  # noqa: B904
    except ApiException as api_exc:
        caught = api_exc
    e = errors.translate(caught, "GET /version")
    assert isinstance(e, errors.Unavailable)
    assert "TLS verification of the API server failed: unable to get local issuer " \
        "certificate" in str(e)


def test_timeouts_say_timed_out() -> None:
    e = errors.translate(TimeoutError("timed out"), "GET /api/v1/nodes")
    assert isinstance(e, errors.Unavailable) and e.detail == "timed out"
    read = urllib3.exceptions.ReadTimeoutError(None, "/x", "Read timed out.")  # type: ignore[arg-type]
    assert errors.translate(read, "GET /x").detail == "timed out"


def test_a_kubeconfig_exception_is_a_config_error() -> None:
    e = errors.translate(ConfigException("Service host/port is not set."), "in-cluster")
    assert isinstance(e, errors.ConfigError) and "Service host/port is not set." in str(e)


def test_translated_raises_from_the_original() -> None:
    with pytest.raises(errors.NotFound) as info, errors.translated("GET /api/v1/nodes/n1"):
        raise ApiException(status=404, reason="Not Found")
    assert isinstance(info.value.__cause__, ApiException)
    with pytest.raises(errors.Unavailable), errors.translated("GET /x"):
        raise ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(ZeroDivisionError), errors.translated("GET /x"):
        _ = 1 / 0  # a bug is not a Kubernetes error


def test_messages_carry_no_credentials() -> None:
    exc = ApiException(status=401, reason="Unauthorized")
    exc.body = status_body(401, "token Bearer eyJhbGciOiJSUzI1NiJ9.abc.def rejected for "
                           "https://admin:s3cret@10.0.0.1:6443/api?token=abc123&x=1")
    text = str(errors.translate(exc, "GET /api"))
    for secret in ("eyJhbGciOiJSUzI1NiJ9", "s3cret", "admin:", "abc123"):
        assert secret not in text
    assert "Bearer ***" in text and "https://***@10.0.0.1:6443" in text and "token=***" in text


def test_messages_are_one_bounded_line() -> None:
    e = errors.from_status(500, {"message": "line one\nline two\t" + "x" * 1000},
                           "GET /api/v1/pods")
    assert "\n" not in str(e) and len(str(e)) <= 300 and str(e).endswith("...")


def test_importing_the_errors_loads_no_client() -> None:
    """Code that only catches these errors stays free of the Kubernetes client."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, plumbing.kube.errors; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in "
         "('kubernetes', 'urllib3', 'aiohttp', 'redis')))"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
