"""Settings of the admission webhook server, read from ``STICKYIP_WEBHOOK_*``
environment variables (the store, ``STICKYIP_REDIS_URL``, is chosen by the
``stickyip`` command: see stickyip/store.py)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_WEBHOOK_", extra="ignore")

    host: str = Field(default="0.0.0.0", description="address to listen on")
    port: int = Field(default=8443, ge=0, le=65535,
                      description="HTTPS port to listen on (0: any free port)")
    cert_file: str = Field(default="", description="PEM certificate chain served (tls.crt)")
    key_file: str = Field(default="", description="PEM private key of the certificate (tls.key)")
    reload_interval: float = Field(
        default=2.0, gt=0, description="seconds between checks of the cert and key files "
        "for changes (a changed pair is served to new connections)")
    scheduler_name: str = Field(
        default="", description="schedulerName set on opted-in pods (e.g. stickyip-scheduler) "
        "when the sticky scheduler is deployed; empty leaves schedulerName alone")
    store_deadline: float = Field(
        default=1.5, gt=0, le=4.0, description="seconds one admission request may wait on "
        "the IPAM store and the Kubernetes API together, all retries included: the API "
        "server gives the webhook timeoutSeconds (5 in the manifests), so a stalled store "
        "is answered with a clear 500 well before that; /readyz waits at most as long")
    shutdown_timeout: float = Field(
        default=10.0, ge=0, description="seconds in-flight requests get to finish on SIGTERM")
