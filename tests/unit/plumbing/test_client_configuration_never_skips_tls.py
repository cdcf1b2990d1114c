"""Where the client's API server and credentials come from: an http:// stand-in is
plain HTTP and says so, an https:// server is always verified, and a missing or broken
configuration is one ConfigError line that says what to set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from plumbing.kube import client as kube_client
from plumbing.kube.client import KubeSettings, configuration
from plumbing.kube.errors import ConfigError, NoCredentials

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: false}
users:
- name: u
  user: {token: "abc"}
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
"""


@pytest.fixture(autouse=True)
def not_in_a_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No service-account token and no default kubeconfig, whatever the machine has."""
    monkeypatch.setattr(kube_client, "SERVICE_ACCOUNT_TOKEN", str(tmp_path / "no-token"))
    monkeypatch.setattr(kube_client, "KUBE_CONFIG_DEFAULT_LOCATION",
                        str(tmp_path / "no-kubeconfig"))


def test_an_http_host_is_plain_http_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stickyip.kube"):
        cfg = configuration(KubeSettings(kube_host="http://127.0.0.1:8080/"))
    assert cfg.host == "http://127.0.0.1:8080"
    (record,) = caplog.records
    assert "plain HTTP" in record.getMessage()
    assert record.__dict__["kube_host"] == "http://127.0.0.1:8080/"


def test_an_https_host_verifies_with_the_system_bundle_by_default(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stickyip.kube"):
        cfg = configuration(KubeSettings(kube_host="https://api.example:6443"))
    assert cfg.verify_ssl is True and cfg.ssl_ca_cert is None  # None: system CA bundle
    assert caplog.records == []


def test_an_https_host_takes_a_ca_file_and_a_token_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    cfg = configuration(KubeSettings(kube_host="https://api.example:6443",
                                     kube_ca_file=str(ca), kube_token_file=str(token)))
    assert cfg.verify_ssl is True and cfg.ssl_ca_cert == str(ca)
    assert cfg.api_key == {"authorization": "Bearer s3cret-token"}


@pytest.mark.parametrize(("settings", "says"), [
    ({"kube_host": "127.0.0.1:8080"}, "is not an API server URL"),
    ({"kube_host": "ftp://api"}, "is not an API server URL"),
    ({"kube_host": "https://api:6443", "kube_ca_file": "/no/ca.pem"},
     "STICKYIP_KUBE_CA_FILE /no/ca.pem does not exist"),
    ({"kube_host": "https://api:6443", "kube_token_file": "/no/token"},
     "cannot read STICKYIP_KUBE_TOKEN_FILE /no/token"),
    ({"kube_host": "http://127.0.0.1:8080", "kube_ca_file": "/x"},
     "apply to an https:// API server"),
    ({"kubeconfig": "/no/kubeconfig"},
     "kubeconfig /no/kubeconfig (STICKYIP_KUBECONFIG) does not exist"),
])
def test_a_bad_setting_is_one_clear_line(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        configuration(KubeSettings(**settings))
    assert says in str(info.value) and "\n" not in str(info.value)
    assert not isinstance(info.value, NoCredentials)


def test_nothing_configured_is_no_credentials_and_says_what_to_set() -> None:
    with pytest.raises(NoCredentials) as info:
        configuration(KubeSettings())
    text = str(info.value)
    assert "not running in a pod" in text and "KUBECONFIG" in text and \
        "STICKYIP_KUBE_HOST" in text


def test_a_kubeconfig_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    cfg = configuration(KubeSettings(kubeconfig=str(path)))
    assert cfg.host == "https://10.0.0.1:6443" and cfg.verify_ssl is True


@pytest.mark.parametrize(("text", "says"), [
    ("clusters: [\n  - name: a\n bad", "is not valid YAML"),
    ("just a string", "is not a kubeconfig"),
    ("apiVersion: v1\nkind: Config\n", "is not usable"),
])
def test_a_broken_kubeconfig_is_one_clear_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        configuration(KubeSettings(kubeconfig=str(path)))
    assert f"kubeconfig {path} {says}" in str(info.value)
    assert "\n" not in str(info.value)


def test_in_a_pod_without_service_env_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    monkeypatch.setattr(kube_client, "SERVICE_ACCOUNT_TOKEN", str(token))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="in-cluster credentials are not usable"):
        configuration(KubeSettings())
