"""Errors of the Kubernetes API stand-in; each maps to a Kubernetes ``Status`` response."""

from __future__ import annotations

from typing import Any


class StandInError(Exception):
    """Root of the stand-in's errors: an API failure with its HTTP code and Status reason."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, kind: str = "", name: str = "", group: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group

    def status(self) -> dict[str, Any]:
        """The ``metav1.Status`` body kube-apiserver sends for this failure."""
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if details:
            body["details"] = details
        return body


class BadRequest(StandInError):
    code = 400
    reason = "BadRequest"


class Forbidden(StandInError):
    code = 403
    reason = "Forbidden"


class NotFound(StandInError):
    code = 404
    reason = "NotFound"


class MethodNotAllowed(StandInError):
    code = 405
    reason = "MethodNotAllowed"


class Conflict(StandInError):
    code = 409
    reason = "Conflict"


class AlreadyExists(StandInError):
    code = 409
    reason = "AlreadyExists"


class Gone(StandInError):
    code = 410
    reason = "Expired"


class UnsupportedMediaType(StandInError):
    code = 415
    reason = "UnsupportedMediaType"


class Invalid(StandInError):
    code = 422
    reason = "Invalid"


class InternalError(StandInError):
    code = 500
    reason = "InternalError"
