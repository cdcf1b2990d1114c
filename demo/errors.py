"""Errors of the demo: one root, leaves saying what failed."""

from __future__ import annotations


class DemoError(Exception):
    """Root of every demo failure."""


class ComponentFailed(DemoError):
    """A component process did not start or died."""


class StepTimeout(DemoError):
    """A story step did not reach its expected state in time."""


class InvariantBroken(DemoError):
    """What the story promises (same address, new epoch, ...) did not hold."""
