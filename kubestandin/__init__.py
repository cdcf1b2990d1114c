"""A Kubernetes API stand-in for stickyip's tests and demo — a TEST DOUBLE, not product code.

It speaks kube-apiserver's REST and watch protocol on loopback so the official
``kubernetes`` client runs unmodified against it (see docs/standin.md)."""

from kubestandin import objects
from kubestandin.admission import WebhookTarget
from kubestandin.errors import StandInError
from kubestandin.standin import KubeStandIn, KubeStandInThread

__all__ = ["KubeStandIn", "KubeStandInThread", "StandInError", "WebhookTarget", "objects"]
