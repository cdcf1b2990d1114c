"""Errors of the admission webhooks: one root, leaves that say what happened."""

from __future__ import annotations


class WebhookError(Exception):
    """Root of every webhook error."""


class BadReview(WebhookError):
    """The request body is not an AdmissionReview this endpoint can judge (HTTP 400)."""


class CertificateError(WebhookError):
    """The serving certificate or key cannot be loaded."""


class ClusterUnavailable(WebhookError):
    """The Kubernetes API cannot be reached or answered with an error (HTTP 500)."""
