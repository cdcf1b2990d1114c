"""Errors of the scheduler: one root, leaves that say what happened."""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every scheduler error."""


class InvalidAnnotation(SchedulerError):
    """A ``stickyip.io/*`` annotation or a Kubernetes quantity on a pod is malformed."""


class KubeUnavailable(SchedulerError):
    """The Kubernetes API cannot be reached or answered with a server error."""


class Conflict(SchedulerError):
    """The API refused a write because the object changed (HTTP 409)."""


class NotFound(SchedulerError):
    """The object does not exist (HTTP 404)."""


class NotLeader(SchedulerError):
    """This replica does not hold the leader Lease, so it must not bind."""
