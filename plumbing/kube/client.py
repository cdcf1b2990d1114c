"""The Kubernetes client factory every component uses (the official ``kubernetes``
client), built from :class:`KubeSettings`.

Where the API server and the credentials come from, in this order:

1. ``STICKYIP_KUBE_HOST``: an explicit URL. ``http://`` is plain HTTP without
   authentication (the local API stand-in of the tests and the demo), and a log line
   says so; ``https://`` always verifies the server's certificate, against
   ``STICKYIP_KUBE_CA_FILE`` or else the system CA bundle, and sends the bearer token
   of ``STICKYIP_KUBE_TOKEN_FILE`` when one is given. Verification is never turned off.
2. In-cluster service-account credentials, when running in a pod (and no
   ``STICKYIP_KUBECONFIG`` is set).
3. A kubeconfig: ``STICKYIP_KUBECONFIG``, else ``KUBECONFIG``, else ``~/.kube/config``.

Whatever is missing or unreadable raises :class:`plumbing.kube.errors.ConfigError`
(:class:`~plumbing.kube.errors.NoCredentials` when nothing is configured at all) with
a one-line message that says what to set.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from urllib3.util.retry import Retry

from plumbing.kube.errors import ConfigError, NoCredentials, redact

__all__ = ["SERVICE_ACCOUNT_TOKEN", "KubeSettings", "api_client", "configuration"]

log = logging.getLogger("stickyip.kube")

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class KubeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STICKYIP_", extra="ignore")

    kube_host: str = Field(default="", description="API server URL overriding in-cluster "
                           "credentials and kubeconfig: http://HOST:PORT is plain HTTP "
                           "without authentication (the local API stand-in; logged at "
                           "start), https://HOST:PORT always verifies TLS")
    kube_ca_file: str = Field(default="", description="PEM CA bundle that verifies an "
                              "https:// kube_host (default: the system CA bundle)")
    kube_token_file: str = Field(default="", description="file holding the bearer token "
                                 "sent to an https:// kube_host (default: none)")
    kubeconfig: str = Field(default="", description="kubeconfig path (default: KUBECONFIG "
                            "or ~/.kube/config; in-cluster credentials when running in a pod)")
    kube_qps_timeout: float = Field(default=10.0, gt=0,
                                    description="timeout of one API request, in seconds")
    kube_startup_timeout: float = Field(default=30.0, ge=0, description="how long a server "
                                        "waits at start for the API server to answer "
                                        "before it exits with an error, in seconds")


def _configuration() -> client.Configuration:
    cfg = client.Configuration()
    # No connect retries inside urllib3: callers retry with their own backoff (watches,
    # start-up), so a refused connection is reported once instead of three times.
    cfg.retries = Retry(total=3, connect=0, backoff_factor=0)
    return cfg


def _explicit_host(s: KubeSettings) -> client.Configuration:
    url = urlsplit(s.kube_host)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"STICKYIP_KUBE_HOST={redact(s.kube_host)!r} is not an API server "
                          "URL: use http://HOST:PORT (the local API stand-in) or "
                          "https://HOST:PORT")
    cfg = _configuration()
    cfg.host = s.kube_host.rstrip("/")
    if url.scheme == "http":
        if s.kube_ca_file or s.kube_token_file:
            raise ConfigError("STICKYIP_KUBE_CA_FILE and STICKYIP_KUBE_TOKEN_FILE apply to an "
                              f"https:// API server, not to {redact(s.kube_host)}")
        log.warning("Kubernetes API over plain HTTP, without TLS or authentication (meant "
                    "for the local API stand-in)", extra={"kube_host": redact(s.kube_host)})
        return cfg
    cfg.verify_ssl = True
    if s.kube_ca_file:
        if not os.path.isfile(s.kube_ca_file):
            raise ConfigError(f"STICKYIP_KUBE_CA_FILE {s.kube_ca_file} does not exist")
        cfg.ssl_ca_cert = s.kube_ca_file
    if s.kube_token_file:
        try:
            with open(s.kube_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ConfigError(f"cannot read STICKYIP_KUBE_TOKEN_FILE {s.kube_token_file}: "
                              f"{e.strerror}") from e
        cfg.api_key = {"authorization": f"Bearer {token}"}
    return cfg


def _kubeconfig(s: KubeSettings) -> client.Configuration:
    path = s.kubeconfig or os.path.expanduser(KUBE_CONFIG_DEFAULT_LOCATION)
    if not s.kubeconfig and not any(os.path.exists(p) for p in path.split(os.pathsep)):
        raise NoCredentials(
            "no Kubernetes credentials: not running in a pod (no service-account token at "
            f"{SERVICE_ACCOUNT_TOKEN}) and no kubeconfig at {path}; set KUBECONFIG or "
            "STICKYIP_KUBECONFIG to a kubeconfig, or STICKYIP_KUBE_HOST to the API server")
    if s.kubeconfig and not os.path.isfile(s.kubeconfig):
        raise ConfigError(f"kubeconfig {s.kubeconfig} (STICKYIP_KUBECONFIG) does not exist "
                          "or is not a file")
    for one in path.split(os.pathsep):
        _check_kubeconfig(one)
    cfg = _configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=cfg)
    except (ConfigException, ValueError, TypeError, KeyError, AttributeError, OSError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(redact(f"kubeconfig {path} is not usable: {detail}")) from e
    return cfg


def _check_kubeconfig(path: str) -> None:
    """A readable YAML mapping (the client's own errors for anything else are cryptic)."""
    if not os.path.exists(path):
        return  # one of several KUBECONFIG entries may be absent, as kubectl allows
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read kubeconfig {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = getattr(e, "problem", None) or str(e)
        raise ConfigError(redact(f"kubeconfig {path} is not valid YAML{where}: {what}")) from e
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a kubeconfig (expected a YAML mapping "
                          "with clusters, users and contexts)")


def configuration(settings: KubeSettings) -> client.Configuration:
    """The client configuration ``settings`` select (see the module docstring)."""
    if settings.kube_host:
        return _explicit_host(settings)
    if os.path.exists(SERVICE_ACCOUNT_TOKEN) and not settings.kubeconfig:
        cfg = _configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except ConfigException as e:
            raise ConfigError(redact(f"in-cluster credentials are not usable: {e}")) from e
        return cfg
    return _kubeconfig(settings)


def api_client(settings: KubeSettings | None = None) -> client.ApiClient:
    """An ``ApiClient`` for ``settings`` (default: from the environment). Raises
    ``ConfigError`` when no usable configuration exists; it does not contact the server."""
    return client.ApiClient(configuration(settings or KubeSettings()))
