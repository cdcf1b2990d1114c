"""Prometheus metrics of one webhook server, in its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

#: Verdicts: allowed (with or without patch), denied, bad_request (HTTP 400),
#: error (HTTP 500, e.g. the store is down).
VERDICTS = ("allowed", "denied", "bad_request", "error")


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "stickyip_webhook_requests", "Admission requests by endpoint and verdict",
            ["endpoint", "verdict"], registry=self.registry)
        self.latency = Histogram(
            "stickyip_webhook_request_duration_seconds",
            "Time from request received to response ready, per endpoint", ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0),
            registry=self.registry)
        self.ipam_errors = Counter(
            "stickyip_webhook_ipam_errors", "IPAM calls that failed, by error class",
            ["error"], registry=self.registry)
        self.cert_reloads = Counter(
            "stickyip_webhook_cert_reloads", "Serving certificate reloads by result",
            ["result"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
