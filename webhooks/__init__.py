"""The stickyip admission webhooks: an aiohttp HTTPS server that pins opted-in
StatefulSet pods to their sticky reservations and refuses impossible requests.

The server itself lives in :mod:`webhooks.server` (not imported here, so the pure
decision modules can be imported without aiohttp)."""

from webhooks.config import WebhookSettings
from webhooks.errors import BadReview, CertificateError, WebhookError
from webhooks.review import AdmissionRequest, Verdict, parse_review, response

__all__ = [
    "AdmissionRequest",
    "BadReview",
    "CertificateError",
    "Verdict",
    "WebhookError",
    "WebhookSettings",
    "parse_review",
    "response",
]
