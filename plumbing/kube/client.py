"""Kubernetes client factory shared by every component (official ``kubernetes`` client).

Order: an explicit ``host`` (the local API stand-in used by tests and the demo),
then in-cluster service-account credentials, then ``KUBECONFIG``/~/.kube/config.
"""

from __future__ import annotations

import os

from kubernetes import client, config
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KubeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_", extra="ignore")

    kube_host: str = Field(default="", description="API server URL overriding kubeconfig "
                           "(e.g. the local stand-in http://127.0.0.1:PORT)")
    kubeconfig: str = Field(default="", description="kubeconfig path (default: KUBECONFIG "
                            "or ~/.kube/config; in-cluster credentials when running in a pod)")
    kube_qps_timeout: float = Field(default=10.0, description="request timeout in seconds")


def api_client(settings: KubeSettings | None = None) -> client.ApiClient:
    s = settings or KubeSettings()
    if s.kube_host:
        cfg = client.Configuration()
        cfg.host = s.kube_host
        cfg.verify_ssl = False
        return client.ApiClient(cfg)
    if os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token") and not s.kubeconfig:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    cfg = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=s.kubeconfig or None, client_configuration=cfg)
    return client.ApiClient(cfg)
