"""A component that cannot reach or authenticate to the Kubernetes API, or is given a
bad flag or setting, stops with one line that says what to fix and a non-zero exit
status: no traceback (issue 11.6). The real ``stickyip`` command, in a subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import one_error_line, stickyip, stickyip_env
from tests.support.redis_server import free_port


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # No kubeconfig and no in-cluster credentials unless a test gives some; a store
    # URL (never reached: what these tests check fails first).
    return stickyip(*args, env=stickyip_env(tmp_path / "home",
                                            STICKYIP_REDIS_URL="redis://127.0.0.1:1/0", **env))


@pytest.fixture(autouse=True)
def not_in_a_pod() -> None:
    if os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        pytest.skip("this machine has in-cluster credentials")


def test_scheduler_without_any_credentials(tmp_path: Path) -> None:
    proc = run(["scheduler"], tmp_path)
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert line.startswith("error: no Kubernetes credentials: not running in a pod")
    assert f"no kubeconfig at {tmp_path}/home/.kube/config" in line
    assert "set KUBECONFIG or STICKYIP_KUBECONFIG" in line


def test_scheduler_with_a_kubeconfig_path_that_does_not_exist(tmp_path: Path) -> None:
    proc = run(["scheduler"], tmp_path, STICKYIP_KUBECONFIG=str(tmp_path / "nope"))
    assert one_error_line(proc) == (f"error: kubeconfig {tmp_path}/nope (STICKYIP_KUBECONFIG) "
                                    "does not exist or is not a file")
    assert proc.returncode == 1


def test_scheduler_with_a_kubeconfig_that_is_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "config"
    bad.write_text("clusters: [\n  - name: a\n bad")
    proc = run(["scheduler"], tmp_path, KUBECONFIG=str(bad))
    line = one_error_line(proc)
    assert line.startswith(f"error: kubeconfig {bad} is not valid YAML (line 2, column 3): ")


def test_scheduler_with_an_api_server_that_does_not_answer(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = run(["scheduler"], tmp_path, STICKYIP_KUBE_HOST=url,
               STICKYIP_KUBE_STARTUP_TIMEOUT="1")
    assert one_error_line(proc) == (f"error: the Kubernetes API server at {url} did not "
                                    "answer within 1s: connection refused")
    assert proc.returncode == 1
    assert "plain HTTP" in proc.stderr, "the http:// stand-in URL is announced"


def test_webhook_refuses_a_kube_setting_given_but_unusable(tmp_path: Path) -> None:
    """Without any credentials the webhook starts (scale checks off, with a warning);
    a configuration that was given but does not work is an error, not that fallback."""
    proc = run(["webhook", "--cert", "c.pem", "--key", "k.pem"], tmp_path,
               STICKYIP_KUBE_HOST="api.internal:6443")
    assert "is not an API server URL: use http://HOST:PORT" in one_error_line(proc)


@pytest.mark.parametrize(("args", "env", "says"), [
    (["webhook", "--port", "70000", "--cert", "c", "--key", "k"], {},
     "error: invalid port (WebhookSettings): Input should be less than or equal to 65535, "
     "got 70000"),
    (["scheduler"], {"STICKYIP_SCHEDULER_GC_PERIOD": "hourly"},
     "error: invalid gc_period (SchedulerSettings): "),
    (["scheduler"], {"STICKYIP_KUBE_QPS_TIMEOUT": "soon"},
     "error: invalid kube_qps_timeout (KubeSettings): "),
])
def test_a_bad_value_is_one_line(tmp_path: Path, args: list[str], says: str,
                                env: dict[str, str]) -> None:
    proc = run(args, tmp_path, **env)
    assert one_error_line(proc).startswith(says)
    assert proc.returncode == 2


def test_a_bad_log_level_is_refused_by_the_parser(tmp_path: Path) -> None:
    proc = run(["--log-level", "bogus", "pool", "list"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument --log-level: invalid choice: 'bogus'" in proc.stderr
