"""Fixtures of the integration tests that talk to the Kubernetes API stand-in through
the official client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from kubestandin import KubeStandInThread
from plumbing.kube.client import KubeSettings, api_client


@pytest.fixture
def standin() -> Iterator[KubeStandInThread]:
    """The stand-in on loopback, without its StatefulSet controller (a test module that
    needs other options overrides this fixture)."""
    with KubeStandInThread(statefulset_controller=False) as api:
        yield api


@pytest.fixture
def kube(standin: KubeStandInThread) -> Iterator[client.ApiClient]:
    """An official API client on :func:`standin`."""
    ac = api_client(KubeSettings(kube_host=standin.url))
    yield ac
    ac.close()
