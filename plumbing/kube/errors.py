"""Kubernetes API failures as stickyip errors: the one module that reads the official
client's ``ApiException``, urllib3's errors and socket ``OSError``s.

Every request stickyip makes to the API either succeeds or raises a :class:`KubeError`
leaf that says what happened, with the HTTP ``status`` (``None`` when no answer came)
and a one-line message that names the request and never carries a credential::

    from plumbing.kube import errors

    with errors.translated(f"read StatefulSet {ns}/{name}"):
        apps.read_namespaced_stateful_set(name, ns)      # official client call
    # raises errors.NotFound, errors.Forbidden, errors.Unavailable, ...

``translate(exc, what)`` does the same for an exception already caught, and
``from_status(code, body, what)`` for a ``metav1.Status`` (an HTTP error body or a
watch ``ERROR`` event). This module imports no I/O library until a translation runs,
so code that only catches these errors stays free of the Kubernetes client.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from plumbing.redact import one_line

__all__ = [
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeError",
    "NoCredentials",
    "NotFound",
    "Unavailable",
    "from_status",
    "redact",
    "translate",
    "translated",
]


class KubeError(Exception):
    """Root of every Kubernetes API failure. ``status``: the HTTP status, or None when
    the API server gave no answer; ``reason``: the Status reason (``NotFound``, ...);
    ``detail``: what went wrong without the request it happened to (the whole message
    is ``"<request>: <detail>"``)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "",
                 detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.detail = detail or message


class NotFound(KubeError):
    """The object does not exist (HTTP 404)."""


class Conflict(KubeError):
    """The object changed, already exists or failed a precondition (HTTP 409)."""


class Gone(KubeError):
    """A resourceVersion is too old to resume from (HTTP 410, or a watch ``ERROR`` that
    says "too old resource version"): list again."""


class Forbidden(KubeError):
    """The API server refused our credentials (401) or RBAC denies the request (403)."""


class Invalid(KubeError):
    """The API server refused the request itself (400, 422 and other 4xx): a bug or a
    bad input on our side; retrying the same request does not help."""


class Unavailable(KubeError):
    """No answer (connection refused, timeout, TLS failure) or a server-side failure
    (5xx, 429): worth retrying later."""


class ConfigError(KubeError):
    """No usable client configuration: no in-cluster credentials and no kubeconfig, a
    kubeconfig that cannot be read, or an API server URL that is not http(s)://."""


class NoCredentials(ConfigError):
    """Nothing is configured at all: not in a pod, no kubeconfig, no API server URL."""


_BY_STATUS: dict[int, type[KubeError]] = {
    400: Invalid, 401: Forbidden, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone,
    422: Invalid, 429: Unavailable,
}
_TOO_OLD = "too old resource version"
_MAX_MESSAGE = 300


def redact(text: str) -> str:
    """``text`` on one line, without URL credentials, Authorization values or
    token/password parameters, and at most 300 characters long."""
    return one_line(text, limit=_MAX_MESSAGE)


def _status_class(code: int, message: str) -> type[KubeError]:
    if _TOO_OLD in message.lower():
        return Gone
    if code in _BY_STATUS:
        return _BY_STATUS[code]
    if code >= 500 or code == 0:
        return Unavailable
    if 400 <= code < 500:
        return Invalid
    return KubeError


def from_status(code: int | None, body: Any, what: str, *, reason: str = "") -> KubeError:
    """The error for an HTTP ``code`` whose ``body`` is a ``metav1.Status`` (JSON text,
    bytes or an already decoded dict; anything else is used as plain text)."""
    status: dict[str, Any] = {}
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip():
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = {"message": body}
        status = decoded if isinstance(decoded, dict) else {}
    elif isinstance(body, dict):
        status = body
    if code is None:
        raw = status.get("code")
        code = raw if isinstance(raw, int) else 0
    message = str(status.get("message") or reason or "no reason given")
    reason = str(status.get("reason") or reason)
    cls = _status_class(code, message)
    detail = redact(f"{message} (HTTP {code})")
    return cls(redact(f"{what}: {detail}"), status=code or None, reason=reason, detail=detail)


def _why(e: BaseException) -> str:
    """The root cause of a failed connection, in a few words."""
    seen: set[int] = set()
    cur: BaseException | None = e
    last = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        last = cur
        if isinstance(cur, ssl.SSLCertVerificationError):
            return (f"TLS verification of the API server failed: "
                    f"{cur.verify_message or cur.reason}")
        if isinstance(cur, ssl.SSLError):
            return f"TLS error: {cur.reason or cur}"
        if isinstance(cur, TimeoutError):
            return "timed out"
        if isinstance(cur, OSError) and cur.strerror:
            return str(cur.strerror).lower()
        nxt = getattr(cur, "reason", None)  # urllib3 MaxRetryError.reason
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    name = type(last).__name__
    if "Timeout" in name:
        return "timed out"
    text = str(last)
    return f"{name}: {text}" if text else name


def translate(e: BaseException, what: str) -> KubeError:
    """The :class:`KubeError` for an exception of the official client: ``ApiException``
    (an HTTP error answer), a urllib3 ``HTTPError`` or an ``OSError`` (no answer), or a
    kubeconfig ``ConfigException``. A ``KubeError`` is returned as it is."""
    if isinstance(e, KubeError):
        return e
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    if isinstance(e, ApiException) and e.status:
        return from_status(e.status, e.body, what, reason=str(e.reason or ""))
    if isinstance(e, ConfigException):
        return ConfigError(redact(f"{what}: {e}"))
    # No answer. The client reports TLS failures as an ApiException with status 0,
    # raised while handling urllib3's error: the cause is in the chain.
    why = redact(_why(e.__context__ or e) if isinstance(e, ApiException) else _why(e))
    return Unavailable(f"{what}: cannot reach the Kubernetes API server ({why})", detail=why)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise what fails inside the block as a :class:`KubeError` (``from`` the original)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        yield
    except (ApiException, ConfigException, urllib3.exceptions.HTTPError, OSError) as e:
        raise translate(e, what) from e
