"""Errors of the scheduler: one root, leaves that say what happened. Failures of the
Kubernetes API are ``plumbing.kube.errors`` (``KubeError`` and its leaves)."""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every scheduler error."""


class InvalidAnnotation(SchedulerError):
    """A ``stickyip.io/*`` annotation or a Kubernetes quantity on a pod is malformed."""


class NotLeader(SchedulerError):
    """This replica does not hold the leader Lease, so it must not bind."""
