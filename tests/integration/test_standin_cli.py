"""``python -m kubestandin`` serves the stand-in standalone (the demo's way) and exits on
SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from kubernetes import client

from kubestandin import objects
from plumbing.kube.client import KubeSettings, api_client

ROOT = Path(__file__).resolve().parents[2]


def test_standalone_server_prints_its_url_and_serves() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kubestandin", "--port", "0",
                             "--auto-ready"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        ac = api_client(KubeSettings(kube_host=url))
        v1 = client.CoreV1Api(ac)
        v1.create_node(objects.node("n1"))
        client.AppsV1Api(ac).create_namespaced_stateful_set(
            "default", objects.statefulset("web", replicas=1))
        assert [n.metadata.name for n in v1.list_node().items] == ["n1"]
        assert client.VersionApi(ac).get_code().git_version.endswith("standin")
        ac.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
